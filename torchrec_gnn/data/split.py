"""Time split without label leakage: the graph only holds edges older than every example.

::

    time ──────────────────────────────────────────────────────────────────────►
    │ history (graph only)  │ train examples       │ val examples │ test examples │
    └───────────────────────┴──────────────────────┴──────────────┴───────────────┘
    graph = static edges + timed edges with time < t_train

Every example is at or after ``t_train`` and every timed graph edge is strictly before it, so
the interaction being predicted (or any later one) is never visible to the GNN.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from torchrec_gnn.data.dataset import GraphRecDataset, Interactions
from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.typing import EdgeList, edge_type_str

logger = logging.getLogger("torchrec_gnn.data")


@dataclass
class TimeSplit:
    """Examples split by time plus the graph built from the window before them.

    Args:
        dataset (GraphRecDataset): the source dataset (tasks, node types, features).
        graph (HeteroGraph): static edges and timed edges older than ``cutoffs["train"]``.
        train (Interactions): examples with ``cutoffs["train"] <= time < cutoffs["val"]``.
        val (Interactions): examples with ``cutoffs["val"] <= time < cutoffs["test"]``.
        test (Interactions): examples with ``time >= cutoffs["test"]``.
        cutoffs (Dict[str, int]): first timestamp of each split.
    """

    dataset: GraphRecDataset
    graph: HeteroGraph
    train: Interactions
    val: Interactions
    test: Interactions
    cutoffs: Dict[str, int]

    def split(self, name: str) -> Interactions:
        """The examples of split ``name`` (``"train"``, ``"val"`` or ``"test"``)."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"TimeSplit: split must be 'train', 'val' or 'test', got {name!r}")
        return getattr(self, name)

    def summary(self) -> str:
        rows = [f"TimeSplit of {self.dataset.name!r}: graph edges strictly before t={self.cutoffs['train']}"]
        for name in ("train", "val", "test"):
            ex = self.split(name)
            rows.append(f"  {name:<5} {len(ex):>10,} examples from t={self.cutoffs[name]}")
        return "\n".join(rows)


def time_split(
    dataset: GraphRecDataset,
    history_fraction: float = 0.0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    add_reverse: bool = True,
    graph: Optional[HeteroGraph] = None,
) -> TimeSplit:
    """Split ``dataset`` by example time and build its leak-free graph.

    Args:
        dataset (GraphRecDataset): examples and raw edges.
        history_fraction (float): share of the earliest examples used only as graph history
            (their interaction edges stay in the graph, they are not trained on). Use 0 when the
            dataset's timed edges already precede its examples (the synthetic data), > 0 when
            examples and edges come from the same log (MovieLens). Default 0.
        val_fraction (float): share of the latest examples, before the test ones, for
            validation. Default 0.1.
        test_fraction (float): share of the latest examples for testing. Default 0.1.
        add_reverse (bool): add reverse relations so messages flow both ways. Default True.
        graph (HeteroGraph, optional): this split's graph, already built (e.g. the copy another
            rank saved and this one memory-maps); skips building it again.

    Returns:
        TimeSplit: the three example splits and the graph.
    """
    fractions = {"history_fraction": history_fraction, "val_fraction": val_fraction, "test_fraction": test_fraction}
    for name, value in fractions.items():
        if not 0.0 <= value < 1.0:
            raise ValueError(f"time_split: {name} must be in [0, 1), got {value}")
    if history_fraction + val_fraction + test_fraction >= 1.0:
        raise ValueError(f"time_split: fractions {fractions} leave no training examples")
    examples = dataset.examples
    if len(examples) == 0:
        raise ValueError(f"time_split: dataset {dataset.name!r} has no examples")

    times = examples.timestamp.sort().values
    def quantile_time(q: float) -> int:
        return int(times[min(int(q * len(times)), len(times) - 1)])

    cutoffs = {
        "train": quantile_time(history_fraction) if history_fraction > 0 else int(times[0]),
        "val": quantile_time(1.0 - val_fraction - test_fraction),
        "test": quantile_time(1.0 - test_fraction),
    }
    t = examples.timestamp
    splits = {
        "train": (t >= cutoffs["train"]) & (t < cutoffs["val"]),
        "val": (t >= cutoffs["val"]) & (t < cutoffs["test"]),
        "test": t >= cutoffs["test"],
    }
    if graph is None:
        graph = graph_before(dataset, cutoffs["train"], add_reverse)
        _warn_if_no_interaction_edges(dataset, graph, cutoffs["train"], history_fraction)
    return TimeSplit(
        dataset=dataset,
        graph=graph,
        cutoffs=cutoffs,
        **{name: examples.subset(mask) for name, mask in splits.items()},
    )


def _warn_if_no_interaction_edges(dataset: GraphRecDataset, graph: HeteroGraph, cutoff: int, history_fraction: float) -> None:
    """Say loudly when no user-item edge is older than the first training example: the GNN then
    sees none of the interactions (typically examples and edges from one log, history_fraction 0)."""
    relations = [et for et in dataset.edges if (et[0], et[2]) == (dataset.user_type, dataset.item_type)]
    empty = [et for et in relations if dataset.edges[et].src.numel() and not graph.num_edges(et)]
    if empty and len(empty) == len(relations):
        logger.warning(
            "time_split: the graph holds no %s edge older than the first training example (t=%d); with "
            "history_fraction=%s the GNN never sees an interaction. When examples and edges come from the same "
            "log, set data.history_fraction > 0 (e.g. 0.3) so the earliest examples become graph history.",
            " / ".join(edge_type_str(et) for et in empty), cutoff, history_fraction,
        )


# Time given to static edges (no timestamp) in a streaming graph: older than any event, so
# temporal sampling always sees them.
STATIC_TIME = -(2**62)


def graph_before(dataset: GraphRecDataset, cutoff: int, add_reverse: bool = True) -> HeteroGraph:
    """The graph a model could have built at time ``cutoff``: static edges plus timed edges
    strictly older than it (what a two-stage refresh pre-trains and exports on)."""
    edges = {et: _edges_before(e, cutoff) for et, e in dataset.edges.items()}
    return HeteroGraph.from_edges(dataset.num_nodes, edges, add_reverse=add_reverse)


def streaming_graph(dataset: GraphRecDataset, add_reverse: bool = True) -> HeteroGraph:
    """Every edge of ``dataset``, those inside the labelled window included, each with a time
    (static edges at :data:`STATIC_TIME`), for temporal sampling: an example at time t then
    sees exactly the edges older than t (new videos' first watches, new follows)."""
    edges = {}
    for et, e in dataset.edges.items():
        time = e.time if e.time is not None else torch.full((e.src.numel(),), STATIC_TIME, dtype=torch.int64)
        edges[et] = EdgeList(src=e.src, dst=e.dst, time=time, weight=e.weight)
    return HeteroGraph.from_edges(dataset.num_nodes, edges, add_reverse=add_reverse)


def stream_periods(examples: Interactions, periods: int) -> List[Interactions]:
    """``examples`` in time order, cut into ``periods`` consecutive parts of (nearly) equal size.

    Raises:
        ValueError: ``periods`` < 1 or more periods than examples.
    """
    if not 1 <= periods <= len(examples):
        raise ValueError(f"stream_periods: periods must be in [1, {len(examples)}] (one example each at least), got {periods}")
    order = torch.sort(examples.timestamp, stable=True).indices
    return [examples.subset(part) for part in torch.tensor_split(order, periods)]


def _edges_before(edges: EdgeList, cutoff: int) -> EdgeList:
    if edges.time is None:
        return edges
    keep = edges.time < cutoff
    return EdgeList(
        src=edges.src[keep],
        dst=edges.dst[keep],
        time=edges.time[keep],
        weight=None if edges.weight is None else edges.weight[keep],
    )


def leaked_edges(split: TimeSplit) -> int:
    """Timed graph edges at or after the first training example (0 for a leak-free split)."""
    first = int(torch.cat([split.train.timestamp, split.val.timestamp, split.test.timestamp]).min())
    return sum(
        int((split.graph.csc(et).time >= first).sum())
        for et in split.graph.edge_types
        if split.graph.csc(et).time is not None
    )

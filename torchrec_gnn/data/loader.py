"""Turn examples + graph + sampler into GraphBatches, inside DataLoader workers.

Each item of :class:`GraphBatchDataset` is a whole batch: the DataLoader runs with
``batch_size=None`` and every worker builds complete :class:`GraphBatch` objects (slice the
examples, sample one deduplicated subgraph for the batch's users and items, gather ids and side
features). Randomness is keyed on ``(seed, epoch, batch number)``, so the batches do not depend
on how many workers built them or in which order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch.autograd.profiler import record_function
from torch.utils.data import DataLoader, Dataset, get_worker_info
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_gnn.data.batch import GraphBatch, GraphFeatures, RelationCSR, node_id_bags, pack_csr
from torchrec_gnn.data.dataset import Interactions
from torchrec_gnn.graph.degree import DegreeFeatures, degree_channels
from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.graph.sampler import NeighborSampler
from torchrec_gnn.typing import EdgeType, NodeType, edge_type_str


def _generator(*key: int) -> torch.Generator:
    """A torch.Generator seeded from an integer key (stable across processes)."""
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def find_link_relation(graph: HeteroGraph, user_type: NodeType, item_type: NodeType, name: Optional[str]) -> EdgeType:
    """The relation whose edges are predicted: ``name`` (``"src__rel__dst"``), else the largest
    user -> item one.

    Raises:
        ValueError: ``name`` is not a user -> item relation of the graph, or there is none.
    """
    candidates = {edge_type_str(et): et for et in graph.edge_types if et[0] == user_type and et[2] == item_type}
    if name is not None:
        if name not in candidates:
            raise ValueError(f"link relation: {name!r} is not a {user_type} -> {item_type} relation of the "
                             f"graph; candidates: {sorted(candidates)}")
        return candidates[name]
    if not candidates:
        raise ValueError(f"link relation: the graph has no {user_type} -> {item_type} relation to predict; "
                         f"relations: {graph.edge_types}")
    return max(candidates.values(), key=graph.num_edges)


@dataclass
class LinkTargets:
    """Edges every batch also learns to predict: the edge objective's edge-level sampling.

    Each epoch shuffles ``edges``; batch ``g`` takes the next ``per_batch`` of them (wrapping
    around), holds them out of its subgraph's message passing and pairs each with ``neg_ratio``
    negatives (:meth:`NeighborSampler.sample_from_edges`). The links land in the batch as
    ``link_index`` / ``link_label``.

    Args:
        edge_type (EdgeType): ``(user_type, rel, item_type)``, the relation of the edges.
        edges (Tensor): (2, E) int64 global ``[user; item]`` ids to draw the links from.
        per_batch (int): links per batch (P).
        neg_ratio (float): negatives per link. Default 1.
    """

    edge_type: EdgeType
    edges: torch.Tensor
    per_batch: int
    neg_ratio: float = 1.0

    def __post_init__(self) -> None:
        if self.edges.dim() != 2 or self.edges.shape[0] != 2 or self.edges.shape[1] == 0:
            raise ValueError(f"LinkTargets: edges of {self.edge_type} must be a non-empty (2, E) tensor, "
                             f"got shape {tuple(self.edges.shape)}")
        if self.per_batch <= 0:
            raise ValueError(f"LinkTargets: per_batch must be positive, got {self.per_batch}")

    @classmethod
    def from_graph(
        cls, graph: HeteroGraph, user_type: NodeType, item_type: NodeType, relation: Optional[str],
        per_batch: int, neg_ratio: float = 1.0, before: Optional[int] = None,
    ) -> "LinkTargets":
        """Every edge of ``relation`` (default: the largest user -> item one) of ``graph``, or
        only those strictly older than ``before`` (a streaming graph also holds later edges)."""
        edge_type = find_link_relation(graph, user_type, item_type, relation)
        edges = graph.edge_index(edge_type)
        time = graph.csc(edge_type).time
        if before is not None and time is not None:
            edges = edges[:, torch.from_numpy(np.asarray(time) < before)]
        return cls(edge_type, edges, per_batch, neg_ratio)

    @property
    def num_edges(self) -> int:
        return int(self.edges.shape[1])


@dataclass(frozen=True)
class BatchSchema:
    """What every GraphBatch of a job holds, in the order the model expects.

    Args:
        user_type (str): node type of the examples' users.
        item_type (str): node type of the examples' items.
        node_types (Sequence[str]): keys of ``node_ids``, in the order of the node tables
            (every type of the graph, even when a batch samples none of it).
        sparse_names (Sequence[str]): keys of ``sparse_features``, in ranker order.
    """

    user_type: NodeType
    item_type: NodeType
    node_types: Sequence[NodeType]
    sparse_names: Sequence[str] = ()


@dataclass(frozen=True)
class BatchPlan:
    """Which examples make batch ``i`` of this rank in an epoch: the batch-index sampler of
    :class:`GraphBatchDataset` (as ``DistributedSampler`` is for a map-style dataset).

    Args:
        batch_size (int): B, examples per batch.
        shuffle (bool): reshuffle every epoch (``GraphBatchDataset.set_epoch``). Default False.
        batch_by_time (bool): with ``shuffle``, each batch keeps consecutive examples (give them in
            time order) and the shuffle permutes whole batches, so a batch spans a short time and
            temporal sampling (the graph before its earliest example) loses little. Default False.
        drop_last (bool): drop the last partial batch. Default False.
        seed (int): seed of the shuffling and of the sampler's random draws. Default 0.
        rank (int): this process's rank; batches ``rank, rank + world_size, ...`` are its own.
        world_size (int): number of ranks. Every rank gets the same number of batches (up to
            ``world_size - 1`` trailing batches are left out), so collectives never hang.
    """

    batch_size: int
    shuffle: bool = False
    batch_by_time: bool = False
    drop_last: bool = False
    seed: int = 0
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.batch_size <= 0:
            raise ValueError(f"GraphBatchDataset: batch_size must be positive, got {self.batch_size}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"GraphBatchDataset: rank {self.rank} outside world_size {self.world_size}")

    def num_batches(self, count: int, size: int, what: str) -> int:
        """Batches per rank for ``count`` items (``what``) in batches of ``size``."""
        total = count // size if self.drop_last else -(-count // size)
        if total // self.world_size == 0:
            raise ValueError(
                f"GraphBatchDataset: {count} {what} make {total} batches of {size}, "
                f"fewer than world_size={self.world_size} ranks; lower the batch size or add data"
            )
        return total // self.world_size

    def order(self, count: int, epoch: int) -> torch.Tensor:
        """(count,) the example order of ``epoch``."""
        generator = _generator(self.seed, epoch)
        if not self.shuffle:
            return torch.arange(count)
        if self.batch_by_time:  # whole batches of consecutive examples in shuffled order, a short one last
            full = count // self.batch_size
            blocks = torch.randperm(full, generator=generator)[:, None] * self.batch_size + torch.arange(self.batch_size)
            return torch.cat([blocks.flatten(), torch.arange(full * self.batch_size, count)])
        return torch.randperm(count, generator=generator)


class GraphBatchBuilder:
    """The collator: samples one batch's subgraph and assembles its :class:`GraphBatch` (what
    PyG's ``NodeLoader`` does with a sampler's output).

    Args:
        sampler (NeighborSampler): samples each batch's subgraph.
        schema (BatchSchema): node and feature keys of the batches.
        node_features (Dict[str, Tensor], optional): (num_nodes[t], F_t) side features to
            gather for the sampled nodes.
        degree (DegreeFeatures, optional): append each sampled node's degree columns to its
            side features (:mod:`torchrec_gnn.graph.degree`), counted before the batch's time
            under temporal sampling.
        links (LinkTargets, optional): the relation (and negatives per link) of the links a
            batch also predicts (the edge objective, or link-prediction pre-training).
        csr (bool): also build each relation's CSR arrays and their transposes
            (:class:`~torchrec_gnn.data.batch.RelationCSR`), for a GNN that aggregates by sparse
            products (``HeteroGNN.reads_csr``): the workers then do what its step would. Default False.
    """

    def __init__(self, sampler: NeighborSampler, schema: BatchSchema,
                 node_features: Optional[Dict[NodeType, torch.Tensor]] = None, degree: Optional[DegreeFeatures] = None,
                 links: Optional[LinkTargets] = None, csr: bool = False) -> None:
        graph_types = list(sampler.graph.node_types)
        if sorted(schema.node_types) != sorted(graph_types) or len(set(schema.node_types)) != len(schema.node_types):
            raise ValueError(
                f"GraphBatchDataset: node_types {list(schema.node_types)} must list every node type of the graph "
                f"once, in the order of the node tables; the graph has {graph_types}"
            )
        for t in (schema.user_type, schema.item_type):
            if t not in schema.node_types:
                raise ValueError(f"GraphBatchDataset: node type {t!r} is not in node_types {list(schema.node_types)}")
        if links is not None and (links.edge_type[0], links.edge_type[2]) != (schema.user_type, schema.item_type):
            raise ValueError(f"GraphBatchDataset: links of {links.edge_type} must go from the user type "
                             f"{schema.user_type!r} to the item type {schema.item_type!r}")
        self.sampler, self.schema, self.degree, self.links, self.csr = sampler, schema, degree, links, csr
        self.node_features = dict(node_features or {})

    def __call__(self, ex: Interactions, generator: torch.Generator, links: Optional[torch.Tensor] = None) -> GraphBatch:
        """Sample the subgraph of the examples ``ex`` (and of the (2, P) ``links``, held out of
        it) and assemble their :class:`GraphBatch`."""
        schema, b = self.schema, len(ex)
        user_type, item_type = schema.user_type, schema.item_type
        same_type = user_type == item_type
        seeds = {user_type: torch.cat([ex.user, ex.item])} if same_type else {user_type: ex.user, item_type: ex.item}
        seed_time = link_time = earliest = None
        if self.sampler.temporal:
            # One subgraph serves the whole batch and a GNN mixes it across examples, so every
            # seed gets the batch's earliest time: no example can see an edge from its future
            # through another example's seed. Time-ordered batches (shuffle=False) lose least.
            earliest = int(ex.timestamp.min())
            seed_time = {t: torch.full_like(s, earliest) for t, s in seeds.items()}
            if links is not None:
                link_time = torch.full((links.shape[1],), earliest, dtype=torch.int64)
        link_index, link_label = torch.empty(2, 0, dtype=torch.int64), torch.empty(0)
        with record_function("## sample ##"):
            if links is None:
                out = self.sampler.sample(seeds, seed_time=seed_time, generator=generator)
            else:
                sampled = self.sampler.sample_from_edges(
                    self.links.edge_type, links, self.links.neg_ratio, node_seeds=seeds, seed_time=seed_time,
                    edge_label_time=link_time, generator=generator,
                )
                out, link_index, link_label = sampled.subgraph, sampled.edge_label_index, sampled.edge_label
        if same_type:
            user_index, item_index = out.seed_index[user_type][:b], out.seed_index[user_type][b : 2 * b]
        else:
            user_index, item_index = out.seed_index[user_type][:b], out.seed_index[item_type][:b]
        empty = torch.empty(0, dtype=torch.int64)
        sparse_names = list(schema.sparse_names)
        sparse_features = KeyedJaggedTensor(
            keys=sparse_names,
            values=torch.cat([ex.sparse[k] for k in sparse_names]) if sparse_names else empty,
            lengths=torch.ones(len(sparse_names) * b, dtype=torch.int32),
            stride=b,
        )
        missing = torch.isnan(ex.labels)
        hops = len(next(iter(out.num_sampled_nodes.values()), []))
        edge_index = out.edge_index_dict
        csr: Dict[EdgeType, RelationCSR] = {}
        if self.csr:
            with record_function("## csr ##"):
                csr = pack_csr({et: RelationCSR.from_sample(edges, out.num_sampled_edges[et], out.num_sampled_nodes[et[0]],
                                                            out.num_sampled_nodes[et[2]]) for et, edges in edge_index.items()})
        return GraphBatch(
            dense_features=ex.dense,
            sparse_features=sparse_features,
            labels=ex.labels.masked_fill(missing, 0.0),
            label_mask=~missing,
            graph_features=GraphFeatures(
                node_ids=node_id_bags(schema.node_types, [out.node.get(t, empty) for t in schema.node_types]),
                edge_index=edge_index,
                user_index=user_index,
                item_index=item_index,
                num_sampled_nodes={t: list(out.num_sampled_nodes.get(t, [0] * hops)) for t in schema.node_types},
                num_sampled_edges={et: list(c) for et, c in out.num_sampled_edges.items()},
                node_features=self._node_features(out.node, earliest),
                link_index=link_index,
                link_label=link_label,
                csr=csr,
            ),
        )

    def _node_features(self, nodes: Dict[NodeType, torch.Tensor], before: Optional[int]) -> Dict[NodeType, torch.Tensor]:
        """(N_t, F_t [+ R_t]) side features of the sampled ``nodes``, with their degree columns
        (counted before ``before`` when given) if :attr:`degree` is set."""
        empty = torch.empty(0, dtype=torch.int64)
        features = {t: x[nodes.get(t, empty)] for t, x in self.node_features.items()}
        if self.degree is not None:
            for t in degree_channels(self.sampler.graph):
                columns = self.degree(self.sampler.graph, t, nodes.get(t, empty), before)
                features[t] = torch.cat([features[t], columns], dim=1) if t in features else columns
        return features


class GraphBatchDataset(Dataset):
    """Map-style dataset whose item ``i`` is the ``i``-th :class:`GraphBatch` of this rank:
    the ``plan`` picks the batch's examples (and links), the ``builder`` samples and assembles it.

    Args:
        examples (Interactions): the examples to serve (one split).
        builder (GraphBatchBuilder): samples and assembles a batch; with ``builder.links`` and no
            examples at all, the links alone make the batches (``per_batch`` each).
        plan (BatchPlan): batch size, shuffling, ranks.

    Example::

        schema = BatchSchema("user", "video", graph.node_types, ["user_id", "video_id"])
        data = GraphBatchDataset(split.train, GraphBatchBuilder(NeighborSampler(graph, [10, 5]), schema),
                                 BatchPlan(batch_size=1024, shuffle=True))
        for batch in make_dataloader(data, num_workers=2): ...
    """

    def __init__(self, examples: Interactions, builder: GraphBatchBuilder, plan: BatchPlan) -> None:
        missing = [name for name in builder.schema.sparse_names if name not in examples.sparse]
        if missing:
            raise ValueError(
                f"GraphBatchDataset: sparse features {missing} are not in the examples "
                f"(have {sorted(examples.sparse)})"
            )
        self.examples, self.builder, self.plan = examples, builder, plan
        self.epoch = 0
        self._order: Optional[torch.Tensor] = None
        self._link_order: Optional[torch.Tensor] = None
        if len(examples) == 0 and self.links is not None:
            self.num_batches = plan.num_batches(self.links.num_edges, self.links.per_batch, "links")
        else:
            self.num_batches = plan.num_batches(len(examples), plan.batch_size, "examples")

    @property
    def sampler(self) -> NeighborSampler:
        return self.builder.sampler

    @property
    def links(self) -> Optional[LinkTargets]:
        """The builder's links (the batches' share of them is this dataset's to pick)."""
        return self.builder.links

    @property
    def seed(self) -> int:
        return self.plan.seed

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of ``epoch`` (call before iterating, as with DistributedSampler)."""
        self.epoch = epoch
        self._order = None
        self._link_order = None

    def __len__(self) -> int:
        return self.num_batches

    def _batch_links(self, global_index: int) -> Optional[torch.Tensor]:
        """(2, P) global ``[user; item]`` links of batch ``global_index`` (None without links)."""
        if self.links is None:
            return None
        count = self.links.num_edges
        if self._link_order is None:
            shuffled = self.plan.shuffle or len(self.examples) > 0  # links ride along shuffled example batches
            generator = _generator(self.plan.seed, self.epoch, 2)
            self._link_order = torch.randperm(count, generator=generator) if shuffled else torch.arange(count)
        start = global_index * self.links.per_batch
        end = start + self.links.per_batch
        if len(self.examples) == 0:  # the links make the batches: the last one ends with them
            end = min(end, count)
        return self.links.edges[:, self._link_order[torch.arange(start, end) % count]]

    def __getitem__(self, index: int) -> GraphBatch:
        if not 0 <= index < self.num_batches:
            raise IndexError(f"GraphBatchDataset: batch {index} outside [0, {self.num_batches})")
        plan = self.plan
        global_index = index * plan.world_size + plan.rank
        if self._order is None:
            self._order = plan.order(len(self.examples), self.epoch)
        rows = self._order[global_index * plan.batch_size : (global_index + 1) * plan.batch_size]
        generator = _generator(plan.seed, self.epoch, global_index, 1)
        return self.builder(self.examples.subset(rows), generator, self._batch_links(global_index))


def pad_for_ranks(examples: Interactions, batch_size: int, world_size: int) -> Interactions:
    """Pad ``examples`` to whole batches on every rank, for evaluation that covers every row.

    Padding rows repeat the first examples with every label missing (NaN), so metrics, which
    skip missing labels, are exactly those of ``examples``.

    Args:
        examples (Interactions): N examples.
        batch_size (int): B per rank.
        world_size (int): ranks.

    Returns:
        Interactions: ceil(N / (B * world_size)) * B * world_size rows, the first N unchanged.
    """
    per_round = batch_size * world_size
    padded = -(-len(examples) // per_round) * per_round
    if padded == len(examples):
        return examples
    filler = examples.subset(torch.arange(padded - len(examples)) % len(examples))
    filler.labels = torch.full_like(filler.labels, float("nan"))
    return Interactions.concat([examples, filler])


def _worker_init(_: int) -> None:
    # Each worker samples single-threaded: the workers are the parallelism.
    torch.set_num_threads(1)
    info = get_worker_info()
    if info is not None:
        info.dataset.sampler.num_threads = 1


def make_dataloader(
    dataset: GraphBatchDataset,
    num_workers: int = 2,
    pin_memory: bool = False,
    prefetch_factor: int = 4,
    start: int = 0,
) -> DataLoader:
    """A DataLoader that yields the dataset's GraphBatches (``batch_size=None``).

    Args:
        dataset (GraphBatchDataset): the batches.
        num_workers (int): worker processes building batches (0 = in the main process).
        pin_memory (bool): pin batches for fast host-to-GPU copies (use on CUDA).
        prefetch_factor (int): batches each worker keeps ready.
        start (int): first batch of the epoch to yield (resuming mid-epoch). Default 0.
    """
    kwargs: Dict[str, object] = {}
    if num_workers > 0:
        kwargs = {"prefetch_factor": prefetch_factor, "worker_init_fn": _worker_init, "persistent_workers": False}
    # Batches draw from their own (seed, epoch, batch) generators; this one only keeps the
    # DataLoader from consuming the global RNG that dropout and GFAE masking use.
    return DataLoader(
        dataset, batch_size=None, sampler=range(start, len(dataset)), num_workers=num_workers,
        pin_memory=pin_memory, generator=torch.Generator().manual_seed(dataset.seed), **kwargs,
    )


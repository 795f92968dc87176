"""Containers shared by every dataset: tasks, per-impression examples, timestamped edges.

Notation (used across the package): N examples, B examples in a batch, T tasks,
F dense features, E edges of one relation.

A dataset is two things that share node ids:

* ``examples`` (:class:`Interactions`): one row per impression ``(user, item, time)`` with
  dense/sparse ranker features and one label per task (``NaN`` = label missing);
* ``edges`` (``{(src_type, relation, dst_type): EdgeList}``): the heterogeneous graph's raw
  edges. Edges with a ``time`` are events (watches, purchases, ...) and become visible to the
  GNN only if they precede the examples they serve (see :func:`torchrec_gnn.data.split.time_split`);
  edges without one (``time=None``) are static (authored-by, knowledge-graph triples).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Sequence, Union

import numpy as np

import torch

from torchrec_gnn.ids import check_ids
from torchrec_gnn.typing import EdgeList, EdgeType, NodeType

logger = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, torch.Tensor]

TASK_KINDS = ("binary", "regression")


@dataclass(frozen=True)
class TaskSpec:
    """One prediction task of the ranker.

    Args:
        name (str): label name, e.g. ``"click"`` or ``"stay_duration"``.
        kind (str): ``"binary"`` (BCE on a 0/1 label) or ``"regression"`` (real-valued label).
    """

    name: str
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(
                f"TaskSpec {self.name!r}: field 'kind' must be one of {TASK_KINDS}, got {self.kind!r}"
            )


@dataclass
class Interactions:
    """Per-impression examples, one row each.

    Args:
        user (Tensor): (N,) int64 node id of the user (node type ``user_type`` of the dataset).
        item (Tensor): (N,) int64 node id of the item (node type ``item_type``).
        timestamp (Tensor): (N,) int64 event time (any monotone unit, e.g. unix seconds).
        labels (Tensor): (N, T) float32, one column per task; ``NaN`` marks a missing label.
        dense (Tensor): (N, F) float32 dense ranker features (F may be 0).
        sparse (Dict[str, Tensor]): feature name -> (N,) int64 categorical id, each in
            ``[0, cardinality)`` of that feature.
    """

    user: torch.Tensor
    item: torch.Tensor
    timestamp: torch.Tensor
    labels: torch.Tensor
    dense: torch.Tensor
    sparse: Dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.user.numel()
        shapes = {
            "item": tuple(self.item.shape),
            "timestamp": tuple(self.timestamp.shape),
            "labels": tuple(self.labels.shape[:1]),
            "dense": tuple(self.dense.shape[:1]),
            **{f"sparse[{k!r}]": tuple(v.shape) for k, v in self.sparse.items()},
        }
        bad = {k: s for k, s in shapes.items() if s != (n,)}
        if bad or self.user.dim() != 1 or self.labels.dim() != 2 or self.dense.dim() != 2:
            raise ValueError(
                f"Interactions: every field needs N={n} rows (user (N,), labels (N, T), dense (N, F)); "
                f"mismatched fields: {bad or 'dimension counts'}"
            )

    def __len__(self) -> int:
        return self.user.numel()

    @staticmethod
    def from_arrays(
        user: ArrayLike, item: ArrayLike, timestamp: ArrayLike, labels: ArrayLike, dense: ArrayLike,
        sparse: Mapping[str, ArrayLike],
    ) -> "Interactions":
        """Build from numpy arrays or tensors: ids and times as int64, labels and dense as float32."""
        as_long = lambda x: torch.as_tensor(x).to(torch.int64)  # noqa: E731
        as_float = lambda x: torch.as_tensor(x).to(torch.float32)  # noqa: E731
        return Interactions(
            user=as_long(user), item=as_long(item), timestamp=as_long(timestamp),
            labels=as_float(labels), dense=as_float(dense), sparse={k: as_long(v) for k, v in sparse.items()},
        )

    @staticmethod
    def concat(parts: Sequence["Interactions"]) -> "Interactions":
        """Rows of ``parts`` one after the other (same sparse feature names in each)."""
        return Interactions(
            user=torch.cat([p.user for p in parts]),
            item=torch.cat([p.item for p in parts]),
            timestamp=torch.cat([p.timestamp for p in parts]),
            labels=torch.cat([p.labels for p in parts]),
            dense=torch.cat([p.dense for p in parts]),
            sparse={k: torch.cat([p.sparse[k] for p in parts]) for k in parts[0].sparse},
        )

    def subset(self, index: torch.Tensor) -> "Interactions":
        """Rows ``index`` (a bool mask or int64 positions) as a new :class:`Interactions`."""
        return Interactions(
            user=self.user[index],
            item=self.item[index],
            timestamp=self.timestamp[index],
            labels=self.labels[index],
            dense=self.dense[index],
            sparse={k: v[index] for k, v in self.sparse.items()},
        )


@dataclass
class GraphRecDataset:
    """A recommendation dataset with its heterogeneous graph.

    Args:
        name (str): short name (``"synthetic"``, ``"ml100k"``, ...).
        tasks (List[TaskSpec]): the T tasks, in label-column order.
        user_type (str): node type of ``examples.user``.
        item_type (str): node type of ``examples.item``.
        num_nodes (Dict[str, int]): node count per node type (ids are ``0..count-1``).
        examples (Interactions): all labelled impressions, any order.
        edges (Dict[EdgeType, EdgeList]): raw graph edges per relation ``(src, rel, dst)``.
        dense_names (List[str]): names of the F dense feature columns.
        sparse_cardinality (Dict[str, int]): number of ids of each sparse feature.
        node_features (Dict[str, Tensor]): optional dense side features per node type,
            (num_nodes[t], F_t) float32 (GFAE reconstruction targets).
    """

    name: str
    tasks: List[TaskSpec]
    user_type: str
    item_type: str
    num_nodes: Dict[NodeType, int]
    examples: Interactions
    edges: Dict[EdgeType, EdgeList]
    dense_names: List[str] = field(default_factory=list)
    sparse_cardinality: Dict[str, int] = field(default_factory=dict)
    node_features: Dict[NodeType, torch.Tensor] = field(default_factory=dict)

    @property
    def task_names(self) -> List[str]:
        return [t.name for t in self.tasks]

    def validate(self) -> None:
        """Check ids against ``num_nodes``/cardinalities and label kinds; raise naming the field."""
        ex = self.examples
        for field_name, ids, node_type in (("user", ex.user, self.user_type), ("item", ex.item, self.item_type)):
            check_ids(f"{self.name}: examples.{field_name}", ids, self.num_nodes.get(node_type, 0))
        if ex.labels.shape[1] != len(self.tasks):
            raise ValueError(
                f"{self.name}: examples.labels has {ex.labels.shape[1]} columns but {len(self.tasks)} tasks "
                f"{self.task_names}"
            )
        for name, ids in ex.sparse.items():
            if name not in self.sparse_cardinality:
                raise ValueError(f"{self.name}: sparse feature {name!r} has no entry in sparse_cardinality")
            check_ids(f"{self.name}: examples.sparse[{name!r}]", ids, self.sparse_cardinality[name])
        for t, task in enumerate(self.tasks):
            col = ex.labels[:, t]
            col = col[~torch.isnan(col)]
            if len(ex) and col.numel() == 0:  # legal (a data set without that column), never silent
                logger.warning("%s: task %r has no label in any of the %d examples (every value is missing): its "
                               "loss is 0 and its metrics NaN; fill its column or drop the task", self.name, task.name, len(ex))
            if task.kind == "binary" and col.numel() and not bool(((col == 0) | (col == 1)).all()):
                bad = col[(col != 0) & (col != 1)][0].item()
                raise ValueError(f"{self.name}: binary task {task.name!r} has label {bad} (expected 0 or 1)")
        for et, e in self.edges.items():
            src_t, _, dst_t = et
            for end, ids, t in (("src", e.src, src_t), ("dst", e.dst, dst_t)):
                if t not in self.num_nodes:
                    raise ValueError(f"{self.name}: relation {et} names node type {t!r}, not in {sorted(self.num_nodes)}")
                check_ids(f"{self.name}: edges[{et}].{end}", ids, self.num_nodes[t])

"""Node degrees as input features: the scaled ``log1p`` of how many neighbours a node has
per relation into it, counted in the graph as the batch sees it.

A mean-aggregating GNN cannot count (the mean of 3 neighbours and of 300 look alike), yet how
many users watched a video *so far* says much about it (its quality and reach), and on a graph
that grows with time it is the freshest signal there is. With temporal sampling the count
stops at the batch's time, like the sampled edges themselves, so a feature never reveals an
edge from an example's future.

Each column is ``log1p(degree)`` divided by ``log1p`` of the relation's largest in-degree in a
reference graph (the graph as the training window opens), so it starts in [0, 1] (it may pass 1
as a fresh graph grows). Scale matters: raw log degrees (up to 5-10) or standardised ones
(sparse relations put a few nodes 5-10 std out) made the default run's validation click AUC
0.007-0.013 worse, these columns left it where it was (one seed each; docs/RESULTS.md, "how much there is to win").
Columns follow ``graph.edge_types`` order, one per relation ending at the node type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional

import numpy as np
import torch

from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.typing import EdgeType, NodeType


def relations_into(graph: HeteroGraph, node_type: NodeType) -> List[EdgeType]:
    """The relations ending at ``node_type``, in ``graph.edge_types`` order."""
    return [et for et in graph.edge_types if et[2] == node_type]


def degree_channels(graph: HeteroGraph) -> Dict[NodeType, int]:
    """R_t, the degree columns of each node type that receives at least one relation."""
    counts = {t: len(relations_into(graph, t)) for t in graph.node_types}
    return {t: r for t, r in counts.items() if r}


def log_degree(graph: HeteroGraph, edge_type: EdgeType, nodes: np.ndarray, before: Optional[int]) -> np.ndarray:
    """(N,) float32 ``log1p`` in-degree of ``nodes`` in ``edge_type`` (edges older than
    ``before`` only, when given and the relation is timed)."""
    times = None if before is None else np.full(nodes.shape, before, dtype=np.int64)
    return np.log1p(graph.csc(edge_type).degree(nodes, times).astype(np.float32))


@dataclass
class DegreeFeatures:
    """Scaled ``log1p`` in-degree columns per relation.

    Args:
        scale (Dict[EdgeType, float]): ``log1p`` of each relation's largest in-degree in the
            reference graph (1 for a relation without edges there).

    Example::

        degrees = DegreeFeatures.fit(graph, before=t_train)
        x = degrees(graph, "video", nodes, before=batch_time)  # (N, R_video)
    """

    scale: Dict[EdgeType, float]

    @classmethod
    def fit(cls, graph: HeteroGraph, before: Optional[int] = None) -> "DegreeFeatures":
        """Scales from every destination node of ``graph``, counting edges older than
        ``before`` (the reference time; all edges when None)."""
        scale = {}
        for et in graph.edge_types:
            values = log_degree(graph, et, np.arange(graph.num_nodes[et[2]], dtype=np.int64), before)
            largest = float(values.max()) if values.size else 0.0
            scale[et] = largest if largest > 0 else 1.0
        return cls(scale)

    def __call__(
        self, graph: HeteroGraph, node_type: NodeType, nodes: Optional[torch.Tensor] = None, before: Optional[int] = None
    ) -> torch.Tensor:
        """(N, R_t) float32 columns of ``nodes`` (default every node of the type); with
        ``before``, a timed relation counts only edges older than it."""
        ids = np.arange(graph.num_nodes[node_type], dtype=np.int64) if nodes is None else nodes.numpy()
        columns = [log_degree(graph, et, ids, before) / self.scale[et] for et in relations_into(graph, node_type)]
        stacked = np.stack(columns, axis=1) if columns else np.zeros((ids.size, 0))
        return torch.from_numpy(stacked.astype(np.float32))

    def append(self, node_features: Mapping[NodeType, torch.Tensor], graph: HeteroGraph) -> Dict[NodeType, torch.Tensor]:
        """Every node's side features (N_t, F_t) with its degree columns appended (N_t, F_t + R_t),
        counted over every edge of ``graph`` (a full-graph pass: pre-training's export, the history)."""
        out = dict(node_features)
        for t in degree_channels(graph):
            columns = self(graph, t)
            out[t] = torch.cat([out[t], columns], dim=1) if t in out else columns
        return out

"""PyG's ``BaseSampler`` over the project's :class:`~torchrec_gnn.graph.sampler.NeighborSampler`.

:class:`PyGNeighborSampler` is what :class:`torchrec_gnn.pyg.NeighborLoader` and
:class:`torchrec_gnn.pyg.LinkNeighborLoader` hand to PyG's ``NodeLoader`` / ``LinkLoader``: it
speaks PyG's semantics where the project's own batches use different rules.

=========================  ===============================  ==================================
behaviour                  PyG API (this module)            project batches (``NeighborSampler``)
=========================  ===============================  ==================================
temporal rule              edges at or before the seed      edges strictly before the example
                           time (``time <= seed_time``)     (no label leaks into its features)
temporal sampling          always disjoint, as in PyG       one shared subgraph, each node
                                                            with the earliest time reaching it
repeated seeds             one row each (``x[:batch_size]``  one row per distinct node,
                           follows the input), the copies   ``seed_index`` maps positions
                           share one neighbourhood
``e_id``                   the edge's position in the       position in the CSC arrays
                           input ``edge_index``
parallel edges             kept (a multigraph)              collapsed (repeats weigh once)
=========================  ===============================  ==================================
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data, HeteroData
from torch_geometric.sampler import (
    BaseSampler,
    EdgeSamplerInput,
    HeteroSamplerOutput,
    NegativeSampling,
    NodeSamplerInput,
    NumNeighbors,
    SamplerOutput,
)
from torch_geometric.sampler.base import SubgraphType
from torch_geometric.sampler.neighbor_sampler import edge_sample, node_sample

from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.graph.sampler import NeighborSampler, SampledSubgraph
from torchrec_gnn.typing import EdgeList, EdgeType, NodeType

# A homogeneous ``Data`` is stored as one node type and one relation.
NODE: NodeType = "node"
EDGE: EdgeType = ("node", "to", "node")
SeedDict = Dict[NodeType, Tensor]
Output = Union[SamplerOutput, HeteroSamplerOutput]


class PyGNeighborSampler(BaseSampler):
    """A :class:`NeighborSampler` behind PyG's ``BaseSampler``, with PyG's semantics (see the
    module's table): build it with :meth:`from_data` as PyG's ``NeighborSampler`` is built.

    Args:
        sampler (NeighborSampler): the configured sampler; in temporal mode it must be
            ``disjoint``, as PyG's temporal sampling is.
        subgraph_type (str or SubgraphType): ``"directional"`` (the sampled edges), ``"bidirectional"``
            (each sampled edge also reversed, PyG's ``to_bidirectional``) or ``"induced"`` (every
            edge of the graph between sampled nodes; not with disjoint sampling, as in PyG).
        node_time (Dict[str, Tensor], optional): (N_t,) int64 node times of node-level temporal
            sampling: seeds without a given time take their own.
        homogeneous (bool): the graph came from a ``Data`` (one node type ``"node"``, one relation
            ``("node", "to", "node")``); outputs are then ``SamplerOutput``.

    Example::

        sampler = PyGNeighborSampler.from_data(data, num_neighbors=[10, 5])
        loader = NodeLoader(data, node_sampler=sampler, input_nodes=("paper", idx), batch_size=128)
    """

    def __init__(
        self,
        sampler: NeighborSampler,
        subgraph_type: Union[SubgraphType, str] = "directional",
        node_time: Optional[Dict[NodeType, Tensor]] = None,
        homogeneous: bool = False,
    ) -> None:
        if not isinstance(sampler, NeighborSampler):
            raise TypeError(f"PyGNeighborSampler: expected a NeighborSampler, got {type(sampler).__name__}")
        try:
            self.subgraph_type = SubgraphType(subgraph_type)
        except ValueError:
            raise ValueError(f"PyGNeighborSampler: subgraph_type must be one of "
                             f"{[t.value for t in SubgraphType]}, got {subgraph_type!r}") from None
        if sampler.temporal and not sampler.disjoint:
            raise ValueError("PyGNeighborSampler: temporal sampling is disjoint in PyG; build the NeighborSampler "
                             "with disjoint=True (or use PyGNeighborSampler.from_data)")
        if self.subgraph_type == SubgraphType.induced and sampler.disjoint:
            raise ValueError("PyGNeighborSampler: subgraph_type='induced' cannot be combined with disjoint or "
                             "temporal sampling (PyG does not support it either)")
        if homogeneous and (sampler.graph.node_types != [NODE] or sampler.graph.edge_types != [EDGE]):
            raise ValueError(f"PyGNeighborSampler(homogeneous=True) needs the graph of one node type {NODE!r} and "
                             f"one relation {EDGE}; got {sampler.graph.node_types}, {sampler.graph.edge_types}")
        self.sampler = sampler
        self.node_time = node_time
        self.homogeneous = homogeneous

    # ------------------------------------------------------------------ building
    @classmethod
    def from_data(
        cls,
        data: Union[Data, HeteroData],
        num_neighbors: Union[List[int], Dict[EdgeType, List[int]], NumNeighbors],
        subgraph_type: Union[SubgraphType, str] = "directional",
        replace: bool = False,
        disjoint: bool = False,
        temporal_strategy: str = "uniform",
        time_attr: Optional[str] = None,
        weight_attr: Optional[str] = None,
        num_threads: int = 1,
    ) -> "PyGNeighborSampler":
        """Index ``data``'s edges (parallel edges kept, input edge ids remembered) and build the
        sampler with PyG ``NeighborSampler``'s arguments.

        ``time_attr`` names an edge attribute (edge-level temporal sampling) or a node attribute
        (node-level: a neighbour is usable if its time is at or before the seed's); either one
        makes sampling temporal and disjoint. ``weight_attr`` names an edge attribute; edges of
        weight 0 are never drawn.
        """
        if isinstance(data, tuple):
            raise ValueError("torchrec_gnn.pyg: data given as (FeatureStore, GraphStore) is not supported; "
                             "pass a Data or HeteroData")
        if not isinstance(data, (Data, HeteroData)):
            raise TypeError(f"torchrec_gnn.pyg: data must be a Data or HeteroData, got {type(data).__name__}")
        homogeneous = isinstance(data, Data)
        graph, node_time = _index_graph(data, time_attr, weight_attr)
        temporal = node_time is not None or any(graph.csc(et).time is not None for et in graph.edge_types)
        if time_attr is not None and not temporal:
            raise ValueError(f"torchrec_gnn.pyg: time_attr {time_attr!r} is neither a node nor an edge attribute of data")
        if not isinstance(num_neighbors, NumNeighbors):
            num_neighbors = NumNeighbors(num_neighbors)
        fanouts = list(num_neighbors.get_values()) if homogeneous else num_neighbors.get_values(graph.edge_types)
        sampler = NeighborSampler(
            graph,
            fanouts if homogeneous else {et: list(f) for et, f in fanouts.items()},
            replace=replace,
            weighted=weight_attr is not None,
            temporal=temporal,
            temporal_strategy=temporal_strategy,
            num_threads=num_threads,
            disjoint=disjoint or temporal,
        )
        return cls(sampler, subgraph_type, node_time, homogeneous)

    # ------------------------------------------------------------------ BaseSampler
    @property
    def disjoint(self) -> bool:
        return self.sampler.disjoint

    def sample_from_nodes(self, inputs: NodeSamplerInput, **kwargs: Any) -> Output:
        """Sample around ``inputs.node``; PyG's ``SamplerOutput`` / ``HeteroSamplerOutput``."""
        if inputs.input_type is None and not self.homogeneous:
            raise ValueError(f"PyGNeighborSampler: the graph has node types {self.sampler.graph.node_types}; "
                             f"pass input_nodes=(node_type, ids) to the loader")
        return self._finish(node_sample(inputs, self._sample))

    def sample_from_edges(self, inputs: EdgeSamplerInput, neg_sampling: Optional[NegativeSampling] = None) -> Output:
        """Sample around the links ``inputs`` and ``neg_sampling``'s negatives (PyG's
        ``edge_sample``: binary or triplet metadata, time-aware when ``inputs.time`` is set)."""
        if inputs.input_type is None and not self.homogeneous:
            raise ValueError(f"PyGNeighborSampler: the graph has relations {self.sampler.graph.edge_types}; pass "
                             f"edge_label_index=(edge_type, index) to the loader")
        if inputs.time is not None and not self.sampler.temporal:
            raise ValueError("PyGNeighborSampler: edge_label_time needs temporal sampling; build the sampler "
                             "with time_attr")
        num_nodes: Union[int, Dict[NodeType, int]] = self.sampler.graph.num_nodes
        node_time: Union[Tensor, Dict[NodeType, Tensor], None] = self.node_time
        if self.homogeneous:
            num_nodes = num_nodes[NODE]
            node_time = None if node_time is None else node_time[NODE]
        return self._finish(edge_sample(inputs, self._sample, num_nodes, self.disjoint, node_time, neg_sampling))

    def _finish(self, out: Output) -> Output:
        if self.subgraph_type == SubgraphType.bidirectional:
            out = out.to_bidirectional()
        return out

    def _sample(self, seed: Union[Tensor, SeedDict], seed_time: Union[Tensor, SeedDict, None] = None) -> Output:
        """One sample around ``seed`` in PyG's output layout (``node_sample``'s and
        ``edge_sample``'s sampling function)."""
        seeds = {NODE: seed} if self.homogeneous else dict(seed)
        times = {NODE: seed_time} if self.homogeneous and seed_time is not None else seed_time
        if self.sampler.temporal:
            if times is None and self.node_time is not None:
                times = {t: self.node_time[t][ids] for t, ids in seeds.items()}
            if times is None:
                raise ValueError("PyGNeighborSampler: temporal sampling needs a time per seed: pass input_time "
                                 "(NeighborLoader) or edge_label_time (LinkNeighborLoader)")
            times = {t: torch.as_tensor(x).long() + 1 for t, x in times.items()}  # PyG: time <= seed time
        sub = self.sampler.sample(seeds, seed_time=times)
        if not self.disjoint:
            _one_row_per_seed(sub)
        if self.subgraph_type == SubgraphType.induced:
            _induce(sub, self.sampler.graph)
        edge = {}
        for et, positions in sub.edge.items():
            edge_id = self.sampler.graph.csc(et).edge_id
            edge[et] = positions if edge_id is None else torch.from_numpy(edge_id[positions.numpy()])
        induced = self.subgraph_type == SubgraphType.induced
        if self.homogeneous:
            return SamplerOutput(
                node=sub.node[NODE], row=sub.row[EDGE], col=sub.col[EDGE], edge=edge[EDGE],
                batch=sub.batch[NODE] if self.disjoint else None,
                num_sampled_nodes=sub.num_sampled_nodes[NODE],
                num_sampled_edges=None if induced else sub.num_sampled_edges[EDGE],
            )
        return HeteroSamplerOutput(
            node=sub.node, row=sub.row, col=sub.col, edge=edge,
            batch=sub.batch if self.disjoint else None,
            num_sampled_nodes=sub.num_sampled_nodes,
            num_sampled_edges=None if induced else sub.num_sampled_edges,
        )

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.sampler!r}, subgraph_type={self.subgraph_type.value!r})"


# ---------------------------------------------------------------------- helpers
def _index_graph(
    data: Union[Data, HeteroData], time_attr: Optional[str], weight_attr: Optional[str]
) -> Tuple[HeteroGraph, Optional[Dict[NodeType, Tensor]]]:
    """``data``'s topology as a :class:`HeteroGraph` (multigraph, with input edge ids) and its
    node times when ``time_attr`` is a node attribute (then each edge's time is its source's)."""
    if isinstance(data, Data):
        node_stores = {NODE: data}
        edge_stores = {EDGE: data}
        num_nodes = {NODE: int(data.num_nodes)}
        time_is_node = time_attr is not None and time_attr in data and data.is_node_attr(time_attr)
        time_is_edge = time_attr is not None and time_attr in data and data.is_edge_attr(time_attr)
    else:
        node_stores = {t: data[t] for t in data.node_types}
        edge_stores = {et: data[et] for et in data.edge_types}
        num_nodes = {t: int(data[t].num_nodes) for t in data.node_types}
        time_is_node = time_attr is not None and any(time_attr in s for s in node_stores.values())
        time_is_edge = time_attr is not None and any(time_attr in s for s in edge_stores.values())
    if time_is_node and time_is_edge:
        raise ValueError(f"torchrec_gnn.pyg: time_attr {time_attr!r} is both a node and an edge attribute; "
                         f"temporal sampling uses one or the other")
    node_time = None
    if time_is_node:
        node_time = {t: _integer_time(s[time_attr], f"data[{t!r}].{time_attr}")
                     for t, s in node_stores.items() if time_attr in s}
    edges = {}
    for et, store in edge_stores.items():
        if "edge_index" not in store:
            raise ValueError(f"torchrec_gnn.pyg: data[{et}] has no edge_index (a SparseTensor adj_t is not supported); "
                             f"give every relation an edge_index")
        edge_index = store.edge_index
        time = None
        if time_is_edge and time_attr in store:
            time = _integer_time(store[time_attr], f"data[{et}].{time_attr}")
        elif node_time is not None:
            # Node-level time: a neighbour is usable once it exists; a source type without times
            # is always usable.
            src_time = node_time.get(et[0])
            time = (torch.full((edge_index.shape[1],), torch.iinfo(torch.int64).min) if src_time is None
                    else src_time[edge_index[0]])
        weight = None
        if weight_attr is not None and weight_attr in store:
            weight = store[weight_attr].float()
        edges[et] = EdgeList(src=edge_index[0], dst=edge_index[1], time=time, weight=weight)
    graph = HeteroGraph.from_edges(num_nodes, edges, keep_duplicates=True, edge_ids=True)
    return graph, node_time


def _integer_time(values: Tensor, where: str) -> Tensor:
    if values.is_floating_point() or values.dtype == torch.bool or values.dim() != 1:
        raise ValueError(f"torchrec_gnn.pyg: {where} must be a 1-D integer tensor of times, got dtype "
                         f"{values.dtype} shape {tuple(values.shape)}")
    return values.long()


def _one_row_per_seed(sub: SampledSubgraph) -> None:
    """Give every input seed position its own row, in input order, as PyG does (in place).

    A seed given ``m`` times becomes ``m`` rows with the same neighbourhood: its hop-1 edges are
    copied for each repeat (right after the hop-1 block, so hop order holds); every other row
    moves down by the number of repeats.
    """
    for t, index in sub.seed_index.items():
        distinct = sub.num_sampled_nodes[t][0]
        if index.numel() == distinct:
            continue  # no repeats: rows already follow the input
        _, first = np.unique(index.numpy(), return_index=True)  # first input position of each row
        repeats = int(index.numel()) - distinct
        new_row = torch.cat([torch.from_numpy(first), torch.arange(distinct, sub.node[t].numel()) + repeats])
        copy_positions = torch.from_numpy(np.setdiff1d(np.arange(index.numel()), first))
        sub.node[t] = torch.cat([sub.node[t][index], sub.node[t][distinct:]])
        for et in sub.row:
            if et[0] == t:
                sub.row[et] = new_row[sub.row[et]]
            if et[2] != t:
                continue
            hop1 = sub.num_sampled_edges[et][0] if sub.num_sampled_edges[et] else 0
            col = sub.col[et][:hop1]
            order = torch.argsort(col, stable=True)
            counts = torch.bincount(col, minlength=distinct)
            starts = torch.cumsum(counts, 0) - counts
            copied_of = index[copy_positions]  # the row each repeat copies
            per_copy = counts[copied_of]
            within = torch.arange(int(per_copy.sum())) - torch.repeat_interleave(torch.cumsum(per_copy, 0) - per_copy, per_copy)
            source_edge = order[torch.repeat_interleave(starts[copied_of], per_copy) + within]
            new_col = torch.repeat_interleave(copy_positions, per_copy)
            sub.row[et] = torch.cat([sub.row[et][:hop1], sub.row[et][source_edge], sub.row[et][hop1:]])
            sub.col[et] = torch.cat([new_row[sub.col[et][:hop1]], new_col, new_row[sub.col[et][hop1:]]])
            sub.edge[et] = torch.cat([sub.edge[et][:hop1], sub.edge[et][source_edge], sub.edge[et][hop1:]])
            if sub.num_sampled_edges[et]:
                sub.num_sampled_edges[et][0] += int(new_col.numel())
        sub.num_sampled_nodes[t][0] = int(index.numel())
        sub.seed_index[t] = torch.arange(index.numel())


def _induce(sub: SampledSubgraph, graph: HeteroGraph) -> None:
    """Replace ``sub``'s edges by every edge of ``graph`` between its nodes (in place), ordered
    by destination row, each destination's edges in CSC order."""
    for et in sub.row:
        src_t, _, dst_t = et
        index = graph.csc(et)
        dst = sub.node[dst_t].numpy()
        start, degree = index.colptr[dst], index.colptr[dst + 1] - index.colptr[dst]
        col = np.repeat(np.arange(dst.shape[0]), degree)
        offsets = np.arange(col.shape[0]) - np.repeat(np.cumsum(degree) - degree, degree)
        position = np.repeat(start, degree) + offsets
        source = np.asarray(index.row[position], dtype=np.int64)
        order = np.argsort(sub.node[src_t].numpy(), kind="stable")
        ids = sub.node[src_t].numpy()[order]
        slot = np.minimum(np.searchsorted(ids, source), max(ids.shape[0] - 1, 0))
        found = (ids[slot] == source) if ids.shape[0] else np.zeros(source.shape[0], dtype=bool)
        sub.row[et] = torch.from_numpy(order[slot[found]].astype(np.int64))
        sub.col[et] = torch.from_numpy(col[found].astype(np.int64))
        sub.edge[et] = torch.from_numpy(position[found].astype(np.int64))

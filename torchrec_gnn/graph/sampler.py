"""Multi-hop heterogeneous neighbour sampling (GraphSAGE-style) over a :class:`HeteroGraph`.

:class:`NeighborSampler` turns the seed nodes of a batch into one deduplicated subgraph,
:class:`SampledSubgraph`, in PyG's ``NeighborLoader`` layout (``row`` = source, ``col`` =
destination, local ids, seeds first, per-hop counts for ``trim_to_layer``).
:mod:`torchrec_gnn.pyg` puts it behind PyG's ``NeighborLoader`` and ``LinkNeighborLoader`` for
PyG users who have neither pyg-lib nor torch-sparse.

The work happens in numba kernels (:mod:`torchrec_gnn.graph._kernels`): one pass per hop and
relation, Floyd's algorithm when the degree exceeds the fanout, and a dense global -> local map
per node type that is allocated once per sampler and reset after each batch by visiting only the
entries the batch touched. ``benchmarks/bench_sampler.py`` compares it with PyG + torch-sparse.

Notation: N_t sampled nodes of type t, E_r sampled edges of relation r, S_t seeds of type t.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numba
import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from torchrec_gnn.graph import _kernels
from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.typing import TEMPORAL_STRATEGIES, EdgeType, NodeType, edge_type_str, is_fanout

NumNeighbors = Union[Sequence[int], Mapping[EdgeType, Sequence[int]]]
Chunk = Tuple[np.ndarray, np.ndarray, np.ndarray]  # one relation's (row, col, edge) of one hop

# Initial capacity of the per-type node buffers; they double when a batch needs more and are
# kept for the next batch.
_INITIAL_CAPACITY = 4096
# num_threads > 1 only switches to the parallel kernel for frontiers at least this large: below it,
# waking the threads costs more than the count/draw steps they share (benchmarks/README.md).
PARALLEL_MIN_FRONTIER = 8192
_EMPTY_TIME = np.empty(0, np.int64)
_EMPTY_WEIGHT = np.empty(0, np.float32)
_EMPTY_TIME.flags.writeable = False
_EMPTY_WEIGHT.flags.writeable = False


@dataclass
class SampledSubgraph:
    """One batch's sampled subgraph, deduplicated, in PyG's ``NeighborLoader`` layout.

    Every node type and every relation of the graph has an entry (possibly empty). Local ids
    index ``node[t]``; ``node[t]`` lists the seeds first, in input order and without repeats, then
    the nodes first reached at hop 1, hop 2, ... . Edges of a relation are ordered by hop, so
    PyG's ``trim_to_layer`` can drop the outer hops layer by layer.

    Example: users 5, 9, 1, 9 watched videos 7, 7, 3, 4 (``user -watches-> video`` plus its
    reverse ``rev_watches``), seeds ``{"video": [7, 3, 7]}``, ``num_neighbors=[2, 1]``; at hop 2
    user 9 drew video 4 out of {7, 4} (``tests/graph/test_sampler.py`` checks this picture)::

        node["video"]   [ 7  3 | 4 ]            num_sampled_nodes["video"] = [2, 0, 1]
                          seeds  hop 2
        node["user"]    [ 5  9  1 ]             num_sampled_nodes["user"]  = [0, 3, 0]
                          hop 1
        seed_index["video"] = [0, 1, 0]         input seed position -> local row (7 twice)

        ("user", "watches", "video")   hop 1: 3 edges          num_sampled_edges = [3, 0]
            row (local user)   [ 0  1  2 ]      user 5 -> video 7, user 9 -> video 7,
            col (local video)  [ 0  0  1 ]      user 1 -> video 3
        ("video", "rev_watches", "user")  hop 2: 3 edges       num_sampled_edges = [0, 3]
            row (local video)  [ 0  2  1 ]      video 7 -> user 5, video 4 -> user 9,
            col (local user)   [ 0  1  2 ]      video 3 -> user 1

    Args:
        node (Dict[str, Tensor]): (N_t,) int64 global node ids per node type.
        row (Dict[EdgeType, Tensor]): (E_r,) int64 local source ids (into ``node[src]``).
        col (Dict[EdgeType, Tensor]): (E_r,) int64 local destination ids (into ``node[dst]``).
        edge (Dict[EdgeType, Tensor]): (E_r,) int64 global edge ids: positions in the relation's
            CSC arrays, so ``graph.csc(et).time[edge[et]]`` is each sampled edge's time.
        num_sampled_nodes (Dict[str, List[int]]): nodes first reached at each hop, hop 0 being the
            (deduplicated) seeds; ``num_hops + 1`` entries summing to N_t.
        num_sampled_edges (Dict[EdgeType, List[int]]): edges sampled at each hop; ``num_hops``
            entries summing to E_r.
        seed_index (Dict[str, Tensor]): (S_t,) int64 local row of each input seed, for every
            node type that had seeds.
        node_time (Dict[str, Tensor], optional): (N_t,) int64 time each node was expanded with
            (temporal mode only; see :class:`NeighborSampler`).
        batch (Dict[str, Tensor], optional): (N_t,) int64 example (seed position, counted over
            the node types in ``seeds`` order) each node belongs to (disjoint mode only).
    """

    node: Dict[NodeType, Tensor]
    row: Dict[EdgeType, Tensor]
    col: Dict[EdgeType, Tensor]
    edge: Dict[EdgeType, Tensor]
    num_sampled_nodes: Dict[NodeType, List[int]]
    num_sampled_edges: Dict[EdgeType, List[int]]
    seed_index: Dict[NodeType, Tensor]
    node_time: Optional[Dict[NodeType, Tensor]] = None
    batch: Optional[Dict[NodeType, Tensor]] = None

    @property
    def edge_index_dict(self) -> Dict[EdgeType, Tensor]:
        """``{edge_type: (2, E_r) int64 [row; col]}`` local ids, ready for PyG layers."""
        return {et: torch.stack([self.row[et], self.col[et]]) for et in self.row}

    @property
    def num_nodes(self) -> Dict[NodeType, int]:
        """N_t per node type."""
        return {t: int(n.numel()) for t, n in self.node.items()}

    @property
    def num_edges(self) -> Dict[EdgeType, int]:
        """E_r per relation."""
        return {et: int(r.numel()) for et, r in self.row.items()}

    def to_hetero_data(self) -> HeteroData:
        """A ``HeteroData`` shaped like PyG ``NeighborLoader`` output (no features attached).

        Sets ``data[t].n_id``, ``data[t].num_nodes``, ``data[et].edge_index``, ``data[et].e_id``
        and ``num_sampled_nodes`` / ``num_sampled_edges``; seed types also get ``seed_index`` and
        ``batch_size`` (the number of distinct seeds), temporal samples ``node_time``.
        """
        data = HeteroData()
        for t, n_id in self.node.items():
            data[t].n_id = n_id
            data[t].num_nodes = int(n_id.numel())
            if t in self.seed_index:
                data[t].seed_index = self.seed_index[t]
                data[t].batch_size = self.num_sampled_nodes[t][0]
            if self.node_time is not None:
                data[t].node_time = self.node_time[t]
            if self.batch is not None:
                data[t].batch = self.batch[t]
        for et in self.row:
            data[et].edge_index = torch.stack([self.row[et], self.col[et]])
            data[et].e_id = self.edge[et]
        data.set_value_dict("num_sampled_nodes", self.num_sampled_nodes)
        data.set_value_dict("num_sampled_edges", self.num_sampled_edges)
        return data

    def __repr__(self) -> str:
        nodes = ", ".join(f"{t}={n}" for t, n in self.num_nodes.items())
        edges = ", ".join(f"{'__'.join(et)}={n}" for et, n in self.num_edges.items())
        return f"{self.__class__.__name__}(nodes: {nodes}; edges: {edges})"


@dataclass
class SampledLinks:
    """An edge-level sample: the subgraph around a batch of links and the links to score.

    What PyG's ``LinkNeighborLoader`` gives in binary negative-sampling mode, in our layout. For
    links ``(user 5 -> video 7), (user 9 -> video 3)`` of ``("user", "watches", "video")`` with one
    negative per link (user 5 -> video 4, user 9 -> video 7)::

        edge_label_index = [[0, 1, 0, 1],     local rows of node["user"]   (5, 9, 5, 9)
                            [0, 1, 2, 0]]     local rows of node["video"]  (7, 3, 4, 7)
        edge_label       = [1, 1, 0, 0]

    With ``exclude_links`` the positive links (and the same pairs in every relation from the
    destination type back to the source type, such as ``rev_watches``) are absent from
    ``subgraph``: the model must predict an edge it cannot read.

    Args:
        subgraph (SampledSubgraph): the sampled neighbourhood; ``seed_index`` covers the node
            seeds given alongside the links (see :meth:`NeighborSampler.sample_from_edges`).
        edge_label_index (Tensor): (2, P + N) int64 local ``[source; destination]`` rows of the
            P links then the N negatives.
        edge_label (Tensor): (P + N,) float32, 1 for a link, 0 for a negative.
    """

    subgraph: SampledSubgraph
    edge_label_index: Tensor
    edge_label: Tensor


class NeighborSampler:
    """Uniform / weighted / temporal multi-hop neighbour sampler over a :class:`HeteroGraph`.

    Relation ``(src, rel, dst)`` is sampled for frontier nodes of type ``dst``, drawing among their
    incoming ``src`` neighbours; hop 1's frontier is the seeds, hop h+1's frontier is the nodes
    first reached at hop h. Output follows PyG's ``NeighborLoader`` (see :class:`SampledSubgraph`).

    With ``disjoint=True`` every seed position grows its own tree (PyG's disjoint mode): a node
    reached from two seeds appears twice, once per example, ``batch`` says whose it is, and a
    seed given twice is two examples. Deduplication then happens only within an example.

    Temporal mode only uses edges strictly older than the time of the frontier node that draws
    them. In disjoint mode every node of an example has the example's seed time. Otherwise seeds take their time from ``seed_time``; a node first reached at hop h takes the
    *minimum* time of the hop-h frontier nodes that reached it (over all relations), and a seed
    given twice takes the smaller of its times. For a node shared by several examples this is
    conservative: it only ever sees edges older than every example that reached it, so no
    example sees an edge from its own future (some see fewer edges than they could).

    Sampling runs in numba; results depend only on the generator's seed (a counter-based hash
    RNG, not thread scheduling), and ``num_threads`` > 1 returns exactly the same subgraph as 1.
    The sampler keeps the graph, its config and scratch buffers (a dense ``int32`` global -> local
    map per node type, allocated on first use); pickling drops the scratch, so DataLoader
    workers each rebuild their own. One instance must not run two ``sample`` calls at once.

    Args:
        graph (HeteroGraph): the topology (may be memory-mapped).
        num_neighbors (List[int] or Dict[EdgeType, List[int]]): fanout per hop, the same for every
            relation, or per relation (then every relation needs an entry, all of the same
            length; ``[0, 0]`` skips a relation). ``-1`` takes all neighbours, ``0`` none.
        replace (bool): draw with replacement, so a node can yield the same edge several times
            and exactly ``fanout`` edges whenever it has a usable neighbour (default False).
        weighted (bool): draw proportionally to the CSC ``weight`` (Efraimidis-Spirakis without
            replacement); edges of weight 0 are never drawn. Costs O(degree) per frontier node
            (default False).
        temporal (bool): only use edges strictly older than the frontier node's time; ``sample``
            then needs ``seed_time`` (default False).
        temporal_strategy (str): in temporal mode, which of the older edges a node draws:
            ``"uniform"`` (default) a uniform sample, ``"last"`` its ``fanout`` most recent ones
            (PyG's names). ``"last"`` follows a drifting node's current neighbourhood and needs
            ``temporal=True``, ``replace=False`` and ``weighted=False``.
        num_threads (int): numba threads for the count/draw/gather steps of frontiers of at
            least ``PARALLEL_MIN_FRONTIER`` nodes (relabelling stays sequential). Default 1: on the
            2-core benchmark machine 2 threads never beat 1 (``benchmarks/README.md``), and
            DataLoader workers are the parallelism. With numba's OpenMP layer also set
            ``OMP_WAIT_POLICY=passive``, else spinning threads slow everything else down.
            Disjoint sampling is single-threaded.
        disjoint (bool): one tree per seed position (default False).
        labor (bool): LABOR-0 sampling (Balin and Catalyurek, NeurIPS 2023) instead of uniform:
            every node gets one random number per hop, shared by all the frontier nodes that
            could draw it, and a frontier node with d usable in-edges keeps those whose source's
            number is below ``fanout / d``. ``fanout`` edges per node in expectation (not exactly),
            but neighbourhoods that overlap keep the same nodes, so a batch holds fewer distinct
            nodes. Costs O(degree) per frontier node; needs ``replace=False``, ``weighted=False``,
            ``disjoint=False`` and the uniform temporal strategy; single-threaded (default False).

    Example::

        graph = HeteroGraph.from_edges(
            {"user": 4, "video": 3},
            {("user", "watches", "video"): (torch.tensor([0, 1, 2, 3]), torch.tensor([0, 0, 1, 2]))},
            add_reverse=True,
        )
        sampler = NeighborSampler(graph, num_neighbors=[10, 5])
        sub = sampler.sample({"video": torch.tensor([0, 2])}, generator=torch.Generator().manual_seed(0))
        sub.node["video"][:2]  # tensor([0, 2]): the seeds come first
        sub.edge_index_dict[("user", "watches", "video")]  # (2, E_r) local [row; col]
    """

    def __init__(
        self,
        graph: HeteroGraph,
        num_neighbors: NumNeighbors,
        replace: bool = False,
        weighted: bool = False,
        temporal: bool = False,
        num_threads: int = 1,
        temporal_strategy: str = "uniform",
        disjoint: bool = False,
        labor: bool = False,
    ) -> None:
        self.graph = graph
        self.disjoint = bool(disjoint)
        self.labor = bool(labor)
        self.replace = bool(replace)
        self.weighted = bool(weighted)
        self.temporal = bool(temporal)
        if temporal_strategy not in TEMPORAL_STRATEGIES:
            raise ValueError(
                f"NeighborSampler: temporal_strategy must be one of {list(TEMPORAL_STRATEGIES)}, got {temporal_strategy!r}"
            )
        if temporal_strategy == "last" and (not self.temporal or self.replace or self.weighted):
            raise ValueError(
                "NeighborSampler: temporal_strategy='last' takes each node's most recent older edges; it needs "
                f"temporal=True, replace=False and weighted=False (got temporal={self.temporal}, "
                f"replace={self.replace}, weighted={self.weighted})"
            )
        self.temporal_strategy = temporal_strategy
        if self.labor and (self.replace or self.weighted or self.disjoint or temporal_strategy == "last"):
            raise ValueError(
                "NeighborSampler(labor=True): LABOR draws each node's in-edges by its sources' shared random "
                "numbers; it needs replace=False, weighted=False, disjoint=False and temporal_strategy='uniform' "
                f"(got replace={self.replace}, weighted={self.weighted}, disjoint={self.disjoint}, "
                f"temporal_strategy={temporal_strategy!r})"
            )
        self.num_neighbors: Dict[EdgeType, List[int]] = _normalise_fanouts(graph, num_neighbors)
        self.num_hops = len(next(iter(self.num_neighbors.values()), []))
        if not isinstance(num_threads, int) or isinstance(num_threads, bool) or num_threads < 1:
            raise ValueError(f"NeighborSampler: num_threads must be an int >= 1, got {num_threads!r}")
        self.num_threads = num_threads
        for et, fanouts in self.num_neighbors.items():
            if not any(fanouts):
                continue  # never sampled: needs neither time nor weight
            index = graph.csc(et)
            if self.temporal and index.time is None:
                raise ValueError(
                    f"NeighborSampler(temporal=True): relation {et} has no edge time; build the graph "
                    f"with times for it, or give it fanout [0] * {self.num_hops} in num_neighbors"
                )
            if self.weighted:
                if index.weight is None:
                    raise ValueError(
                        f"NeighborSampler(weighted=True): relation {et} has no edge weight; build the "
                        f"graph with weights for it, or give it fanout [0] * {self.num_hops} in num_neighbors"
                    )
                bad = ~(np.isfinite(index.weight) & (index.weight >= 0))
                if bad.any():
                    pos = int(bad.argmax())
                    raise ValueError(
                        f"NeighborSampler(weighted=True): relation {et}: weight[{pos}] = "
                        f"{float(index.weight[pos])}, expected a finite value >= 0"
                    )
        self._arrays: Optional[Dict[EdgeType, Tuple[np.ndarray, ...]]] = None
        self._scratch: Optional[_Scratch] = None

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = None  # views of the graph: rebuilt on demand
        state["_scratch"] = None  # O(num_nodes) buffers: each copy allocates its own
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        fanouts = set(map(tuple, self.num_neighbors.values()))
        fanout = list(fanouts.pop()) if len(fanouts) == 1 else {edge_type_str(k): v for k, v in self.num_neighbors.items()}
        return (
            f"{self.__class__.__name__}(num_neighbors={fanout}, replace={self.replace}, "
            f"weighted={self.weighted}, temporal={self.temporal}, temporal_strategy={self.temporal_strategy!r}, "
            f"num_threads={self.num_threads}, disjoint={self.disjoint}, labor={self.labor}, "
            f"node_types={len(self.graph.node_types)}, relations={len(self.graph.edge_types)})"
        )

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        seeds: Mapping[NodeType, Tensor],
        seed_time: Optional[Mapping[NodeType, Tensor]] = None,
        generator: Optional[torch.Generator] = None,
    ) -> SampledSubgraph:
        """Sample the subgraph around ``seeds``.

        Args:
            seeds (Dict[str, Tensor]): (S_t,) integer global ids per node type; repeats allowed
                (each node appears once in the output, see ``seed_index``).
            seed_time (Dict[str, Tensor], optional): (S_t,) int64 time per seed, for every node
                type in ``seeds``; required in temporal mode, rejected otherwise.
            generator (torch.Generator, optional): source of the one random int64 that seeds
                this call; torch's default generator when None (so ``torch.manual_seed`` holds).

        Returns:
            SampledSubgraph: node (N_t,), row/col/edge (E_r,), per-hop counts, seed_index (S_t,).
        """
        seed_arrays, time_arrays = self._check_seeds(seeds, seed_time)
        # One draw per call; the kernels derive every random number from it by hashing.
        seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
        if self._arrays is None:
            self._arrays = self._build_arrays()
        if self._scratch is None:
            self._scratch = _Scratch(self.graph, self.temporal)
        try:
            with torch.profiler.record_function("torchrec_gnn.sample"):
                if self.disjoint:
                    return self._sample_disjoint(seed_arrays, time_arrays, seed)
                return self._sample(seed_arrays, time_arrays, seed, self._scratch)
        except BaseException:
            self._scratch = None  # the maps may be half-filled: start clean next time
            raise

    def sample_from_edges(
        self,
        edge_type: EdgeType,
        edge_label_index: Tensor,
        neg_ratio: float = 1.0,
        node_seeds: Optional[Mapping[NodeType, Tensor]] = None,
        seed_time: Optional[Mapping[NodeType, Tensor]] = None,
        edge_label_time: Optional[Tensor] = None,
        exclude_links: bool = True,
        generator: Optional[torch.Generator] = None,
    ) -> SampledLinks:
        """Sample the subgraph around a batch of links (edge-level sampling).

        The links' endpoints, ``round(neg_ratio * P)`` negatives (each keeps a link's source and
        takes a uniformly drawn destination, cycling over the links) and any ``node_seeds`` are
        the seeds of one :meth:`sample` call; ``node_seeds`` come first in every type's seed list,
        so ``subgraph.seed_index[t][:len(node_seeds[t])]`` are their rows.

        Args:
            edge_type (EdgeType): ``(src, rel, dst)``, the relation of the links.
            edge_label_index (Tensor): (2, P) global ``[source; destination]`` ids of the links.
            neg_ratio (float): negatives per link (0 = none). Default 1.
            node_seeds (Dict[str, Tensor], optional): (S_t,) further node seeds, e.g. the users and
                items of a ranking batch sampled in the same subgraph.
            seed_time (Dict[str, Tensor], optional): (S_t,) times of ``node_seeds`` (temporal mode).
            edge_label_time (Tensor, optional): (P,) time of each link (temporal mode): its
                endpoints and its negatives only see edges strictly older than it.
            exclude_links (bool): drop the links from message passing. Default True.
            generator (torch.Generator, optional): source of the negatives and of the sample.

        Returns:
            SampledLinks: subgraph, (2, P + N) local ``edge_label_index``, (P + N,) ``edge_label``.
        """
        if tuple(edge_type) not in set(self.graph.edge_types):
            raise ValueError(f"NeighborSampler.sample_from_edges: unknown relation {edge_type}; "
                             f"relations: {self.graph.edge_types}")
        src_t, _, dst_t = edge_type = tuple(edge_type)
        links = torch.as_tensor(edge_label_index)
        if links.dim() != 2 or links.shape[0] != 2 or links.dtype in (torch.float32, torch.float64, torch.bool):
            raise ValueError(f"NeighborSampler.sample_from_edges: edge_label_index must be a (2, P) integer "
                             f"tensor, got shape {tuple(links.shape)} dtype {links.dtype}")
        if neg_ratio < 0:
            raise ValueError(f"NeighborSampler.sample_from_edges: neg_ratio must be >= 0, got {neg_ratio}")
        links = links.long()
        p = links.shape[1]
        n = round(neg_ratio * p)
        cycle = torch.arange(n) % max(p, 1)
        neg_dst = torch.randint(0, self.graph.num_nodes[dst_t], (n,), generator=generator)
        label_src, label_dst = torch.cat([links[0], links[0][cycle]]), torch.cat([links[1], neg_dst])
        seeds = {t: torch.as_tensor(s).long() for t, s in (node_seeds or {}).items()}
        offset = {t: int(s.numel()) for t, s in seeds.items()}
        times = None
        if self.temporal:
            if edge_label_time is None:
                raise ValueError("NeighborSampler.sample_from_edges: temporal=True needs edge_label_time (one time per link)")
            link_time = torch.as_tensor(edge_label_time).long()
            if link_time.shape != (p,):
                raise ValueError(f"NeighborSampler.sample_from_edges: edge_label_time has shape "
                                 f"{tuple(link_time.shape)}, expected ({p},)")
            label_time = torch.cat([link_time, link_time[cycle]])
            times = {t: torch.as_tensor(x).long() for t, x in (seed_time or {}).items()}
        # Append the link endpoints to the node seeds (source first, so same-type links work).
        for t, ids in ((src_t, label_src), (dst_t, label_dst)):
            offset.setdefault(t, 0)
            seeds[t] = torch.cat([seeds.get(t, torch.empty(0, dtype=torch.long)), ids])
            if times is not None:
                times[t] = torch.cat([times.get(t, torch.empty(0, dtype=torch.long)), label_time])
        sub = self.sample(seeds, seed_time=times, generator=generator)
        src_rows = sub.seed_index[src_t][offset[src_t] : offset[src_t] + p + n]
        dst_start = offset[dst_t] + (p + n if src_t == dst_t else 0)
        dst_rows = sub.seed_index[dst_t][dst_start : dst_start + p + n]
        if exclude_links and p:
            _drop_pairs(sub, HeldOutPairs(edge_type, self.graph.num_nodes[dst_t], links))
        return SampledLinks(
            subgraph=sub,
            edge_label_index=torch.stack([src_rows, dst_rows]),
            edge_label=torch.cat([torch.ones(p), torch.zeros(n)]),
        )

    def _sample(
        self,
        seeds: Dict[NodeType, np.ndarray],
        seed_time: Dict[NodeType, np.ndarray],
        seed: int,
        scratch: "_Scratch",
    ) -> SampledSubgraph:
        graph, temporal = self.graph, self.temporal
        latest = self.temporal_strategy == "last"
        node_types, edge_types = graph.node_types, graph.edge_types
        nodes, times, g2l = scratch.nodes, scratch.times, scratch.g2l
        count = {t: 0 for t in node_types}
        seed_index: Dict[NodeType, Tensor] = {}
        for t, ids in seeds.items():
            index, nodes[t], times[t], count[t] = _kernels.insert_seeds(
                ids, seed_time.get(t, _EMPTY_TIME), temporal, g2l[t], nodes[t], times[t], 0
            )
            seed_index[t] = torch.from_numpy(index)
        parallel = self.num_threads > 1
        if parallel:
            numba.set_num_threads(min(self.num_threads, numba.config.NUMBA_NUM_THREADS))

        def sample_relation(et: EdgeType, rel: int, hop: int, k: int, lo: int, hop_start: Dict[NodeType, int]) -> Chunk:
            src, dst = et[0], et[2]
            frontier = (*self._arrays[et], nodes[dst], times[dst], lo, hop_start[dst],
                        g2l[src], nodes[src], times[src], count[src], hop_start[src])
            if self.labor:  # one stream of r_s per source type, apart from the relations' streams
                stream = len(edge_types) + node_types.index(src)
                out = _kernels.sample_relation_labor(*frontier, k, temporal, seed, hop, stream)
            else:
                big = hop_start[dst] - lo >= PARALLEL_MIN_FRONTIER
                kernel = _kernels.sample_relation_parallel if parallel and big else _kernels.sample_relation
                out = kernel(*frontier, k, self.replace, self.weighted, temporal, latest, seed, hop, rel)
            out_row, out_col, out_edge, nodes[src], times[src], count[src] = out
            return out_row, out_col, out_edge

        num_sampled_nodes, num_sampled_edges, chunks = self._expand(count, sample_relation)
        node: Dict[NodeType, Tensor] = {}
        node_time: Optional[Dict[NodeType, Tensor]] = {} if temporal else None
        for t in node_types:
            ids = nodes[t][: count[t]]
            g2l[t][ids] = -1  # reset only the touched entries for the next batch
            node[t] = torch.from_numpy(ids.copy())
            if node_time is not None:
                node_time[t] = torch.from_numpy(times[t][: count[t]].copy())
        return SampledSubgraph(node=node, **_join_chunks(edge_types, chunks), num_sampled_nodes=num_sampled_nodes,
                               num_sampled_edges=num_sampled_edges, seed_index=seed_index, node_time=node_time)

    def _sample_disjoint(
        self,
        seeds: Dict[NodeType, np.ndarray],
        seed_time: Dict[NodeType, np.ndarray],
        seed: int,
    ) -> SampledSubgraph:
        """:meth:`_sample` with one tree per seed position (buffers are per call: a node count
        is no bound on the pairs a batch can hold)."""
        graph, temporal = self.graph, self.temporal
        latest = self.temporal_strategy == "last"
        node_types, edge_types = graph.node_types, graph.edge_types
        empty = np.empty(0, np.int64)
        nodes = {t: empty for t in node_types}
        batch = {t: empty for t in node_types}
        times = {t: empty for t in node_types}
        tables = {t: _kernels.new_table(_INITIAL_CAPACITY) for t in node_types}
        count = {t: 0 for t in node_types}
        seed_index: Dict[NodeType, Tensor] = {}
        examples = 0
        for t, ids in seeds.items():
            nodes[t], batch[t], times[t], *tables[t] = _kernels.insert_seeds_disjoint(
                ids, seed_time.get(t, _EMPTY_TIME), temporal, examples, graph.num_nodes[t], *tables[t]
            )
            count[t] = ids.shape[0]
            seed_index[t] = torch.arange(count[t])
            examples += count[t]

        def sample_relation(et: EdgeType, rel: int, hop: int, k: int, lo: int, hop_start: Dict[NodeType, int]) -> Chunk:
            src, dst = et[0], et[2]
            (out_row, out_col, out_edge, nodes[src], batch[src], times[src], *tables[src],
             count[src]) = _kernels.sample_relation_disjoint(
                *self._arrays[et],
                nodes[dst], batch[dst], times[dst], lo, hop_start[dst],
                *tables[src], graph.num_nodes[src], nodes[src], batch[src], times[src], count[src],
                k, self.replace, self.weighted, temporal, latest, seed, hop, rel,
            )  # fmt: skip
            return out_row, out_col, out_edge

        num_sampled_nodes, num_sampled_edges, chunks = self._expand(count, sample_relation)
        return SampledSubgraph(
            node={t: torch.from_numpy(nodes[t][: count[t]].copy()) for t in node_types},
            **_join_chunks(edge_types, chunks),
            num_sampled_nodes=num_sampled_nodes,
            num_sampled_edges=num_sampled_edges,
            seed_index=seed_index,
            node_time={t: torch.from_numpy(times[t][: count[t]].copy()) for t in node_types} if temporal else None,
            batch={t: torch.from_numpy(batch[t][: count[t]].copy()) for t in node_types},
        )

    def _expand(
        self, count: Dict[NodeType, int], sample_relation: Callable[..., Chunk]
    ) -> Tuple[Dict[NodeType, List[int]], Dict[EdgeType, List[int]], Dict[EdgeType, List[Chunk]]]:
        """The hop loop around the seeds already in ``count`` (nodes per type): hop h's frontier
        of type t is the nodes first reached at hop h - 1, ``[lo[t], hop_start[t])``; every
        relation with a fanout and a frontier calls ``sample_relation(et, rel, hop, k, lo[dst],
        hop_start)``, which appends the new sources (updating ``count``) and returns the edges.

        Returns:
            per-hop node counts, per-hop edge counts, and each relation's per-hop edge chunks.
        """
        node_types, edge_types = self.graph.node_types, self.graph.edge_types
        num_sampled_nodes = {t: [count[t]] for t in node_types}
        num_sampled_edges: Dict[EdgeType, List[int]] = {et: [] for et in edge_types}
        chunks: Dict[EdgeType, List[Chunk]] = {et: [] for et in edge_types}
        lo = {t: 0 for t in node_types}
        for hop in range(self.num_hops):
            hop_start = dict(count)
            for rel, et in enumerate(edge_types):
                k, dst = self.num_neighbors[et][hop], et[2]
                if k == 0 or lo[dst] == hop_start[dst] or self._arrays[et][1].shape[0] == 0:
                    num_sampled_edges[et].append(0)
                    continue
                chunk = sample_relation(et, rel, hop, k, lo[dst], hop_start)
                num_sampled_edges[et].append(int(chunk[0].shape[0]))
                chunks[et].append(chunk)
            for t in node_types:
                num_sampled_nodes[t].append(count[t] - hop_start[t])
            lo = hop_start
        return num_sampled_nodes, num_sampled_edges, chunks

    # ------------------------------------------------------------------ helpers
    def _check_seeds(
        self,
        seeds: Mapping[NodeType, Tensor],
        seed_time: Optional[Mapping[NodeType, Tensor]],
    ) -> Tuple[Dict[NodeType, np.ndarray], Dict[NodeType, np.ndarray]]:
        if not isinstance(seeds, Mapping):
            raise TypeError(f"NeighborSampler.sample: seeds must be a dict node type -> ids, got {type(seeds).__name__}")
        if seed_time is not None and not self.temporal:
            raise ValueError(
                "NeighborSampler.sample: seed_time was given but the sampler has temporal=False; "
                "build it with temporal=True to sample only edges older than the seeds"
            )
        if self.temporal and seed_time is None:
            raise ValueError("NeighborSampler.sample: temporal=True needs seed_time (one time per seed)")
        out: Dict[NodeType, np.ndarray] = {}
        times: Dict[NodeType, np.ndarray] = {}
        for t, ids in seeds.items():
            if t not in self.graph.num_nodes:
                raise ValueError(
                    f"NeighborSampler.sample: unknown node type {t!r} in seeds; node types: {self.graph.node_types}"
                )
            array = _to_numpy(ids)
            if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
                raise ValueError(
                    f"NeighborSampler.sample: seeds[{t!r}] must be a 1-D integer tensor, "
                    f"got shape {tuple(array.shape)} dtype {array.dtype}"
                )
            array = np.array(array, dtype=np.int64)  # a private, writable, contiguous copy
            n = self.graph.num_nodes[t]
            bad = (array < 0) | (array >= n)
            if bad.any():
                pos = int(bad.argmax())
                raise ValueError(
                    f"NeighborSampler.sample: seeds[{t!r}] has id {int(array[pos])} at position {pos}, "
                    f"outside [0, {n}) (num_nodes[{t!r}])"
                )
            out[t] = array
            if self.temporal:
                if t not in seed_time:
                    raise ValueError(f"NeighborSampler.sample: temporal=True needs seed_time[{t!r}] (one time per seed)")
                time = np.array(_to_numpy(seed_time[t]), dtype=np.int64)
                if time.shape != array.shape:
                    raise ValueError(
                        f"NeighborSampler.sample: seed_time[{t!r}] has shape {tuple(time.shape)}, "
                        f"expected {tuple(array.shape)} like seeds[{t!r}]"
                    )
                times[t] = time
        if self.temporal:
            extra = sorted(set(seed_time) - set(seeds))
            if extra:
                raise ValueError(f"NeighborSampler.sample: seed_time has node types {extra} that have no seeds")
        return out, times

    def _build_arrays(self) -> Dict[EdgeType, Tuple[np.ndarray, ...]]:
        """Read-only, contiguous views of each relation's CSC arrays in the kernels' dtypes.

        Plain read-only ndarrays (not memmaps, not writable) so numba compiles one variant.
        """
        arrays = {}
        for et in self.graph.edge_types:
            index = self.graph.csc(et)
            row = index.row if index.row.dtype in (np.int32, np.int64) else index.row.astype(np.int64)
            time = index.time if self.temporal and index.time is not None else None
            weight = index.weight if self.weighted and index.weight is not None else None
            arrays[et] = (
                _readonly(index.colptr, np.int64),
                _readonly(row, row.dtype),
                _EMPTY_TIME if time is None else _readonly(time, np.int64),
                _EMPTY_WEIGHT if weight is None else _readonly(weight, np.float32),
            )
        return arrays


class _Scratch:
    """Per-sampler reusable buffers: global -> local map, node list and node times per type."""

    def __init__(self, graph: HeteroGraph, temporal: bool) -> None:
        self.g2l = {t: np.full(n, -1, dtype=np.int32) for t, n in graph.num_nodes.items()}
        self.nodes = {t: np.empty(_INITIAL_CAPACITY, np.int64) for t in graph.num_nodes}
        self.times = {
            t: np.empty(_INITIAL_CAPACITY if temporal else 0, np.int64) for t in graph.num_nodes
        }


class HeldOutPairs:
    """``(src, dst)`` pairs of one relation held out of message passing: matched in that relation
    and, reversed, in every relation from ``dst`` back to ``src`` (e.g. ``rev_watches``).

    Args:
        edge_type (EdgeType): ``(src, rel, dst)``.
        num_dst (int): node count of the ``dst`` type (to key a pair as one integer).
        pairs (Tensor): (2, P) global ``[src; dst]`` ids.
    """

    def __init__(self, edge_type: EdgeType, num_dst: int, pairs: Tensor) -> None:
        self.edge_type, self.num_dst = tuple(edge_type), num_dst
        self.keys = np.unique(pairs[0].numpy() * num_dst + pairs[1].numpy())

    def applies_to(self, edge_type: EdgeType) -> bool:
        """Whether ``edge_type`` is the pairs' relation or one of its reverses."""
        src_t, _, dst_t = self.edge_type
        return edge_type == self.edge_type or (edge_type[0] == dst_t and edge_type[2] == src_t)

    def matches(self, edge_type: EdgeType, src: Tensor, dst: Tensor) -> Tensor:
        """(E,) bool: which edges ``src[i] -> dst[i]`` (global ids) of ``edge_type`` are held out."""
        users, items = (src, dst) if edge_type == self.edge_type else (dst, src)
        return torch.from_numpy(np.isin(users.numpy() * self.num_dst + items.numpy(), self.keys))


def _join_chunks(edge_types: List[EdgeType], chunks: Dict[EdgeType, List[Chunk]]) -> Dict[str, Dict[EdgeType, Tensor]]:
    """Concatenate each relation's per-hop ``(row, col, edge)`` arrays into (E_r,) tensors:
    ``{"row": ..., "col": ..., "edge": ...}``, the SampledSubgraph fields."""
    row_d, col_d, edge_d = {}, {}, {}
    for et in edge_types:
        parts = chunks[et]
        if not parts:
            row_d[et] = col_d[et] = edge_d[et] = torch.empty(0, dtype=torch.long)
        elif len(parts) == 1:
            row_d[et], col_d[et], edge_d[et] = (torch.from_numpy(a) for a in parts[0])
        else:
            row_d[et], col_d[et], edge_d[et] = (torch.from_numpy(np.concatenate(a)) for a in zip(*parts))
    return {"row": row_d, "col": col_d, "edge": edge_d}


def _drop_pairs(sub: SampledSubgraph, held: HeldOutPairs) -> None:
    """Remove the ``held`` pairs from ``sub`` in place, hop counts following."""
    for et in sub.row:
        if not held.applies_to(et) or sub.row[et].numel() == 0:
            continue
        keep = ~held.matches(et, sub.node[et[0]][sub.row[et]], sub.node[et[2]][sub.col[et]])
        if bool(keep.all()):
            continue
        kept = np.concatenate([[0], np.cumsum(keep.numpy())])  # kept edges before each position
        bounds = np.cumsum([0, *sub.num_sampled_edges[et]])
        sub.num_sampled_edges[et] = [int(kept[b] - kept[a]) for a, b in zip(bounds[:-1], bounds[1:])]
        sub.row[et], sub.col[et], sub.edge[et] = sub.row[et][keep], sub.col[et][keep], sub.edge[et][keep]


def fanouts_by_relation(
    graph: HeteroGraph, fanouts: Sequence[int], overrides: Mapping[str, Sequence[int]]
) -> Dict[EdgeType, List[int]]:
    """Per-relation fanouts: ``fanouts`` everywhere except the relations named in ``overrides``
    as ``"src__rel__dst"`` (the form config files can hold).

    Raises:
        ValueError: an override names no relation of the graph (the valid names are listed).
    """
    names = {edge_type_str(et): et for et in graph.edge_types}
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ValueError(f"relation_fanouts: unknown relations {unknown}; the graph has {sorted(names)}")
    return {et: list(overrides.get(name, fanouts)) for name, et in names.items()}


def _normalise_fanouts(graph: HeteroGraph, num_neighbors: NumNeighbors) -> Dict[EdgeType, List[int]]:
    edge_types = graph.edge_types
    if isinstance(num_neighbors, Mapping):
        unknown = [et for et in num_neighbors if tuple(et) not in set(edge_types)]
        if unknown:
            raise ValueError(f"NeighborSampler: num_neighbors has unknown relations {unknown}; relations: {edge_types}")
        missing = [et for et in edge_types if et not in num_neighbors]
        if missing:
            raise ValueError(
                f"NeighborSampler: num_neighbors has no fanouts for relations {missing}; give every "
                f"relation a list (all of one length), [0] * num_hops to skip one"
            )
        fanouts = {et: list(num_neighbors[et]) for et in edge_types}
        lengths = {et: len(f) for et, f in fanouts.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"NeighborSampler: num_neighbors lists must all have one length (one fanout per hop), "
                f"got lengths {lengths}"
            )
    elif isinstance(num_neighbors, (list, tuple)):
        fanouts = {et: list(num_neighbors) for et in edge_types}
    else:
        raise TypeError(
            f"NeighborSampler: num_neighbors must be a list of ints or a dict relation -> list, "
            f"got {type(num_neighbors).__name__}"
        )
    for et, values in fanouts.items():
        for v in values:
            if not is_fanout(v):
                raise ValueError(
                    f"NeighborSampler: num_neighbors[{et}] = {values}: each fanout must be an int >= -1 "
                    f"(-1 = all neighbours), got {v!r}"
                )
        fanouts[et] = [int(v) for v in values]
    return fanouts


def _to_numpy(values: Any) -> np.ndarray:
    if isinstance(values, Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _readonly(array: np.ndarray, dtype: Any) -> np.ndarray:
    view = np.ascontiguousarray(array, dtype=dtype).view(np.ndarray)
    view.flags.writeable = False
    return view

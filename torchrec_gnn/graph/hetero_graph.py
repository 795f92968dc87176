"""Heterogeneous graph store: one CSC index per relation, memory-mappable.

Relation ``(src, rel, dst)`` is stored grouped by destination (CSC), because a sampler expands
frontier nodes of type ``dst`` by drawing among their incoming ``src`` neighbours (PyG's
convention: messages flow ``row = source -> col = destination``)::

    relation ("user", "watches", "video"), 3 videos, 4 edges

    colptr  [0, 2, 2, 4]          video 0 <- rows[0:2], video 1 has none, video 2 <- rows[2:4]
    row     [5, 9, 1, 5]          source user ids (int32 when they fit, else int64)
    time    [10, 42, 7, 30]       optional, ascending within each destination's segment
    weight  [1., 2., 1., 1.]      optional
    edge_id [3, 0, 1, 2]          optional: each edge's position in the input edge list

Sorting each segment by time makes temporal sampling a binary search: the edges older than
``t`` are a prefix of the segment. Arrays are plain ``.npy`` files so several processes that
``load(dir, mmap=True)`` the same directory share one copy of the pages.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from torchrec_gnn.graph._kernels import older_degree
from torchrec_gnn.ids import check_ids, first_out_of_range
from torchrec_gnn.tables import read_edge_table
from torchrec_gnn.typing import EdgeList, EdgeType, NodeType, edge_type_str

ArrayLike = Union[np.ndarray, torch.Tensor]
FORMAT_VERSION = 1
METADATA_FILE = "graph.json"


@dataclass(frozen=True)
class CSC:
    """The CSC arrays of one relation (numpy; read-only when memory-mapped).

    Args:
        colptr (ndarray): (num_dst + 1,) int64 segment offsets.
        row (ndarray): (E,) int32/int64 source node ids.
        time (ndarray, optional): (E,) int64 edge times, ascending within each segment.
        weight (ndarray, optional): (E,) float32 edge weights.
        edge_id (ndarray, optional): (E,) int64 position of each edge in the edge list the
            graph was built from (``HeteroGraph.from_edges(..., edge_ids=True)``), so features
            stored in input order can be gathered for sampled edges.
    """

    colptr: np.ndarray
    row: np.ndarray
    time: Optional[np.ndarray] = None
    weight: Optional[np.ndarray] = None
    edge_id: Optional[np.ndarray] = None

    @property
    def num_edges(self) -> int:
        return int(self.row.shape[0])

    def degree(self, nodes: Optional[np.ndarray] = None, before: Optional[np.ndarray] = None) -> np.ndarray:
        """(N,) int64 in-degree of ``nodes`` (default: every destination node, in id order);
        with ``before`` ((N,) int64 times) and a timed relation, only the edges older than each
        node's time count (a binary search in its time-sorted segment)."""
        if nodes is None:
            nodes = np.arange(self.colptr.shape[0] - 1, dtype=np.int64)
        nodes = np.asarray(nodes, dtype=np.int64)
        if nodes.size and (nodes.min() < 0 or nodes.max() >= self.colptr.shape[0] - 1):
            bad = int(nodes[(nodes < 0) | (nodes >= self.colptr.shape[0] - 1)][0])
            raise ValueError(f"CSC.degree: node id {bad} outside [0, {self.colptr.shape[0] - 1})")
        if before is None or self.time is None:
            return self.colptr[nodes + 1] - self.colptr[nodes]
        before = np.asarray(before, dtype=np.int64)
        if before.shape != nodes.shape:
            raise ValueError(f"CSC.degree: before has shape {before.shape}, expected {nodes.shape}")
        return older_degree(self.colptr, self.time, nodes, before)


GRAPH_VALIDATION = ("cheap", "full")


def _check_csc(index: CSC, edge_type: EdgeType, files: Dict[str, Path], num_src: int, full: bool) -> None:
    """Raise ``ValueError`` naming the file if ``index`` breaks what the sampling kernels rely on."""
    colptr_file, row_file = files["colptr"], files["row"]
    for name, array, file in (("colptr", index.colptr, colptr_file), ("row", index.row, row_file)):
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"{file}: {name} of relation {edge_type} has dtype {array.dtype}, expected integers")
    colptr = index.colptr
    falls = np.flatnonzero(np.diff(colptr) < 0)
    if int(colptr[0]) != 0 or int(colptr[-1]) != index.num_edges or falls.size:
        where = "".join(f", and it falls at position {p} ({int(colptr[p])} -> {int(colptr[p + 1])})" for p in falls[:1])
        raise ValueError(
            f"{colptr_file}: colptr of relation {edge_type} must rise from 0 to {index.num_edges} (the edge "
            f"count); got first {int(colptr[0])}, last {int(colptr[-1])}{where}"
        )
    if not full:
        return
    pos = first_out_of_range(np.asarray(index.row), num_src)
    if pos >= 0:
        raise ValueError(f"{row_file}: row of relation {edge_type} has source id {int(index.row[pos])} at position "
                         f"{pos}, outside [0, {num_src})")
    if index.time is not None:
        older = np.diff(index.time) < 0  # older[i]: edge i + 1 is older than edge i
        starts = colptr[1:-1]
        older[starts[(starts > 0) & (starts < index.num_edges)] - 1] = False  # a new segment may start earlier
        if older.any():
            pos = int(np.argmax(older)) + 1
            raise ValueError(f"{files['time']}: time of relation {edge_type}: edge {pos} is older than the one "
                             f"before it in the same destination's segment (times must ascend within each segment)")


class HeteroGraph:
    """A heterogeneous graph: node counts per type and a :class:`CSC` per relation.

    Build it with :meth:`from_edges` (arrays) or :meth:`from_tables` (CSV/Parquet), persist it
    with :meth:`save` and map it back with :meth:`load`.

    Args:
        num_nodes (Dict[str, int]): node count per node type; ids are ``0..count-1``.
        csc (Dict[EdgeType, CSC]): the index of every relation ``(src, rel, dst)``.

    Example::

        graph = HeteroGraph.from_edges(
            {"user": 3, "video": 2},
            {("user", "watches", "video"): (torch.tensor([0, 1, 2]), torch.tensor([1, 1, 0]))},
            add_reverse=True,
        )
        graph.edge_types  # [('user', 'watches', 'video'), ('video', 'rev_watches', 'user')]
    """

    def __init__(self, num_nodes: Mapping[NodeType, int], csc: Mapping[EdgeType, CSC]) -> None:
        self.num_nodes: Dict[NodeType, int] = {t: int(n) for t, n in num_nodes.items()}
        self._csc: Dict[EdgeType, CSC] = dict(csc)
        self._mapped_from: Optional[Path] = None  # set by load(mmap=True)
        for et, index in self._csc.items():
            src, _, dst = et
            for t in (src, dst):
                if t not in self.num_nodes:
                    raise ValueError(f"HeteroGraph: relation {et} uses node type {t!r}, not in {sorted(self.num_nodes)}")
            if index.colptr.shape != (self.num_nodes[dst] + 1,):
                raise ValueError(
                    f"HeteroGraph: relation {et}: colptr has shape {index.colptr.shape}, "
                    f"expected ({self.num_nodes[dst] + 1},) = num_nodes[{dst!r}] + 1"
                )
            if int(index.colptr[-1]) != index.num_edges:
                raise ValueError(
                    f"HeteroGraph: relation {et}: colptr[-1] = {int(index.colptr[-1])} but row has "
                    f"{index.num_edges} edges"
                )

    # ------------------------------------------------------------------ access
    @property
    def node_types(self) -> List[NodeType]:
        return list(self.num_nodes)

    @property
    def edge_types(self) -> List[EdgeType]:
        return list(self._csc)

    def csc(self, edge_type: EdgeType) -> CSC:
        """The CSC arrays of ``edge_type``."""
        try:
            return self._csc[edge_type]
        except KeyError:
            raise KeyError(f"HeteroGraph has no relation {edge_type}; relations: {self.edge_types}") from None

    def num_edges(self, edge_type: Optional[EdgeType] = None) -> int:
        """Edges of one relation, or of all relations when ``edge_type`` is None."""
        if edge_type is None:
            return sum(c.num_edges for c in self._csc.values())
        return self.csc(edge_type).num_edges

    def edge_index(self, edge_type: EdgeType) -> torch.Tensor:
        """(2, E) int64 ``[source; destination]`` in storage (CSC) order."""
        index = self.csc(edge_type)
        dst = np.repeat(np.arange(index.colptr.shape[0] - 1, dtype=np.int64), index.degree())
        return torch.from_numpy(np.stack([np.asarray(index.row, dtype=np.int64), dst]))

    def nbytes(self) -> int:
        """Bytes held by all index arrays."""
        return sum(
            a.nbytes for c in self._csc.values() for a in (c.colptr, c.row, c.time, c.weight, c.edge_id) if a is not None
        )

    # ------------------------------------------------------------------ building
    @classmethod
    def from_edges(
        cls,
        num_nodes: Mapping[NodeType, int],
        edges: Mapping[EdgeType, Union[EdgeList, Tuple[ArrayLike, ArrayLike], ArrayLike]],
        add_reverse: bool = False,
        reverse_prefix: str = "rev_",
        keep_duplicates: bool = False,
        edge_ids: bool = False,
    ) -> "HeteroGraph":
        """Build from COO edges per relation.

        Args:
            num_nodes (Mapping[str, int]): node count per type.
            edges (Mapping[EdgeType, ...]): per relation an :class:`EdgeList`, a ``(src, dst)``
                pair of (E,) integer arrays, or a (2, E) ``edge_index``.
            add_reverse (bool): also add ``(dst, reverse_prefix + rel, src)`` for every relation
                that has no reverse yet (default False). Self-relations such as
                ``("user", "friend", "user")`` get one too unless you symmetrise them yourself.
            reverse_prefix (str): prefix of reverse relation names (default ``"rev_"``).
            keep_duplicates (bool): keep parallel edges (a multigraph, as PyG's ``edge_index``
                is) instead of collapsing them (default False, see below).
            edge_ids (bool): store each edge's input position in ``CSC.edge_id`` (default False;
                costs 8 bytes per edge). Reverse relations number their edges like the relation
                they reverse.

        By default duplicate ``(src, dst)`` pairs within a relation are collapsed to one edge
        that keeps the earliest time (and that edge's weight), so temporal sampling sees it as
        soon as it existed; a recommender's repeated interactions then weigh like one, and
        sampling never spends its fanout on copies. Ids are validated: a wrong dtype, a negative or an out-of-range id raises an
        error naming the relation, the end and the first bad value.
        """
        lists = {et: _as_edge_list(et, e) for et, e in edges.items()}
        if add_reverse:
            for (src, rel, dst), e in list(lists.items()):
                reverse = (dst, reverse_prefix + rel, src)
                if reverse not in lists:
                    lists[reverse] = EdgeList(src=e.dst, dst=e.src, time=e.time, weight=e.weight)
        csc = {}
        for et, e in lists.items():
            src_t, _, dst_t = et
            for t in (src_t, dst_t):
                if t not in num_nodes:
                    raise ValueError(f"HeteroGraph: relation {et} uses node type {t!r}, not in {sorted(num_nodes)}")
            csc[et] = _build_csc(et, e, int(num_nodes[src_t]), int(num_nodes[dst_t]), keep_duplicates, edge_ids)
        return cls(num_nodes, csc)

    @classmethod
    def from_tables(
        cls,
        num_nodes: Mapping[NodeType, int],
        tables: Mapping[EdgeType, Union[str, os.PathLike]],
        add_reverse: bool = False,
    ) -> "HeteroGraph":
        """Build from one CSV or Parquet file per relation with columns ``src, dst[, time][, weight]``
        (read by :func:`torchrec_gnn.tables.read_edge_table`: a missing or unknown column, or an
        empty cell, raises an error naming the file)."""
        lists = {}
        for et, path in tables.items():
            frame = read_edge_table(Path(path), f"{path} (relation {et})")
            lists[et] = EdgeList(
                src=torch.from_numpy(frame["src"].to_numpy(np.int64)),
                dst=torch.from_numpy(frame["dst"].to_numpy(np.int64)),
                time=torch.from_numpy(frame["time"].to_numpy(np.int64)) if "time" in frame else None,
                weight=torch.from_numpy(frame["weight"].to_numpy(np.float32)) if "weight" in frame else None,
            )
        return cls.from_edges(num_nodes, lists, add_reverse=add_reverse)

    # ------------------------------------------------------------------ persistence
    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write ``graph.json`` plus one ``.npy`` per array into directory ``path``."""
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        relations = []
        for et, index in self._csc.items():
            stem = edge_type_str(et)
            files = {}
            for name in ("colptr", "row", "time", "weight", "edge_id"):
                array = getattr(index, name)
                if array is not None:
                    files[name] = f"{stem}.{name}.npy"
                    np.save(root / files[name], np.ascontiguousarray(array))
            relations.append({"edge_type": list(et), "num_edges": index.num_edges, "files": files})
        meta = {"format_version": FORMAT_VERSION, "num_nodes": self.num_nodes, "relations": relations}
        (root / METADATA_FILE).write_text(json.dumps(meta, indent=1))
        return root

    @classmethod
    def load(cls, path: Union[str, os.PathLike], mmap: bool = True, validate: str = "cheap") -> "HeteroGraph":
        """Load a directory written by :meth:`save`; ``mmap=True`` maps the arrays read-only.

        A missing, truncated, mismatched or corrupt file raises ``ValueError`` naming the file,
        the array and the bad value, never a crash inside the sampling kernels:

        * ``validate="cheap"`` (default; O(nodes)): metadata keys and counts, array shapes and
          dtypes, every ``colptr`` starting at 0, ending at the edge count and never decreasing;
        * ``validate="full"`` adds the O(edges) checks: source ids in range and edge times
          ascending within each segment (what the kernels index and binary-search by). Use it for
          a graph read back from disk that something else may have written.
        """
        if validate not in GRAPH_VALIDATION:
            raise ValueError(f"HeteroGraph.load: validate must be one of {list(GRAPH_VALIDATION)}, got {validate!r}")
        root = Path(path)
        meta_path = root / METADATA_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{root}: not a saved HeteroGraph ({METADATA_FILE} is missing)")
        try:
            meta = json.loads(meta_path.read_text())
            version, num_nodes, relations = meta["format_version"], meta["num_nodes"], meta["relations"]
            for rel in relations:
                rel["edge_type"], rel["files"]["colptr"], rel["files"]["row"], rel["num_edges"]  # noqa: B018 - presence check
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{meta_path}: corrupt graph metadata (missing or malformed {err})") from err
        if version != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: format_version {version}, this build reads {FORMAT_VERSION}")
        bad_counts = {t: n for t, n in num_nodes.items() if not isinstance(n, int) or n < 0}
        bad_counts.update({edge_type_str(r["edge_type"]): r["num_edges"] for r in relations
                           if not isinstance(r["num_edges"], int) or r["num_edges"] < 0})
        unknown = sorted({t for r in relations for t in (r["edge_type"][0], r["edge_type"][2])} - set(num_nodes))
        if bad_counts or unknown:
            raise ValueError(f"{meta_path}: corrupt graph metadata: counts must be ints >= 0, got {bad_counts}; "
                             f"node types of relations missing from num_nodes: {unknown}")
        csc = {}
        for rel in relations:
            et = tuple(rel["edge_type"])
            arrays = {}
            for name, file in rel["files"].items():
                file_path = root / file
                try:
                    arrays[name] = np.load(file_path, mmap_mode="r" if mmap else None)
                except (OSError, ValueError) as err:
                    raise ValueError(f"{file_path}: cannot read {name} of relation {et} ({err})") from err
                expected = meta["num_nodes"][et[2]] + 1 if name == "colptr" else rel["num_edges"]
                if arrays[name].shape != (expected,):
                    raise ValueError(
                        f"{file_path}: {name} of relation {et} has shape {arrays[name].shape}, "
                        f"expected ({expected},) from {METADATA_FILE}"
                    )
            csc[et] = CSC(**arrays)
            _check_csc(csc[et], et, {name: root / file for name, file in rel["files"].items()}, num_nodes[et[0]],
                       validate == "full")
        graph = cls(num_nodes, csc)
        if mmap:
            graph._mapped_from = root.resolve()
        return graph

    def __reduce__(self) -> Tuple:
        # A memory-mapped graph travels as its directory, so a spawned DataLoader worker maps
        # the same pages instead of receiving (and holding) a private copy of every array.
        if self._mapped_from is not None:
            return (HeteroGraph.load, (str(self._mapped_from), True))
        return (HeteroGraph, (self.num_nodes, self._csc))

    # ------------------------------------------------------------------ summary
    def summary(self) -> str:
        """A table of node counts, edge counts, degree statistics and memory."""
        lines = [f"HeteroGraph: {len(self.num_nodes)} node types, {len(self._csc)} relations, "
                 f"{self.num_edges():,} edges, {self.nbytes() / 2**20:.1f} MiB"]
        width = max([len(t) for t in self.num_nodes] + [9])
        lines.append(f"  {'node type':<{width}} {'nodes':>12}")
        lines += [f"  {t:<{width}} {n:>12,}" for t, n in self.num_nodes.items()]
        rel_width = max([len(edge_type_str(et)) for et in self._csc] + [8])
        lines.append(
            f"  {'relation':<{rel_width}} {'edges':>12} {'mean in-deg':>11} {'max in-deg':>10} {'no in-edge':>10} {'timed':>5}"
        )
        for et, index in self._csc.items():
            degree = index.degree()
            mean = float(degree.mean()) if degree.size else 0.0
            top = int(degree.max()) if degree.size else 0
            lines.append(
                f"  {edge_type_str(et):<{rel_width}} {index.num_edges:>12,} {mean:>11.2f} {top:>10,} "
                f"{int((degree == 0).sum()):>10,} {'yes' if index.time is not None else 'no':>5}"
            )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()


def _as_edge_list(edge_type: EdgeType, edges: Union[EdgeList, Tuple[ArrayLike, ArrayLike], ArrayLike]) -> EdgeList:
    if isinstance(edges, EdgeList):
        return edges
    if isinstance(edges, tuple) and len(edges) == 2:
        return EdgeList(src=_as_tensor(edges[0]), dst=_as_tensor(edges[1]))
    index = _as_tensor(edges)
    if index.dim() != 2 or index.shape[0] != 2:
        raise ValueError(f"HeteroGraph: relation {edge_type}: edge_index must have shape (2, E), got {tuple(index.shape)}")
    return EdgeList(src=index[0], dst=index[1])


def _as_tensor(array: ArrayLike) -> torch.Tensor:
    return array if isinstance(array, torch.Tensor) else torch.from_numpy(np.asarray(array))


def _build_csc(edge_type: EdgeType, edges: EdgeList, num_src: int, num_dst: int, keep_duplicates: bool,
               edge_ids: bool) -> CSC:
    src = _as_tensor(edges.src).numpy()
    dst = _as_tensor(edges.dst).numpy()
    if src.shape != dst.shape or src.ndim != 1:
        raise ValueError(f"HeteroGraph: relation {edge_type}: src {src.shape} and dst {dst.shape} must be equal 1-D shapes")
    check_ids(f"HeteroGraph: relation {edge_type}: src", src, num_src)
    check_ids(f"HeteroGraph: relation {edge_type}: dst", dst, num_dst)
    src, dst = src.astype(np.int64, copy=False), dst.astype(np.int64, copy=False)
    time = None if edges.time is None else _as_tensor(edges.time).numpy().astype(np.int64, copy=False)
    weight = None if edges.weight is None else _as_tensor(edges.weight).numpy().astype(np.float32, copy=False)
    for name, array in (("time", time), ("weight", weight)):
        if array is not None and array.shape != src.shape:
            raise ValueError(f"HeteroGraph: relation {edge_type}: {name} has shape {array.shape}, expected {src.shape}")

    # Sort by (dst, src, time): duplicates become neighbours with the earliest first. lexsort is
    # stable, so parallel edges keep their input order.
    keys: List[np.ndarray] = ([time] if time is not None else []) + [src, dst]
    order = np.lexsort(keys)
    src, dst = src[order], dst[order]
    if not keep_duplicates:
        keep = np.ones(src.shape[0], dtype=bool)
        keep[1:] = (src[1:] != src[:-1]) | (dst[1:] != dst[:-1])
        order = order[keep]
        src, dst = src[keep], dst[keep]
    if time is not None:
        time = time[order]
        # Within each destination, order by time so "older than t" is a prefix.
        resort = np.lexsort((src, time, dst))
        src, dst, time, order = src[resort], dst[resort], time[resort], order[resort]
    if weight is not None:
        weight = weight[order]
    colptr = np.zeros(num_dst + 1, dtype=np.int64)
    np.cumsum(np.bincount(dst, minlength=num_dst), out=colptr[1:])
    row_dtype = np.int32 if num_src < 2**31 else np.int64
    return CSC(colptr=colptr, row=src.astype(row_dtype), time=time, weight=weight,
               edge_id=order.astype(np.int64) if edge_ids else None)


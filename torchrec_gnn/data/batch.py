"""GraphBatch: a TorchRec ``Batch`` plus the graph input of its examples, :class:`GraphFeatures`.

Layout for B=3 examples whose users are (7, 2, 7) and items (5, 5, 9), one relation
``("user", "watches", "video")`` and a 1-hop sample::

    dense_features   (B, F)          as in torchrec.datasets.utils.Batch
    sparse_features  KJT, B rows     keys = ranker sparse features, one id per row
    labels           (B, T)          0 where a label is missing, see label_mask
    label_mask       (B, T) bool     True = label present
    graph_features   GraphFeatures:

      node_ids  KJT of one-id bags (what an EmbeddingBagCollection over node tables takes, its
                pooled output row i being node i's embedding), stride = the largest N_t:
                    key "user"   [7] [2] [4] [ ]    seeds first (deduplicated), then sampled,
                    key "video"  [5] [9] [1] [3]    then empty bags up to the stride
      edge_index[("user", "watches", "video")] = [[2, 0, 1],    row = source, local to "user"
                                                  [2, 3, 0]]    col = destination, local to "video"
      user_index = [0, 1, 0]   row of each example's user in node_ids["user"]
      item_index = [0, 1, 0]   row of each example's item in node_ids["video"]
      num_sampled_nodes["user"] = [2, 1]   per hop (hop 0 = seeds), for layer-wise trimming
      link_index = [[0, 0], [1, 2]]   optional links to score (user row; item row), here user 7 ->
      link_label = [1., 0.]           video 9 (a history edge, absent from edge_index) and a negative
      csr[("user", "watches", "video")]   optional (RelationCSR): where each destination's edges
                start, and per hop the transpose, built in the workers for a sparse-product GNN

A model sees the three inputs apart, as TorchRec's ``DLRM.forward(dense_features,
sparse_features)`` does (:class:`~torchrec_gnn.models.graph_dlrm.GraphDLRM` takes
``graph_features`` third, a graph tower takes it alone); only the training wrapper sees the
whole batch. Built in DataLoader workers (:class:`torchrec_gnn.data.loader.GraphBatchBuilder`),
never in a model's forward: the TorchRec train pipeline can then copy it to the device and
start the node tables' input distribution (``batch.graph_features.node_ids``) ahead of the
forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Sequence

import torch
from torchrec.datasets.utils import Batch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor
from torchrec.streamable import Pipelineable

from torchrec_gnn.graph.csr import destination_pointers, transpose_pointers
from torchrec_gnn.typing import EdgeType, NodeType


def node_id_bags(node_types: List[NodeType], nodes: List[torch.Tensor]) -> KeyedJaggedTensor:
    """The node tables' input: ``nodes[i]`` (N_t,) global ids of type ``node_types[i]`` as bags
    of one id each, padded with empty bags to the stride max_t N_t.

    Pooled one-id bags give each node its own row, as a sequence lookup would, but train
    through fbgemm's pooled backward, which on CPU is several times faster than its sequence
    (no-bag) backward for the same rows (``benchmarks/bench_step.py`` shows the op).
    """
    counts = torch.tensor([n.numel() for n in nodes], dtype=torch.int64)
    stride = max(int(counts.max()) if len(nodes) else 0, 1)
    lengths = (torch.arange(stride) < counts.unsqueeze(1)).to(torch.int32)  # (T, stride): 1 then 0
    values = torch.cat(nodes) if nodes else torch.empty(0, dtype=torch.int64)
    return KeyedJaggedTensor(keys=list(node_types), values=values, lengths=lengths.flatten(), stride=stride)


@dataclass
class RelationCSR:
    """One relation's sampled edges in CSR form, with the transposes a mean aggregation's
    backward multiplies by: built in the loader's workers (``GraphBatchBuilder(csr=True)``, as
    PyG's ``ToSparseTensor`` transform builds ``adj_t`` in the data pipeline), so the training
    step neither counts nor sorts edges (:meth:`torchrec_gnn.modules.gnn.HeteroSAGE.adjacency`).

    The edges are grouped by destination, hop by hop, so the first h hops' edges are a prefix
    of ``edge_index`` (E_h edges): their (M_h, N_h) matrix, M_h destinations within h - 1 hops
    of a seed and N_h sources within h hops, is ``crow[: M_h + 1]`` over ``edge_index[0][: E_h]``.

    Args:
        crow (Tensor): (N_dst + 1,) int64: destination j's edges are
            ``edge_index[:, crow[j] : crow[j + 1]]``.
        crow_t (List[Tensor]): per h = 1..H, (N_h + 1,) int64: where each source's entries
            start in ``col_t[h - 1]``.
        col_t (List[Tensor]): per h, (E_h,) int64 destination of each of the first E_h edges,
            grouped by source, in ascending order.
    """

    crow: torch.Tensor
    crow_t: List[torch.Tensor]
    col_t: List[torch.Tensor]

    @staticmethod
    def from_sample(edge_index: torch.Tensor, num_sampled_edges: Sequence[int], src_per_hop: Sequence[int],
                    dst_per_hop: Sequence[int]) -> "RelationCSR":
        """The arrays of a relation's sampled edges.

        Args:
            edge_index (Tensor): (2, E) int64 local ``[source; destination]``, grouped by
                destination hop by hop (as :class:`~torchrec_gnn.graph.sampler.NeighborSampler`
                emits them).
            num_sampled_edges (Sequence[int]): E_h per hop h = 1..H.
            src_per_hop (Sequence[int]): nodes of the source type first reached at each hop
                (hop 0 = seeds; H + 1 entries).
            dst_per_hop (Sequence[int]): the same for the destination type.

        Raises:
            ValueError: edges not grouped by destination hop by hop, or ids out of range.
        """
        row = edge_index[0]
        crow, grouped = destination_pointers(edge_index, sum(src_per_hop), sum(dst_per_hop))  # checks the ids
        if grouped.data_ptr() != row.data_ptr():  # it had to sort them
            raise ValueError("RelationCSR: edge_index must be grouped by destination, hop by hop, as the sampler emits it")
        crow_t, col_t = [], []
        hops = len(num_sampled_edges)
        for h in range(1, hops + 1):
            edges, sources, destinations = sum(num_sampled_edges[:h]), sum(src_per_hop[: h + 1]), sum(dst_per_hop[:h])
            prefix = row[:edges]
            # Every source is below sum(src_per_hop) (checked above): the last hop needs no second look.
            if int(crow[destinations]) != edges or (h < hops and edges and int(prefix.max()) >= sources):
                raise ValueError(f"RelationCSR: the first {h} hop(s)' {edges} edges must end at the {destinations} "
                                 f"destinations and start at the {sources} sources within {h - 1} and {h} hops")
            t_crow, t_col = transpose_pointers(crow[: destinations + 1], prefix, sources)
            crow_t.append(t_crow)
            col_t.append(t_col)
        return RelationCSR(crow, crow_t, col_t)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "RelationCSR":
        """The same arrays through ``fn`` (a device move, pinning)."""
        return RelationCSR(fn(self.crow), [fn(x) for x in self.crow_t], [fn(x) for x in self.col_t])

    def tensors(self) -> List[torch.Tensor]:
        """Every array (for ``record_stream``)."""
        return [self.crow, *self.crow_t, *self.col_t]


def pack_csr(csr: Dict[EdgeType, RelationCSR]) -> Dict[EdgeType, RelationCSR]:
    """The same arrays as views of one tensor: a batch that crosses from a loader worker then
    moves one shared-memory block instead of one per array (5 arrays per relation, 80 for the
    default graph, halved the loader's delivery rate)."""
    arrays = [t for c in csr.values() for t in c.tensors()]
    if not arrays:
        return csr
    views = iter(torch.cat(arrays).split([t.numel() for t in arrays]))
    packed = {}
    for et, c in csr.items():
        crow = next(views)
        packed[et] = RelationCSR(crow, [next(views) for _ in c.crow_t], [next(views) for _ in c.col_t])
    return packed


@dataclass
class GraphFeatures(Pipelineable):
    """The graph input of B examples: their sampled subgraph and where each example sits in it
    (see the module docstring for a picture).

    Args:
        node_ids (KeyedJaggedTensor): one key per node type, the global ids of the subgraph's
            nodes, seeds first, one id per bag (:func:`node_id_bags`).
        edge_index (Dict[EdgeType, Tensor]): (2, E_r) int64 local ``[source; destination]``
            indices into ``node_ids[src]`` and ``node_ids[dst]``.
        user_index (Tensor): (B,) int64 row of each example's user in ``node_ids[user_type]``.
        item_index (Tensor): (B,) int64 row of each example's item in ``node_ids[item_type]``.
        num_sampled_nodes (Dict[str, List[int]]): nodes added per hop, hop 0 = seeds.
        num_sampled_edges (Dict[EdgeType, List[int]]): edges added per hop.
        node_features (Dict[str, Tensor]): (N_t, F_t) dense side features of the sampled
            nodes of each type that has them (empty dict when none).
        link_index (Tensor): (2, L) int64 local ``[user row; item row]`` pairs for the edge
            objective (edge-level sampling; held out of ``edge_index``), (2, 0) when none.
        link_label (Tensor): (L,) float32, 1 for a held-out edge, 0 for a negative.
        csr (Dict[EdgeType, RelationCSR]): each relation's edges in CSR form with their
            transposes, when the loader built them (empty dict when not: the GNN then builds
            what it needs).
    """

    node_ids: KeyedJaggedTensor
    edge_index: Dict[EdgeType, torch.Tensor]
    user_index: torch.Tensor
    item_index: torch.Tensor
    num_sampled_nodes: Dict[NodeType, List[int]] = field(default_factory=dict)
    num_sampled_edges: Dict[EdgeType, List[int]] = field(default_factory=dict)
    node_features: Dict[NodeType, torch.Tensor] = field(default_factory=dict)
    link_index: torch.Tensor = field(default_factory=lambda: torch.empty(2, 0, dtype=torch.int64))
    link_label: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    csr: Dict[EdgeType, RelationCSR] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.user_index.shape != self.item_index.shape or self.user_index.dim() != 1:
            raise ValueError(f"GraphFeatures: user_index and item_index must both be (B,), got "
                             f"{tuple(self.user_index.shape)} and {tuple(self.item_index.shape)}")
        if self.link_index.dim() != 2 or self.link_index.shape[0] != 2 or self.link_index.shape[1] != self.link_label.numel():
            raise ValueError(f"GraphFeatures: link_index must be (2, L) with L = len(link_label), got "
                             f"{tuple(self.link_index.shape)} and {self.link_label.numel()} labels")
        stray = [et for et in self.csr if et not in self.edge_index]
        if stray or any(len(c.crow_t) != len(c.col_t) for c in self.csr.values()):
            raise ValueError(f"GraphFeatures: csr must hold, for relations of edge_index, as many crow_t as col_t "
                             f"(one per hop); relations without edges: {stray}")
        if self.node_ids.lengths().numel() and int(self.node_ids.lengths().max()) > 1:
            raise ValueError("GraphFeatures: node_ids must hold one id per bag (see node_id_bags), got a bag of "
                             f"{int(self.node_ids.lengths().max())}")

    @property
    def batch_size(self) -> int:
        """B, the number of examples."""
        return self.user_index.shape[0]

    @property
    def num_nodes(self) -> Dict[NodeType, int]:
        """N_t, the sampled node count of each node type."""
        return dict(zip(self.node_ids.keys(), self.node_ids.length_per_key()))

    def global_ids(self, node_type: NodeType, rows: torch.Tensor) -> torch.Tensor:
        """Global ids of the subgraph's ``rows`` (any shape, int64) of ``node_type``; e.g. each
        example's user: ``global_ids(user_type, user_index)`` (B,)."""
        return self.node_ids[node_type].values()[rows]

    def _map(self, fn_tensor: Callable, fn_kjt: Callable) -> "GraphFeatures":
        return GraphFeatures(
            node_ids=fn_kjt(self.node_ids),
            edge_index={et: fn_tensor(e) for et, e in self.edge_index.items()},
            user_index=fn_tensor(self.user_index),
            item_index=fn_tensor(self.item_index),
            num_sampled_nodes=self.num_sampled_nodes,
            num_sampled_edges=self.num_sampled_edges,
            node_features={t: fn_tensor(x) for t, x in self.node_features.items()},
            link_index=fn_tensor(self.link_index),
            link_label=fn_tensor(self.link_label),
            csr={et: c.map(fn_tensor) for et, c in self.csr.items()},
        )

    def to(self, device: torch.device, non_blocking: bool = False) -> "GraphFeatures":
        move = lambda x: x.to(device=device, non_blocking=non_blocking)  # noqa: E731
        return self._map(move, move)

    def pin_memory(self) -> "GraphFeatures":
        pin = lambda x: x.pin_memory()  # noqa: E731
        return self._map(pin, pin)

    def record_stream(self, stream: torch.Stream) -> None:
        self.node_ids.record_stream(stream)
        for tensor in (self.user_index, self.item_index, self.link_index, self.link_label,
                       *self.edge_index.values(), *self.node_features.values(),
                       *(t for c in self.csr.values() for t in c.tensors())):
            tensor.record_stream(stream)


@dataclass
class GraphBatch(Batch):
    """TorchRec ``Batch`` fields plus the examples' graph input.

    Args:
        dense_features (Tensor): (B, F) float32.
        sparse_features (KeyedJaggedTensor): ranker sparse features, B rows per key.
        labels (Tensor): (B, T) float32, 0 where missing.
        label_mask (Tensor): (B, T) bool, True where the label is present.
        graph_features (GraphFeatures): the sampled subgraph, B examples' rows in it.
    """

    label_mask: torch.Tensor
    graph_features: GraphFeatures

    def __post_init__(self) -> None:
        b = self.dense_features.shape[0]
        fields = {
            "labels": self.labels.shape[0],
            "label_mask": self.label_mask.shape[0],
            "graph_features (user_index)": self.graph_features.batch_size,
            "sparse_features (stride)": self.sparse_features.stride() if self.sparse_features.keys() else b,
        }
        bad = {k: v for k, v in fields.items() if v != b}
        if bad:
            raise ValueError(f"GraphBatch: B={b} from dense_features, but these fields disagree: {bad}")

    @property
    def batch_size(self) -> int:
        """B, the number of examples."""
        return self.dense_features.shape[0]

    def _map(self, fn_tensor: Callable, fn_kjt: Callable, graph_features: GraphFeatures) -> "GraphBatch":
        return GraphBatch(
            dense_features=fn_tensor(self.dense_features),
            sparse_features=fn_kjt(self.sparse_features),
            labels=fn_tensor(self.labels),
            label_mask=fn_tensor(self.label_mask),
            graph_features=graph_features,
        )

    def to(self, device: torch.device, non_blocking: bool = False) -> "GraphBatch":
        move = lambda x: x.to(device=device, non_blocking=non_blocking)  # noqa: E731
        return self._map(move, move, self.graph_features.to(device, non_blocking))

    def pin_memory(self) -> "GraphBatch":
        pin = lambda x: x.pin_memory()  # noqa: E731
        return self._map(pin, pin, self.graph_features.pin_memory())

    def record_stream(self, stream: torch.Stream) -> None:
        for tensor in (self.dense_features, self.labels, self.label_mask):
            tensor.record_stream(stream)
        self.sparse_features.record_stream(stream)
        self.graph_features.record_stream(stream)

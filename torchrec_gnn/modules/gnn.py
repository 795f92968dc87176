"""Heterogeneous message passing over a sampled subgraph, or over the whole graph (PyG layers).

:class:`HeteroGNN` is the stack (trimming, a history for the outer hop, layer-wise full-graph
inference); each conv family is a subclass that says how one relation's conv is built, as in
PyG's ``nn/models/basic_gnn.py``: :class:`HeteroSAGE`, :class:`HeteroGAT`, :class:`HeteroLightGCN`.
:meth:`HeteroGNN.from_config` picks the family from ``GNNConfig.conv``.

Notation: N_t sampled nodes of type t, E_r sampled edges of relation r, D input channels,
H hidden channels, C destination nodes per inference chunk.
"""

from __future__ import annotations

import functools
from typing import ClassVar, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch_geometric.nn import GATConv, MessagePassing
from torch_geometric.utils import degree
from tqdm import tqdm

from torchrec_gnn.data.batch import RelationCSR
from torchrec_gnn.graph.csr import destination_pointers
from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.modules.aggregation import Adjacency, CSRAdjacency, CSRSAGEConv, csr_ones, sum_sage_convs
from torchrec_gnn.modules.config import GNNConfig
from torchrec_gnn.modules.history import HistoricalEmbeddings, history_inputs
from torchrec_gnn.modules.utils import IntegerMaskDropout
from torchrec_gnn.typing import EdgeType, NodeType, edge_type_str


class LightGCNConv(MessagePassing):
    """LightGCN propagation (He et al. 2020, https://arxiv.org/abs/2002.02126) for one relation.

    ``out[j] = sum_{i -> j} x[i] / sqrt(deg_out(i) * deg_in(j))`` with degrees counted in the
    given edges (a sampled subgraph), or ``deg_out`` given (the full graph's, when the edges are
    only a chunk of the destinations). No parameters.
    """

    def __init__(self) -> None:
        super().__init__(aggr="sum")

    def forward(self, x: Tuple[torch.Tensor, torch.Tensor], edge_index: torch.Tensor,
                src_degree: Optional[torch.Tensor] = None) -> torch.Tensor:
        """
        Args:
            x (Tuple[Tensor, Tensor]): source (N_src, D) and destination (N_dst, D) features.
            edge_index (Tensor): (2, E) local ``[source; destination]``.
            src_degree (Tensor, optional): (N_src,) out-degree of every source; default:
                counted in ``edge_index``.

        Returns:
            Tensor: (N_dst, D).
        """
        src, dst = x
        if src_degree is None:
            src_degree = degree(edge_index[0], src.shape[0], dtype=src.dtype)
        deg_out = src_degree.to(src.dtype).clamp(min=1)
        deg_in = degree(edge_index[1], dst.shape[0], dtype=src.dtype).clamp(min=1)
        norm = (deg_out[edge_index[0]] * deg_in[edge_index[1]]).rsqrt()
        return self.propagate(edge_index, x=(src, dst), norm=norm)

    def message(self, x_j: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
        return norm.unsqueeze(-1) * x_j


class RelationInput(NamedTuple):
    """One relation's part of a layer for its destination type (:meth:`HeteroGNN.sum_relations`)."""

    conv: MessagePassing  # the relation's conv in this layer
    x_src: torch.Tensor  # (N_src, D_l) source features
    edges: Adjacency  # what the conv reads as edges (HeteroGNN.adjacency)
    extra: Dict[str, torch.Tensor]  # extra conv arguments (src_degree)


class HeteroGNN(nn.Module):
    """A stack of per-relation convs over every relation of the graph, summed per destination
    type (the base of :class:`HeteroSAGE`, :class:`HeteroGAT` and :class:`HeteroLightGCN`;
    subclasses implement :meth:`init_conv`).

    Between layers every node type gets a root (self) transform, LayerNorm, ReLU and dropout,
    unless the family has no weights of its own (``node_transforms = False``).

    Args:
        node_types (Sequence[str]): node types of the graph.
        edge_types (Sequence[EdgeType]): relations ``(src, rel, dst)``; include reverse
            relations so that every node type receives messages.
        in_channels (int): D, input width (the node tables' embedding dim).
        config (GNNConfig): layer sizes (``config.conv`` names the family; see :meth:`from_config`).
        out_node_types (Sequence[str], optional): node types whose output is used (the
            examples' user and item types). The last layer then only runs the relations that
            end at them, which saves work and leaves no parameter without a gradient (DDP
            requires that). Default: all node types.

    Example::

        gnn = HeteroGNN.from_config(["user", "video"], [("user", "watches", "video"),
                                    ("video", "rev_watches", "user")], in_channels=16, config=GNNConfig())
        h_dict = gnn(x_dict, edge_index_dict)
    """

    conv_name: ClassVar[str] = ""  # the family's GNNConfig.conv
    reads_csr: ClassVar[bool] = False  # its adjacency() reads a batch's prebuilt CSR (GraphBatchBuilder(csr=True))
    node_transforms: ClassVar[bool] = True  # root transform, norm, activation and dropout between layers

    @staticmethod
    def from_config(node_types: Sequence[NodeType], edge_types: Sequence[EdgeType], in_channels: int,
                    config: GNNConfig, out_node_types: Optional[Sequence[NodeType]] = None) -> "HeteroGNN":
        """The family ``config.conv`` names, built with these arguments."""
        return GNN_FAMILIES[config.conv](node_types, edge_types, in_channels, config, out_node_types)

    def __init__(
        self,
        node_types: Sequence[NodeType],
        edge_types: Sequence[EdgeType],
        in_channels: int,
        config: GNNConfig,
        out_node_types: Optional[Sequence[NodeType]] = None,
    ) -> None:
        super().__init__()
        if config.conv != self.conv_name:
            raise ValueError(f"{type(self).__name__} is the {self.conv_name!r} family, but config.conv is "
                             f"{config.conv!r}; use HeteroGNN.from_config to pick the family from the config")
        self.node_types = list(node_types)
        self.out_node_types = list(out_node_types) if out_node_types is not None else list(node_types)
        unknown = [t for t in self.out_node_types if t not in self.node_types]
        if unknown:
            raise ValueError(f"HeteroGNN: out_node_types {unknown} are not among node_types {self.node_types}")
        self.edge_types = [tuple(et) for et in edge_types]
        receivers = {et[2] for et in self.edge_types}
        deaf = [t for t in self.node_types if t not in receivers]
        if deaf:
            raise ValueError(
                f"HeteroGNN: node types {deaf} receive no messages (no relation ends at them); "
                "add reverse relations (HeteroGraph.from_edges(add_reverse=True))"
            )
        self.in_channels = in_channels
        self.config = config
        hidden = config.hidden_channels
        # convs[l][edge_type_str(et)]: relation et's conv in layer l (the last layer has only the
        # relations ending at out_node_types).
        self.convs = nn.ModuleList()
        # One root (self) transform per node type and layer instead of one per relation:
        # sum_r W_r x equals (sum_r W_r) x, so this is the same model family at a fraction of the
        # matmuls (a type receiving from 6 relations ran 6 root projections per layer).
        self.roots = nn.ModuleList()
        for layer in range(config.num_layers):
            width = in_channels if layer == 0 else hidden
            last = layer == config.num_layers - 1
            relations = [et for et in self.edge_types if not last or et[2] in self.out_node_types]
            self.convs.append(nn.ModuleDict({edge_type_str(et): self.init_conv(width) for et in relations}))
            if self.node_transforms:
                layer_receivers = self.out_node_types if last else self.node_types
                self.roots.append(nn.ModuleDict({t: nn.Linear(width, hidden, bias=False) for t in layer_receivers}))
        self.readout = self.init_readout()
        self.norms = nn.ModuleList(
            nn.ModuleDict({t: nn.LayerNorm(hidden) for t in self.node_types})
            for _ in range(config.num_layers - 1 if config.norm == "layer" and self.node_transforms else 0)
        )
        self.dropout = IntegerMaskDropout(config.dropout)
        self.history: Optional[HistoricalEmbeddings] = None
        self.reset_parameters()

    def init_conv(self, width: int) -> MessagePassing:
        """One relation's conv reading ``width`` channels (the family's choice)."""
        raise NotImplementedError(f"{type(self).__name__}.init_conv; use HeteroGNN.from_config or a family subclass")

    def init_readout(self) -> Optional[nn.Module]:
        """A learned map from the combined layer outputs to the output (:meth:`combine`); none
        by default."""
        return None

    def adjacency(self, edge_index: torch.Tensor, num_src: int, num_dst: int, dtype: torch.dtype,
                  csr: Optional[RelationCSR] = None, hops: int = 1) -> Adjacency:
        """What a relation's conv reads as its edges: the (2, E) ``edge_index`` itself unless the
        family aggregates by sparse matrix product (:class:`HeteroSAGE`), which reads the
        batch's prebuilt ``csr`` of the first ``hops`` hops when given."""
        return edge_index

    def add_history(self, num_nodes: Mapping[NodeType, int], device: Optional[torch.device] = None) -> HistoricalEmbeddings:
        """Give the last layer a history of its inputs for every node (``num_nodes[t]`` = N_t;
        :mod:`torchrec_gnn.modules.history`): from then on :meth:`forward` takes samples one hop
        short and needs ``node_ids``. Returns the (empty) history; fill it before the first
        forward pass (``torchrec_gnn.train.sharding.refresh_history``)."""
        self.history = HistoricalEmbeddings(num_nodes, self.last_layer_in_channels, device)
        return self.history

    @property
    def out_channels(self) -> int:
        return self.config.hidden_channels

    @property
    def last_layer_in_channels(self) -> int:
        """Width of the last layer's input (the width a history of it holds)."""
        return self.in_channels if self.num_layers == 1 else self.config.hidden_channels

    @property
    def num_layers(self) -> int:
        return len(self.convs)

    def reset_parameters(self) -> None:
        for convs in self.convs:
            for conv in convs.values():
                conv.reset_parameters()
        for roots in self.roots:
            for root in roots.values():
                root.reset_parameters()
        for norms in self.norms:
            for norm in norms.values():
                norm.reset_parameters()
        if self.readout is not None:
            self.readout.reset_parameters()

    def shared_parameters(self) -> List[nn.Parameter]:
        """The last layer with weights: the shared layer every loss reaches (GradNorm)."""
        return [p for module in (self.convs[-1], self.roots[-1]) for p in module.parameters() if p.requires_grad]

    def forward(
        self,
        x_dict: Dict[NodeType, torch.Tensor],
        edge_index_dict: Dict[EdgeType, torch.Tensor],
        num_sampled_nodes: Optional[Dict[NodeType, List[int]]] = None,
        num_sampled_edges: Optional[Dict[EdgeType, List[int]]] = None,
        node_ids: Optional[Dict[NodeType, torch.Tensor]] = None,
        csr: Optional[Mapping[EdgeType, RelationCSR]] = None,
    ) -> Dict[NodeType, torch.Tensor]:
        """
        Args:
            x_dict (Dict[str, Tensor]): (N_t, D) input features per node type.
            edge_index_dict (Dict[EdgeType, Tensor]): (2, E_r) local edges per relation.
            num_sampled_nodes (Dict[str, List[int]], optional): per-hop node counts, for trimming.
            num_sampled_edges (Dict[EdgeType, List[int]], optional): per-hop edge counts.
            node_ids (Dict[str, Tensor], optional): (N_t,) global ids of the sampled nodes; needed
                with a history (:meth:`add_history`): the sample then has ``num_layers - 1``
                hops, the hop-1 nodes' last-layer inputs are read from the history and (in
                training mode) the seeds' are written to it.
            csr (Mapping[EdgeType, RelationCSR], optional): the sample's edges in CSR form with
                their transposes, built in the loader's workers; families that aggregate by
                sparse products (:class:`HeteroSAGE`) read them instead of building them.

        Returns:
            Dict[str, Tensor]: (N'_t, H) for each of ``out_node_types``; with trimming N'_t is
            the number of seeds, without it every node (the seeds' rows first).
        """
        edge_index_dict = {et: edge_index_dict[et] for et in self.edge_types}
        trim = self.config.trim and num_sampled_nodes is not None and num_sampled_edges is not None
        history = self.history
        if history is not None and (not trim or node_ids is None):
            raise ValueError("HeteroGNN: a history needs trimming (config.trim and per-hop counts) and node_ids")
        # With a history the sample stops one hop short: the layers before the last see L - 1 hops.
        sampled_hops = self.num_layers - (history is not None)
        layers: List[Dict[NodeType, torch.Tensor]] = [x_dict]
        for layer in range(self.num_layers):
            x_dst_dict = None
            if history is not None and layer == self.num_layers - 1:
                x_dict = history_inputs(
                    history, x_dict, node_ids, {t: num_sampled_nodes[t][0] for t in x_dict},
                    {t: num_sampled_nodes[t][1] for t in x_dict}, push=self.training,
                )
            if trim:
                # Layer l reads nodes within L - l hops of a seed and writes only those within
                # L - l - 1 hops, through the edges of the first L - l hops (seeds first, hop by
                # hop, as the sampler orders them): the last layer writes the seeds' rows alone.
                hops = max(sampled_hops - layer, 1)
                x_dst_dict = {t: x[: sum(num_sampled_nodes[t][:hops])] for t, x in x_dict.items()}
                edge_index_dict = {
                    et: e[:, : sum(num_sampled_edges[et][:hops])] for et, e in edge_index_dict.items()
                }
            prebuilt = None if csr is None else (csr, hops if trim else sampled_hops)
            x_dict = self.layer_forward(layer, x_dict, edge_index_dict, x_dst_dict, prebuilt=prebuilt)
            layers.append(x_dict)
        rows = {t: x_dict[t].shape[0] for t in self.out_node_types}
        return self.combine({t: [h[t][: rows[t]] for h in layers] for t in rows})

    def combine(self, layer_outputs: Dict[NodeType, List[torch.Tensor]]) -> Dict[NodeType, torch.Tensor]:
        """The output from every layer's (the input first, rows trimmed to the last layer's):
        by default the last layer's output (N_t, H)."""
        return {t: hs[-1] for t, hs in layer_outputs.items()}

    def layer_forward(
        self,
        layer: int,
        x_dict: Dict[NodeType, torch.Tensor],
        edge_index_dict: Dict[EdgeType, torch.Tensor],
        x_dst_dict: Optional[Dict[NodeType, torch.Tensor]] = None,
        src_degree_dict: Optional[Dict[EdgeType, torch.Tensor]] = None,
        prebuilt: Optional[Tuple[Mapping[EdgeType, RelationCSR], int]] = None,
    ) -> Dict[NodeType, torch.Tensor]:
        """Layer ``layer`` alone: the sampled forward pass and :meth:`inference` both run it.

        Args:
            layer (int): which layer.
            x_dict (Dict[str, Tensor]): (N_t, D_l) source features per node type.
            edge_index_dict (Dict[EdgeType, Tensor]): (2, E_r) edges, row indexing the source
                features and col the destination features; relations this layer does not
                have (the last layer only has those ending at ``out_node_types``) are ignored.
            x_dst_dict (Dict[str, Tensor], optional): (M_t, D_l) destination features when they
                differ from the sources (a chunk of destination nodes); default ``x_dict``.
            src_degree_dict (Dict[EdgeType, Tensor], optional): (N_src,) out-degree of every
                source per relation (:meth:`full_graph_degrees`), given to convs that
                normalise by it; default: none.
            prebuilt (Tuple[Mapping[EdgeType, RelationCSR], int], optional): the batch's CSR
                arrays and the hops whose edges ``edge_index_dict`` holds, for :meth:`adjacency`.

        Returns:
            Dict[str, Tensor]: (M_t, H) for every node type some relation ends at.
        """
        x_dst_dict = x_dict if x_dst_dict is None else x_dst_dict
        degrees = src_degree_dict or {}
        convs = self.convs[layer]
        relations: Dict[NodeType, List[RelationInput]] = {}
        for et in self.edge_types:  # the relations in a fixed order, summed in that order
            key = edge_type_str(et)
            if key in convs and et in edge_index_dict:
                src, _, dst = et
                x_src = x_dict[src]
                csr, hops = (prebuilt[0][et], prebuilt[1]) if prebuilt is not None and et in prebuilt[0] else (None, 1)
                edges = self.adjacency(edge_index_dict[et], x_src.shape[0], x_dst_dict[dst].shape[0], x_src.dtype,
                                       csr, hops)
                extra = {"src_degree": degrees[et]} if et in degrees else {}
                relations.setdefault(dst, []).append(RelationInput(convs[key], x_src, edges, extra))
        out = {dst: self.sum_relations(layer, dst, x_dst_dict[dst], inputs) for dst, inputs in relations.items()}
        if self.node_transforms and layer < self.num_layers - 1:
            if self.norms:
                out = {t: self.norms[layer][t](h) for t, h in out.items()}
            out = {t: self.dropout(h.relu()) for t, h in out.items()}
        return out

    def sum_relations(self, layer: int, dst: NodeType, x_dst: torch.Tensor,
                      relations: Sequence[RelationInput]) -> torch.Tensor:
        """Layer ``layer``'s output for destination type ``dst`` before its norm, activation and
        dropout: the sum of its relations' conv outputs (in the given order) plus its root
        transform (families with node transforms). ``x_dst`` (M_t, D_l); returns (M_t, H)."""
        # Summed one addition at a time (a stacked copy of every message cost more).
        out = functools.reduce(torch.add, [r.conv((r.x_src, x_dst), r.edges, **r.extra) for r in relations])
        return out + self.roots[layer][dst](x_dst) if self.node_transforms else out

    def full_graph_degrees(self, graph: HeteroGraph, like: torch.Tensor) -> Optional[Dict[EdgeType, torch.Tensor]]:
        """What :meth:`inference` hands every layer as ``src_degree_dict``: None unless the
        family normalises by source degrees."""
        return None

    @torch.no_grad()
    def inference(
        self,
        x_dict: Mapping[NodeType, torch.Tensor],
        graph: HeteroGraph,
        chunk_size: int = 8192,
        progress: bool = True,
        num_layers: Optional[int] = None,
    ) -> Dict[NodeType, torch.Tensor]:
        """Layer-wise full-graph inference (PyG's ``BasicGNN.inference``): every node's
        embedding without sampling, in eval mode (no dropout).

        Instead of an L-hop neighbourhood per node, layer ``l`` runs once over *all* nodes with
        *all* their neighbours, in chunks of C destination nodes, before layer ``l + 1`` starts:
        each edge is touched once per layer, O(L * E) instead of the L-hop fan-in of sampling.

        Args:
            x_dict (Mapping[str, Tensor]): (N_t, D) input features of every node of every type.
            graph (HeteroGraph): the graph (relations must include the GNN's).
            chunk_size (int): C, destination nodes per step (bounds the memory of one step to the
                edges of C nodes). Default 8192.
            progress (bool): show a progress bar over layers and chunks. Default True.
            num_layers (int, optional): run only the first ``num_layers`` layers (fewer than the
                GNN's: the last layer's input of every node, for its history). Default: all.

        Returns:
            Dict[str, Tensor]: (N_t, H) for every type of ``out_node_types``; with fewer
            ``num_layers`` than the GNN's, that layer's output for every node type. The result
            does not depend on ``chunk_size``.
        """
        if chunk_size < 1:
            raise ValueError(f"HeteroGNN.inference: chunk_size must be >= 1, got {chunk_size}")
        num_layers = self.num_layers if num_layers is None else num_layers
        if not 1 <= num_layers <= self.num_layers:
            raise ValueError(f"HeteroGNN.inference: num_layers must be in [1, {self.num_layers}], got {num_layers}")
        missing = [et for et in self.edge_types if et not in set(graph.edge_types)]
        if missing:
            raise ValueError(f"HeteroGNN.inference: the graph lacks the GNN's relations {missing}")
        was_training = self.training
        self.eval()
        x = dict(x_dict)
        device = next(iter(x.values())).device
        layer_outputs: Dict[NodeType, List[torch.Tensor]] = {t: [x[t]] for t in self.out_node_types}
        src_degree = self.full_graph_degrees(graph, next(iter(x.values())))
        receivers = [self.out_node_types if layer == self.num_layers - 1 else self.node_types for layer in range(num_layers)]
        total = sum(-(-graph.num_nodes[t] // chunk_size) for types in receivers for t in types)
        bar = tqdm(total=total, desc="layer-wise inference", disable=not progress, dynamic_ncols=True)
        for layer in range(num_layers):
            out: Dict[NodeType, torch.Tensor] = {}
            for t in receivers[layer]:
                rows = []
                for start in range(0, graph.num_nodes[t], chunk_size):
                    stop = min(start + chunk_size, graph.num_nodes[t])
                    edges = {et: chunk_edge_index(graph, et, start, stop).to(device)
                             for et in self.edge_types if et[2] == t and edge_type_str(et) in self.convs[layer]}
                    rows.append(self.layer_forward(layer, x, edges, {t: x[t][start:stop]}, src_degree)[t])
                    bar.update(1)
                out[t] = torch.cat(rows)
            x = out
            for t in layer_outputs:
                layer_outputs[t].append(x[t])
        bar.close()
        self.train(was_training)
        return x if num_layers < self.num_layers else self.combine(layer_outputs)

    def __repr__(self) -> str:
        cfg = self.config
        return (
            f"{self.__class__.__name__}(conv={cfg.conv}, {self.in_channels} -> {cfg.hidden_channels}, "
            f"num_layers={cfg.num_layers}, node_types={len(self.node_types)}, relations={len(self.edge_types)})"
        )


class HeteroSAGE(HeteroGNN):
    """GraphSAGE per relation (mean aggregation; the root transform is the stack's, per node type)."""

    conv_name = "sage"
    reads_csr = True

    def init_conv(self, width: int) -> MessagePassing:
        return CSRSAGEConv((width, width), self.config.hidden_channels, root_weight=False)

    def sum_relations(self, layer: int, dst: NodeType, x_dst: torch.Tensor,
                      relations: Sequence[RelationInput]) -> torch.Tensor:
        """The relations' averages and the root transform in one matrix product
        (:func:`~torchrec_gnn.modules.aggregation.sum_sage_convs`): the same sum as
        :meth:`HeteroGNN.sum_relations`, with one (M_t, H) output per type instead of one per
        relation."""
        return sum_sage_convs(x_dst, self.roots[layer][dst], [(r.conv, r.x_src, r.edges) for r in relations])

    def adjacency(self, edge_index: torch.Tensor, num_src: int, num_dst: int, dtype: torch.dtype,
                  csr: Optional[RelationCSR] = None, hops: int = 1) -> Adjacency:
        """The relation as a (N_dst, N_src) CSR matrix of ones (PyG's ``adj_t``): SAGEConv then
        averages each destination's neighbours in one sparse-dense product instead of gathering
        an (E, D) message per edge and scattering it back, the same sums in the same edge order
        (edges sorted by destination, as the sampler emits them; others are sorted here, stably),
        forward and backward several times faster on CPU (the backward by
        :func:`~torchrec_gnn.modules.aggregation.sparse_mean`'s counting-sort transpose).

        With the batch's ``csr`` (built in the loader's workers) the matrix of the first ``hops``
        hops and its transpose are read from it: nothing is counted, checked or sorted here."""
        if csr is None:
            try:
                crow, col = destination_pointers(edge_index, num_src, num_dst)
            except ValueError as err:
                raise ValueError(f"{type(self).__name__}: {err}") from None
            return csr_ones(crow, col, (num_dst, num_src), dtype)
        if hops > len(csr.crow_t):
            raise ValueError(f"{type(self).__name__}: the batch's CSR holds {len(csr.crow_t)} hop(s), this layer "
                             f"reads {hops} (was it built for these fanouts?)")
        crow, crow_t, col_t = csr.crow[: num_dst + 1], csr.crow_t[hops - 1], csr.col_t[hops - 1]
        if crow.numel() != num_dst + 1 or crow_t.numel() != num_src + 1 or col_t.numel() != edge_index.shape[1]:
            raise ValueError(f"{type(self).__name__}: the batch's CSR of {hops} hop(s) is for {crow_t.numel() - 1} "
                             f"sources, {col_t.numel()} edges and at most {csr.crow.numel() - 1} destinations, "
                             f"but this layer has {num_src} sources, {edge_index.shape[1]} edges and {num_dst} "
                             "destinations (was it built for these fanouts?)")
        return CSRAdjacency(csr_ones(crow, edge_index[0], (num_dst, num_src), dtype),
                            csr_ones(crow_t, col_t, (num_src, num_dst), dtype))


class HeteroGAT(HeteroGNN):
    """GATv1 attention per relation (``config.heads`` heads concatenated to H)."""

    conv_name = "gat"

    def init_conv(self, width: int) -> MessagePassing:
        heads = self.config.heads
        return GATConv((width, width), self.config.hidden_channels // heads, heads=heads, add_self_loops=False)


class HeteroLightGCN(HeteroGNN):
    """LightGCN (He et al. 2020): parameter-free normalised propagation; the output is a learned
    readout of the mean over the input and every layer's output. Full-graph inference
    normalises by the graph's true source degrees (training counts them within each sampled
    subgraph)."""

    conv_name = "lightgcn"
    node_transforms = False

    def init_conv(self, width: int) -> MessagePassing:
        return LightGCNConv()

    def init_readout(self) -> Optional[nn.Module]:
        # LightGCN has no weights of its own: a learned readout maps its output to H.
        return nn.Linear(self.in_channels, self.config.hidden_channels)

    @property
    def last_layer_in_channels(self) -> int:
        return self.in_channels

    def shared_parameters(self) -> List[nn.Parameter]:
        return [p for p in self.readout.parameters() if p.requires_grad]

    def combine(self, layer_outputs: Dict[NodeType, List[torch.Tensor]]) -> Dict[NodeType, torch.Tensor]:
        """The learned readout of the mean over the input and every layer's output, (N_t, D)
        each in ``layer_outputs[t]``; returns (N_t, H)."""
        return {t: self.readout(torch.stack(hs).mean(0)) for t, hs in layer_outputs.items()}

    def full_graph_degrees(self, graph: HeteroGraph, like: torch.Tensor) -> Optional[Dict[EdgeType, torch.Tensor]]:
        """Every source's out-degree per relation in the whole graph (a chunk holds every edge of
        its destinations but not every edge of their sources), in ``like``'s dtype and device."""
        return {
            et: torch.from_numpy(np.bincount(np.asarray(graph.csc(et).row), minlength=graph.num_nodes[et[0]])).to(like)
            for et in self.edge_types
        }


GNN_FAMILIES = {"sage": HeteroSAGE, "gat": HeteroGAT, "lightgcn": HeteroLightGCN}


def chunk_edge_index(graph: HeteroGraph, edge_type: EdgeType, start: int, stop: int) -> torch.Tensor:
    """All edges of ``edge_type`` that end at destination nodes ``start .. stop - 1``.

    Returns:
        Tensor: (2, E_chunk) int64; row = global source id, col = destination id - ``start``.
    """
    index = graph.csc(edge_type)
    lo, hi = int(index.colptr[start]), int(index.colptr[stop])
    src = torch.from_numpy(np.asarray(index.row[lo:hi], dtype=np.int64))
    degree_ = torch.from_numpy(np.diff(np.asarray(index.colptr[start : stop + 1], dtype=np.int64)))
    dst = torch.repeat_interleave(torch.arange(stop - start), degree_)
    return torch.stack([src, dst])

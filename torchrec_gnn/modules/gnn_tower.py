"""GNNTower: node tables (a TorchRec EmbeddingBagCollection) + heterogeneous GNN + GFAE.

The tower is split in two so TorchRec's train pipeline can overlap the node tables' input
distribution with the previous step:

* :class:`GNNTower` owns the ``EmbeddingBagCollection`` and feeds it ``graph_features.node_ids``
  (one id per bag, so each pooled row is one node's embedding) straight from the batch (the
  pattern the pipeline's tracer recognises);
* :class:`GraphEncoder` (no sharded children, so the pipeline treats it as a leaf) does all the
  tensor work: side-feature projection, GFAE masking, message passing, GFAE loss, and gathering
  each example's user and item rows.
"""

from __future__ import annotations

import abc
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple

import torch
import torch.fx
from torch import nn
from torch.autograd.profiler import record_function
from torchrec.modules.embedding_configs import PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedTensor

from torchrec_gnn.data.batch import GraphFeatures
from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.modules.fusion import InputFusionArch
from torchrec_gnn.modules.gfae import GFAE, EdgeDecoder
from torchrec_gnn.modules.gnn import HeteroGNN
from torchrec_gnn.modules.history import HistoricalEmbeddings
from torchrec_gnn.modules.utils import connected_zero
from torchrec_gnn.typing import NodeType


class _NodeRows(torch.autograd.Function):
    """The T blocks of D columns of (stride, T * D), each cut to its first N_t rows; the
    backward writes the T gradients into one (stride, T * D) tensor, zeros only in the padding."""

    @staticmethod
    def forward(ctx, values: torch.Tensor, rows: List[int]) -> Tuple[torch.Tensor, ...]:
        width = values.shape[1] // len(rows)
        ctx.shape, ctx.rows = values.shape, rows
        return tuple(values[:n, i * width : (i + 1) * width].contiguous() for i, n in enumerate(rows))

    @staticmethod
    def backward(ctx, *grads: Optional[torch.Tensor]) -> Tuple[torch.Tensor, None]:
        grad = next(g for g in grads if g is not None).new_empty(ctx.shape)
        width = ctx.shape[1] // len(ctx.rows)
        for i, (n, g) in enumerate(zip(ctx.rows, grads)):
            block = grad[:, i * width : (i + 1) * width]
            block[:n] = 0 if g is None else g
            block[n:] = 0
        return grad, None


def node_rows(
    pooled: KeyedTensor, num_nodes: Mapping[NodeType, int], frozen: bool = False
) -> Dict[NodeType, torch.Tensor]:
    """Each node type's rows of the node tables' pooled output.

    Args:
        pooled (KeyedTensor): (stride, T * D) the output of T node tables of width D, type t's
            N_t nodes in its first rows and empty bags (padding) after them.
        num_nodes (Mapping[str, int]): N_t per node type (``GraphFeatures.num_nodes``).
        frozen (bool): cut the rows off the autograd graph: no gradient reaches the tables
            (their fused backward and optimizer never run) nor the first layer's inputs.

    Returns:
        Dict[str, Tensor]: (N_t, D) per node type. Indexing the ``KeyedTensor`` by type instead
        gave each type a zeroed (stride, T * D) gradient, summed (7.1 ms of a training step's
        backward against 1.8 ms here, ``benchmarks/bench_step.py --profile``).
    """
    keys = pooled.keys()
    values = pooled.values().detach() if frozen else pooled.values()
    return dict(zip(keys, _NodeRows.apply(values, [num_nodes[t] for t in keys])))


torch.fx.wrap("node_rows")  # one call in the train pipeline's trace of GNNTower.forward


class GraphEmbeddings(NamedTuple):
    """What the tower gives the ranker.

    Attributes:
        user (Tensor): (B, H) graph embedding of each example's user.
        item (Tensor): (B, H) graph embedding of each example's item.
        gfae_loss (Tensor): scalar GFAE reconstruction loss (0 in eval mode or without GFAE).
        edge_loss (Tensor): scalar masked-edge loss over the batch's links (0 without links or
            without an edge decoder).
        link_logits (Tensor): (L,) scores of the batch's links (empty when none).
    """

    user: torch.Tensor
    item: torch.Tensor
    gfae_loss: torch.Tensor
    edge_loss: torch.Tensor
    link_logits: torch.Tensor

    def keyed(self, prefix: str = "graph") -> KeyedTensor:
        """The per-example embeddings in TorchRec's currency: a ``KeyedTensor`` with keys
        ``{prefix}_user`` and ``{prefix}_item``, (B, H) each (see :meth:`join` to add them to an
        ``EmbeddingBagCollection``'s output)."""
        return KeyedTensor.from_tensor_list([f"{prefix}_user", f"{prefix}_item"], [self.user, self.item])

    def join(self, pooled: KeyedTensor, prefix: str = "graph", projection: Optional[InputFusionArch] = None) -> KeyedTensor:
        """``pooled`` with the two graph embeddings as two more features: the input-level fusion
        for any model that consumes an ``EmbeddingBagCollection``'s output.

        Args:
            pooled (KeyedTensor): (B, sum of the F features' dims), the keys ``[f_1, ..., f_F]``.
            prefix (str): the graph keys are ``{prefix}_user`` and ``{prefix}_item``.
            projection (InputFusionArch, optional): maps each (B, H) embedding to the features'
                width D first, as GraphDLRM does; for interactions that treat every feature
                alike (FM, dot products), where raw GNN outputs of another width and scale
                fit badly (DeepFM on the synthetic data: README "Add the tower to your own model").

        Returns:
            KeyedTensor: keys ``[f_1, ..., f_F, {prefix}_user, {prefix}_item]``, values
            (B, sum of dims + 2H), or + 2D with ``projection``.

        Example::

            pooled = ebc(batch.sparse_features)                   # KeyedTensor of F features
            features = tower(batch.graph_features).join(pooled, projection=InputFusionArch(H, D))
        """
        embeddings = self
        if projection is not None:
            user, item = projection(self.user, self.item).unbind(dim=1)  # (B, D) each
            embeddings = self._replace(user=user, item=item)
        graph = embeddings.keyed(prefix)
        clash = [k for k in graph.keys() if k in pooled.keys()]
        if clash:
            raise ValueError(f"GraphEmbeddings.join: the pooled features already have keys {clash}; pick another prefix")
        if pooled.key_dim() != 1 or pooled.values().shape[0] != graph.values().shape[0]:
            raise ValueError(
                f"GraphEmbeddings.join: pooled values {tuple(pooled.values().shape)} (key_dim {pooled.key_dim()}) "
                f"do not match {graph.values().shape[0]} examples with features along dim 1"
            )
        return KeyedTensor(
            keys=pooled.keys() + graph.keys(),
            length_per_key=pooled.length_per_key() + graph.length_per_key(),
            values=torch.cat([pooled.values(), graph.values()], dim=1),
        )

    def aux_losses(self, names: List[str]) -> torch.Tensor:
        """(A,) the auxiliary losses ``names`` (a tower's :attr:`~GNNTower.aux_loss_names`), in order."""
        losses = {"gfae": self.gfae_loss, "edge": self.edge_loss}
        return torch.stack([losses[name] for name in names]) if names else self.user.new_zeros(0)


class GraphTowerInterface(abc.ABC, nn.Module):
    """What a ranker needs from a graph tower (in the manner of TorchRec's
    ``EmbeddingBagCollectionInterface``): per-example embeddings from a batch's
    :class:`~torchrec_gnn.data.batch.GraphFeatures`, their width,
    the auxiliary losses it computes and the layer GradNorm balances on.

    :class:`GNNTower` (end to end) and
    :class:`~torchrec_gnn.modules.frozen_tower.FrozenGraphTower` (two-stage: fixed exported
    embeddings) implement it; a ranker takes either.
    """

    @abc.abstractmethod
    def forward(self, graph_features: GraphFeatures) -> GraphEmbeddings:
        """
        Args:
            graph_features (GraphFeatures): B examples' subgraph (or what of it the tower reads).

        Returns:
            GraphEmbeddings: each example's user and item embedding (B, H) and the auxiliary losses.
        """

    @property
    @abc.abstractmethod
    def out_channels(self) -> int:
        """H, the width of the embeddings."""

    @property
    @abc.abstractmethod
    def aux_loss_names(self) -> List[str]:
        """The auxiliary losses :meth:`GraphEmbeddings.aux_losses` reads, in order."""

    @abc.abstractmethod
    def shared_parameters(self) -> List[nn.Parameter]:
        """GradNorm's shared layer in the tower; [] when it has no trainable parameter."""


class GraphEncoder(nn.Module):
    """Side features, GFAE masking, message passing and seed gathering.

    Args:
        gnn (HeteroGNN): the message-passing stack.
        user_type (str): node type of the examples' users.
        item_type (str): node type of the examples' items.
        gfae (GFAE, optional): the graph auto-encoder: masked features (active in training mode
            only) and, with its edge decoder, the masked-edge loss over the batch's links
            (``graph_features.link_index``: held-out edges and negatives).
        feature_channels (Mapping[str, int], optional): node type -> F_t for types whose dense
            side features (``graph_features.node_features[t]``, (N_t, F_t)) join the ID embedding
            through a linear projection. They are also that type's GFAE target.
    """

    def __init__(
        self,
        gnn: HeteroGNN,
        user_type: NodeType,
        item_type: NodeType,
        gfae: Optional[GFAE] = None,
        feature_channels: Optional[Mapping[NodeType, int]] = None,
    ) -> None:
        super().__init__()
        for t in (user_type, item_type):
            if t not in gnn.node_types:
                raise ValueError(f"GraphEncoder: node type {t!r} is not one of the GNN's {gnn.node_types}")
        if gfae is not None:
            unscored = [t for t in gfae.target_channels if t not in gnn.out_node_types]
            if unscored:
                raise ValueError(
                    f"GraphEncoder: GFAE targets {unscored} are not GNN outputs {gnn.out_node_types}; "
                    "reconstruct only output node types"
                )
        self.gnn = gnn
        self.user_type, self.item_type = user_type, item_type
        self.gfae = gfae
        self.feature_projection = nn.ModuleDict(
            {t: nn.Linear(f, gnn.in_channels) for t, f in (feature_channels or {}).items()}
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for projection in self.feature_projection.values():
            projection.reset_parameters()

    @property
    def out_channels(self) -> int:
        return self.gnn.out_channels

    @property
    def edge_decoder(self) -> Optional[EdgeDecoder]:
        """The GFAE's edge part, if on (it scores the batch's links)."""
        return None if self.gfae is None else self.gfae.edge_decoder

    @property
    def reconstructs_features(self) -> bool:
        """Whether the GFAE's feature part is on (the encoder then returns its loss)."""
        return self.gfae is not None and self.gfae.reconstructs_features

    def shared_parameters(self) -> List[nn.Parameter]:
        """GradNorm's shared layer: the GNN's last weighted layer."""
        return self.gnn.shared_parameters()

    def input_features(
        self, x_dict: Mapping[NodeType, torch.Tensor], node_features: Mapping[NodeType, torch.Tensor]
    ) -> Dict[NodeType, torch.Tensor]:
        """The GNN's input: node-table rows (N_t, D) plus the projected side features
        ``node_features[t]`` (N_t, F_t) of the types that have them."""
        inputs = dict(x_dict)
        for t, projection in self.feature_projection.items():
            inputs[t] = inputs[t] + projection(node_features[t])
        return inputs

    @property
    def history(self) -> Optional[HistoricalEmbeddings]:
        """The GNN's history of its last layer's inputs, if it has one (``HeteroGNN.add_history``:
        batches then hold one hop fewer; fill it with :meth:`history_rows`, or
        ``torchrec_gnn.train.sharding.refresh_history`` for a sharded tower)."""
        return self.gnn.history

    @torch.no_grad()
    def full_graph(
        self, tables: Mapping[NodeType, torch.Tensor], node_features: Mapping[NodeType, torch.Tensor],
        graph: HeteroGraph, chunk_size: int = 8192, progress: bool = False, num_layers: Optional[int] = None,
    ) -> Dict[NodeType, torch.Tensor]:
        """The node tables ``tables[t]`` (N_t, D) and side features ``node_features[t]``
        (N_t, F_t) through the GNN by layer-wise full-graph inference over ``graph`` (eval mode,
        no GFAE masking; :meth:`~torchrec_gnn.modules.gnn.HeteroGNN.inference`, whose
        ``num_layers`` stops early). Returns (N_t, H) per node type it computes."""
        device = next(iter(tables.values())).device
        x_dict = self.input_features(tables, {t: x.to(device) for t, x in node_features.items()})
        return self.gnn.inference(x_dict, graph, chunk_size, progress, num_layers)

    def history_rows(
        self, tables: Mapping[NodeType, torch.Tensor], node_features: Mapping[NodeType, torch.Tensor],
        graph: HeteroGraph, chunk_size: int = 8192,
    ) -> Dict[NodeType, torch.Tensor]:
        """What the history holds: every node's last-layer input, (N_t, H) per node type (the
        GNN's first L - 1 layers of :meth:`full_graph`)."""
        if self.history is None:
            raise ValueError("GraphEncoder.history_rows: this encoder has no history")
        return self.full_graph(tables, node_features, graph, chunk_size, num_layers=self.gnn.num_layers - 1)

    def forward(self, x_dict: Dict[NodeType, torch.Tensor], graph_features: GraphFeatures) -> GraphEmbeddings:
        """
        Args:
            x_dict (Dict[str, Tensor]): (N_t, D) node-table rows of the batch's sampled nodes,
                in ``graph_features.node_ids`` order; rows past N_t (padding bags) are dropped.
            graph_features (GraphFeatures): edges, per-hop counts, side features and seed rows.

        Returns:
            GraphEmbeddings: user and item embeddings (B, H), the GFAE and edge losses and the
            link logits (L,).
        """
        with record_function("## gnn_tower ##"):
            return self._encode(x_dict, graph_features)

    def _encode(self, x_dict: Dict[NodeType, torch.Tensor], graph: GraphFeatures) -> GraphEmbeddings:
        counts = {t: sum(c) for t, c in graph.num_sampled_nodes.items()} or graph.num_nodes
        x_dict = {t: x if x.shape[0] == counts[t] else x[: counts[t]] for t, x in x_dict.items()}
        targets = {t: graph.node_features.get(t, x.detach()) for t, x in x_dict.items()}
        inputs = self.input_features(x_dict, graph.node_features)
        use_gfae = self.gfae is not None and self.gfae.reconstructs_features and self.training
        if use_gfae:
            # Only rows whose final embedding is computed can be scored: the seeds when trimming.
            if self.gnn.config.trim:
                candidates = {t: graph.num_sampled_nodes[t][0] for t in inputs}
            else:
                candidates = {t: x.shape[0] for t, x in inputs.items()}
            inputs, masked = self.gfae.mask(inputs, candidates)
        node_ids = None if self.history is None else {t: graph.node_ids[t].values() for t in inputs}
        h_dict = self.gnn(inputs, graph.edge_index, graph.num_sampled_nodes, graph.num_sampled_edges, node_ids,
                          csr=graph.csr or None)
        zero = connected_zero(h_dict[self.user_type])
        gfae_loss = self.gfae.loss(h_dict, targets, masked) if use_gfae else zero
        link_logits, edge_loss = zero.reshape(1)[:0], zero
        decoder = self.edge_decoder
        if decoder is not None and graph.link_label.numel() > 0:
            users, items = graph.link_index
            link_logits = decoder(h_dict[self.user_type][users], h_dict[self.item_type][items])  # (L,)
            edge_loss = decoder.loss(link_logits, graph.link_label)
        return GraphEmbeddings(
            user=h_dict[self.user_type][graph.user_index],
            item=h_dict[self.item_type][graph.item_index],
            gfae_loss=gfae_loss,
            edge_loss=edge_loss,
            link_logits=link_logits,
        )


class GNNTower(GraphTowerInterface):
    """A drop-in TorchRec module: node tables + GNN, giving graph embeddings per example.

    Args:
        node_embeddings (EmbeddingBagCollection): one table per node type, each with
            ``feature_names=[node_type]``, sum pooling and the same embedding dim D; the batch
            gives it one id per bag (:func:`~torchrec_gnn.data.batch.node_id_bags`). DMP shards
            it like any other table (see ``torchrec_gnn.train.sharding``).
        encoder (GraphEncoder): everything after the lookup.
        freeze_node_tables (bool): keep the tables' rows as they are (a warm-started tower's
            pre-trained rows): no gradient flows into them, so the step skips their fused
            backward over every sampled node and the first layer's input gradients; the GNN,
            GFAE and edge decoder still train. Default False.

    Example::

        tables = EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name="t_user", num_embeddings=1000, embedding_dim=16, feature_names=["user"]),
            EmbeddingBagConfig(name="t_video", num_embeddings=500, embedding_dim=16, feature_names=["video"]),
        ])
        gnn = HeteroSAGE(graph.node_types, graph.edge_types, in_channels=16, config=GNNConfig())
        tower = GNNTower(tables, GraphEncoder(gnn, "user", "video"))
        graph_emb = tower(batch.graph_features)   # user (B, 64), item (B, 64), gfae_loss ()
    """

    def __init__(
        self, node_embeddings: EmbeddingBagCollection, encoder: GraphEncoder, freeze_node_tables: bool = False
    ) -> None:
        super().__init__()
        configs = node_embeddings.embedding_bag_configs()
        features = {f for config in configs for f in config.feature_names}
        missing = [t for t in encoder.gnn.node_types if t not in features]
        if missing:
            raise ValueError(
                f"GNNTower: node types {missing} have no table in the EmbeddingBagCollection "
                f"(its feature names: {sorted(features)}); add one table per node type"
            )
        sums = [c.name for c in configs if c.pooling != PoolingType.SUM]
        if sums:
            raise ValueError(f"GNNTower: node tables {sums} must use sum pooling (one id per bag: the node's row)")
        dims = {config.embedding_dim for config in configs}
        if dims != {encoder.gnn.in_channels}:
            raise ValueError(
                f"GNNTower: node tables have embedding dims {sorted(dims)} but the GNN expects "
                f"in_channels={encoder.gnn.in_channels}"
            )
        self.node_embeddings = node_embeddings
        self.encoder = encoder
        self.freeze_node_tables = freeze_node_tables
        self.node_types: List[NodeType] = list(encoder.gnn.node_types)

    @property
    def out_channels(self) -> int:
        return self.encoder.out_channels

    def check_num_nodes(self, num_nodes: Mapping[NodeType, int]) -> None:
        """Raise unless every node table has a row for every node of its type in the graph
        (a batch's node ids go straight into the tables, where an id past the end would fail
        deep inside the lookup kernel or read another rank's rows)."""
        rows = {c.feature_names[0]: (c.name, c.num_embeddings) for c in self.node_embeddings.embedding_bag_configs()}
        short = {
            t: f"table {rows[t][0]!r} has {rows[t][1]} rows, the graph {n} nodes"
            for t, n in num_nodes.items() if t in rows and rows[t][1] < n
        }
        if short:
            raise ValueError(f"GNNTower: node ids would fall outside their tables: {short}; size each table to its node count")

    def shared_parameters(self) -> List[nn.Parameter]:
        return self.encoder.shared_parameters()

    @property
    def edge_decoder(self) -> Optional[EdgeDecoder]:
        """The GFAE's edge part, if on (the tower then also returns the masked-edge loss)."""
        return self.encoder.edge_decoder

    @property
    def reconstructs_features(self) -> bool:
        """Whether the GFAE's feature part is on (the tower then returns the feature loss)."""
        return self.encoder.reconstructs_features

    @property
    def aux_loss_names(self) -> List[str]:
        """The auxiliary losses the tower computes, in the order a ranker appends them to its
        task losses: ``"gfae"`` (feature reconstruction), then ``"edge"`` (masked edges)."""
        return ["gfae"] * self.reconstructs_features + ["edge"] * (self.edge_decoder is not None)

    def forward(self, graph_features: GraphFeatures) -> GraphEmbeddings:
        """
        Args:
            graph_features (GraphFeatures): ``node_ids`` (one key per node type) and the subgraph.

        Returns:
            GraphEmbeddings: user and item embeddings (B, H) and the GFAE loss.
        """
        # Straight from the batch: lets the train pipeline start this lookup's input dist early.
        with record_function("## node_tables ##"):
            rows = node_rows(self.node_embeddings(graph_features.node_ids), graph_features.num_nodes,
                             self.freeze_node_tables)
            x_dict = {t: rows[t] for t in self.node_types}  # (N_t, D)
        return self.encoder(x_dict, graph_features)

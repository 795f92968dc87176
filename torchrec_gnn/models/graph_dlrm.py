"""GraphDLRM: TorchRec's DLRM made multi-task and fused with a GNN tower at two levels.

::

    dense_features ──► DenseArch ───────────────────────────────────────┐ (B, D)
    sparse_features ─► SparseArch (EBC) ────────────────────────────────┤ (B, F, D)
    graph_features ──► GNNTower ─► user, item (B, H) ─► InputFusionArch ┤ (B, 2, D)   input-level fusion
                                    │                                   ▼
                                    │           InteractionArch (dot) or InteractionDCNArch
                                    │                                   ▼
                                    │                      over arch MLP  (B, R)
                                    └─────────────► pre-head fusion ─► (B, R + 2H)
                                                                        ▼
                                                   TaskHeadsArch ─► (B, T)

Without a tower (``graph_tower=None``) it is a plain multi-task DLRM: the no-graph baseline.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
from torchrec.models.dlrm import (
    DLRM,
    DLRM_DCN,
    DLRM_Projection,
    DenseArch,
    InteractionArch,
    InteractionDCNArch,
    InteractionProjectionArch,
    SparseArch,
    choose,
)
from torchrec.modules.crossnet import LowRankCrossNet
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.modules.mlp import MLP
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_gnn.data.batch import GraphBatch, GraphFeatures
from torchrec_gnn.data.dataset import TaskSpec
from torchrec_gnn.models.config import RankerConfig
from torchrec_gnn.modules.fusion import ConcatFusionArch, GatedFusionArch, InputFusionArch
from torchrec_gnn.modules.gnn_tower import GraphTowerInterface
from torchrec_gnn.modules.heads import TaskHeadsArch, task_losses


class RankingArches(nn.Module):
    """The arches after the lookups (dense arch, input fusion, interaction, over arch, pre-head
    fusion, task heads) and their forward, :meth:`rank`: shared by :class:`GraphDLRM` and its
    serving form (:class:`~torchrec_gnn.models.serving.ServingRanker`)."""

    # The attributes rank() reads, set by the subclass.
    ARCH_NAMES = ("dense_arch", "input_fusion", "inter_arch", "over_arch", "prehead_fusion", "task_heads")
    dense_in_features: int

    def rank(
        self, dense_features: torch.Tensor, sparse: torch.Tensor,
        user: Optional[torch.Tensor] = None, item: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Everything after the lookups.

        Args:
            dense_features (Tensor): (B, F_dense) (F_dense = 0: the constant input).
            sparse (Tensor): (B, F, D) pooled sparse features.
            user (Tensor, optional): (B, H) graph embedding of each example's user (with a tower).
            item (Tensor, optional): (B, H) of each example's item.

        Returns:
            Tensor: (B, T) per-task outputs.
        """
        if not self.dense_in_features:  # (B, 0): no dense feature, a constant input instead
            dense_features = dense_features.new_ones(dense_features.shape[0], 1)
        dense = self.dense_arch(dense_features)  # (B, D)
        if self.input_fusion is not None:
            sparse = torch.cat([sparse, self.input_fusion(user, item)], dim=1)  # (B, F + 2, D)
        representation = self.over_arch(self.inter_arch(dense, sparse))  # (B, R)
        if self.prehead_fusion is not None:
            representation = self.prehead_fusion(representation, user, item)  # (B, R + 2H)
        return self.task_heads(representation)


class GraphDLRM(RankingArches):
    """Multi-task DLRM with an optional GNN tower fused at the input and before the heads.

    Args:
        embedding_bag_collection (EmbeddingBagCollection): the ranker's sparse feature tables
            (one dim D for all).
        dense_in_features (int): F_dense, width of ``batch.dense_features``; 0 for a data set
            with none (ID-only data): the DenseArch then reads a constant 1, so the interaction
            keeps its dense slot as one learned vector.
        tasks (Sequence[TaskSpec]): the T tasks.
        config (RankerConfig): sizes, interaction and fusion switches.
        graph_tower (GraphTowerInterface, optional): the GNN tower (end to end), or
            frozen pre-computed embeddings (two-stage); None gives the no-graph ranker.

    Example::

        model = GraphDLRM(ebc, dense_in_features=4, tasks=tasks, config=RankerConfig(),
                          graph_tower=tower)
        outputs, aux_losses = model(batch.dense_features, batch.sparse_features, batch.graph_features)
        # (B, T), (A,): those of [gfae, edge] the tower has
    """

    def __init__(
        self,
        embedding_bag_collection: EmbeddingBagCollection,
        dense_in_features: int,
        tasks: Sequence[TaskSpec],
        config: RankerConfig,
        graph_tower: Optional[GraphTowerInterface] = None,
    ) -> None:
        super().__init__()
        dims = {c.embedding_dim for c in embedding_bag_collection.embedding_bag_configs()}
        if len(dims) != 1:
            raise ValueError(f"GraphDLRM: all EmbeddingBagConfigs need one embedding_dim, got {sorted(dims)}")
        embedding_dim = dims.pop()
        self.tasks = list(tasks)
        self.config = config
        self.sparse_arch = SparseArch(embedding_bag_collection)
        self.dense_in_features = dense_in_features
        self.dense_arch = DenseArch(max(dense_in_features, 1), [*config.dense_arch_hidden_sizes, embedding_dim])
        self.graph_tower = graph_tower
        use_graph = graph_tower is not None
        # The auxiliary losses after the task losses, only those the tower computes.
        self.aux_loss_names: List[str] = graph_tower.aux_loss_names if use_graph else []
        self.input_fusion = (
            InputFusionArch(graph_tower.out_channels, embedding_dim) if use_graph and config.input_fusion else None
        )
        num_features = len(self.sparse_arch.sparse_feature_names) + (2 if self.input_fusion is not None else 0)
        if config.interaction == "dot":
            self.inter_arch: nn.Module = InteractionArch(num_features)
            inter_out = embedding_dim + num_features + choose(num_features, 2)
        elif config.interaction == "dcn":
            inter_out = (num_features + 1) * embedding_dim
            crossnet = LowRankCrossNet(inter_out, config.dcn_num_layers, config.dcn_low_rank_dim)
            self.inter_arch = InteractionDCNArch(num_features, crossnet)
        else:  # DLRM_Projection's interaction, its branches taking the F (+ 2 graph) features
            sizes = (config.projection_branch1_layer_sizes, config.projection_branch2_layer_sizes)
            bad = [s[-1] for s in sizes if not s or s[-1] % embedding_dim]
            if bad:
                raise ValueError(f"GraphDLRM: projection branches must end in a multiple of D = {embedding_dim}, got {bad}")
            branches = [DenseArch((num_features + 1) * embedding_dim, list(s)) for s in sizes]
            self.inter_arch = InteractionProjectionArch(num_features, *branches)
            inter_out = embedding_dim + (sizes[0][-1] // embedding_dim) * (sizes[1][-1] // embedding_dim)
        self.over_arch = MLP(inter_out, config.over_arch_layer_sizes, activation="relu")
        representation = config.over_arch_layer_sizes[-1]
        fusion = {"concat": ConcatFusionArch, "gated": GatedFusionArch}.get(config.prehead_fusion)
        self.prehead_fusion = fusion(graph_tower.out_channels, representation) if use_graph and fusion else None
        head_in = self.prehead_fusion.out_channels if self.prehead_fusion is not None else representation
        self.task_heads = TaskHeadsArch(head_in, self.tasks, config.head_layer_sizes)

    @classmethod
    def from_dlrm(
        cls,
        dlrm: DLRM,
        tasks: Sequence[TaskSpec],
        graph_tower: Optional[GraphTowerInterface],
        config: Optional[RankerConfig] = None,
    ) -> "GraphDLRM":
        """Add a GNN tower to a stock TorchRec ``DLRM``, ``DLRM_DCN`` or ``DLRM_Projection``,
        keeping its sparse and dense arches and its kind of interaction.

        The embedding tables and the dense arch (with their weights) are reused as they are. The
        interaction keeps the model's kind and settings (dot; DCN with the same number of cross
        layers and low rank; projection with the same branch sizes), re-sized for the two graph
        features; it, the over arch and the task heads are new because their input grows.
        Sizes are read from public parameters, not TorchRec's private attributes.

        Args:
            dlrm (DLRM): a ``torchrec.models.dlrm`` ``DLRM``, ``DLRM_DCN`` or ``DLRM_Projection``.
            tasks (Sequence[TaskSpec]): the tasks of the new multi-task heads.
            graph_tower (GraphTowerInterface, optional): the tower to add.
            config (RankerConfig, optional): over-arch/head sizes, fusion switches; its dense
                arch and interaction settings are replaced by the model's own.

        Raises:
            TypeError: ``dlrm`` is another model (any model that consumes pooled sparse features
                can take the tower's output as a ``KeyedTensor`` instead:
                :meth:`~torchrec_gnn.modules.gnn_tower.GraphEmbeddings.join`).
        """
        interaction = _interaction_settings(dlrm)
        dense_weights = [p for p in dlrm.dense_arch.parameters() if p.dim() == 2]  # (out, in) per layer
        config = dataclasses.replace(config or RankerConfig(), **interaction,
                                     dense_arch_hidden_sizes=[w.shape[0] for w in dense_weights[:-1]])
        model = cls(dlrm.sparse_arch.embedding_bag_collection, dense_weights[0].shape[1], tasks, config, graph_tower)
        model.dense_arch = dlrm.dense_arch
        return model

    @property
    def interaction_features(self) -> int:
        """Features entering the interaction: F sparse features (+2 with input fusion)."""
        return len(self.sparse_arch.sparse_feature_names) + (2 if self.input_fusion is not None else 0)

    def shared_parameters(self) -> List[nn.Parameter]:
        """GradNorm's shared layer: the GNN's last layer, else (no graph, or frozen embeddings)
        the over arch's last layer."""
        shared = self.graph_tower.shared_parameters() if self.graph_tower is not None else []
        return shared or list(self.over_arch._mlp[-1].parameters())

    def forward(
        self, dense_features: torch.Tensor, sparse_features: KeyedJaggedTensor,
        graph_features: Optional[GraphFeatures] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            dense_features (Tensor): (B, F_dense).
            sparse_features (KeyedJaggedTensor): the ranker's sparse features, B rows per key.
            graph_features (GraphFeatures, optional): the examples' sampled subgraph (read only
                with a tower).

        Returns:
            Tuple[Tensor, Tensor]: per-task outputs (B, T) (logits for binary tasks,
            ``log1p`` predictions for regression) and the auxiliary losses (A,), one per
            :attr:`aux_loss_names` (``"gfae"`` with a feature GFAE, ``"edge"`` with an edge
            decoder; (0,) with neither).
        """
        sparse = self.sparse_arch(sparse_features)  # (B, F, D)
        if self.graph_tower is None:
            return self.rank(dense_features, sparse), sparse.new_zeros(0)
        graph = self.graph_tower(graph_features)
        return self.rank(dense_features, sparse, graph.user, graph.item), graph.aux_losses(self.aux_loss_names)


def _interaction_settings(dlrm: nn.Module) -> dict:
    """The :class:`RankerConfig` interaction fields of a TorchRec DLRM model, from its
    interaction's parameters."""
    if type(dlrm) is DLRM:
        return {"interaction": "dot"}
    if type(dlrm) is DLRM_DCN:
        cross = [p for name, p in dlrm.inter_arch.crossnet.named_parameters() if name.startswith("W_kernels")]
        return {"interaction": "dcn", "dcn_num_layers": len(cross), "dcn_low_rank_dim": cross[0].shape[1]}
    if type(dlrm) is DLRM_Projection:
        branches = (dlrm.inter_arch.interaction_branch1, dlrm.inter_arch.interaction_branch2)
        sizes = [[p.shape[0] for p in branch.parameters() if p.dim() == 2] for branch in branches]
        return {"interaction": "projection", "projection_branch1_layer_sizes": sizes[0],
                "projection_branch2_layer_sizes": sizes[1]}
    raise TypeError(
        f"GraphDLRM.from_dlrm: {type(dlrm).__name__} is not a torchrec.models.dlrm DLRM, DLRM_DCN or "
        f"DLRM_Projection; give your model the tower's embeddings as two more pooled features instead: "
        f"GraphEmbeddings.join(ebc(batch.sparse_features)) (examples/add_gnn_tower.py --model deepfm)"
    )


class GraphDLRMTrain(nn.Module):
    """TorchRec-style training wrapper: one loss per task plus the tower's auxiliary losses.

    Args:
        model (GraphDLRM): the ranker.
        regression_loss (str): ``"mse_log1p"`` (default) or ``"huber_log1p"``.

    ``forward(batch)`` returns ``(losses, (losses.detach(), outputs.detach(), labels))`` with
    ``labels`` NaN where missing and ``losses`` of shape (T + A,): the T task losses, then the
    auxiliary ones (:attr:`GraphDLRM.aux_loss_names`: the GFAE's feature and edge losses, each only
    when the tower has it).
    TorchRec's train pipeline backprops ``losses.sum()``; a
    :class:`~torchrec_gnn.train.balancing.LossBalancer` weighs them instead.
    """

    def __init__(self, model: GraphDLRM, regression_loss: str = "mse_log1p") -> None:
        super().__init__()
        self.model = model
        self.regression_loss = regression_loss

    @property
    def loss_names(self) -> List[str]:
        return [t.name for t in self.model.tasks] + self.model.aux_loss_names

    def forward(self, batch: GraphBatch) -> Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """
        Args:
            batch (GraphBatch): features, labels with their mask, and the subgraph.

        Returns:
            Tuple[Tensor, Tuple[Tensor, Tensor, Tensor]]: losses (T + A,) and, detached, the
            losses (T + A,), the outputs (B, T) and the labels (B, T) with NaN where missing.
        """
        outputs, aux_losses = self.model(batch.dense_features, batch.sparse_features, batch.graph_features)
        losses = task_losses(outputs, batch.labels, batch.label_mask, self.model.tasks, self.regression_loss)
        losses = torch.cat([losses, aux_losses])  # (T + A,)
        labels = batch.labels.masked_fill(~batch.label_mask, float("nan"))
        return losses, (losses.detach(), outputs.detach(), labels)

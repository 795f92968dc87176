"""The model's config (ranker arches, GNN, GFAE, two-stage / warm start), importable without
TorchRec or PyG (experiment configs are read before the stack loads)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional

from torchrec_gnn.modules.config import GNNConfig
from torchrec_gnn.modules.gfae import GFAEConfig
from torchrec_gnn.typing import EdgeType

INTERACTIONS = ("dot", "dcn", "projection")
PREHEAD_FUSIONS = ("concat", "gated", "none")


@dataclass
class RankerConfig:
    """Sizes and switches of the ranker.

    Args:
        dense_arch_hidden_sizes (List[int]): hidden layers of the DenseArch MLP; its output
            layer has the sparse embedding dim D, as the interaction needs. Default [64].
        over_arch_layer_sizes (List[int]): shared MLP after the interaction; its last size is
            R, the representation entering the heads. Default [128, 64].
        head_layer_sizes (List[int]): hidden sizes of each task head. Default [32].
        interaction (str): ``"dot"`` (DLRM), ``"dcn"`` (DLRM_DCN low-rank cross net) or
            ``"projection"`` (DLRM_Projection: dot products of two learned projections).
        dcn_num_layers (int): cross layers for ``"dcn"``. Default 2.
        dcn_low_rank_dim (int): low rank of the cross layers. Default 16.
        projection_branch1_layer_sizes (List[int]): ``"projection"``'s first branch MLP; its
            last size is F1 * D. Default [64, 64] (F1 = 4 with D = 16).
        projection_branch2_layer_sizes (List[int]): the second branch, last size F2 * D.
            Default [64, 64].
        input_fusion (bool): graph embeddings join the interaction. Default True.
        prehead_fusion (str): ``"concat"``, ``"gated"`` or ``"none"``. Default ``"concat"``.
        sparse_features (List[str], optional): the data set's sparse features the ranker reads,
            one table each (e.g. without ``user_id`` and ``video_id``, an end-to-end tower's
            node tables are the ranker's only per-ID embeddings). Default None: every one.
    """

    dense_arch_hidden_sizes: List[int] = field(default_factory=lambda: [64])
    over_arch_layer_sizes: List[int] = field(default_factory=lambda: [128, 64])
    head_layer_sizes: List[int] = field(default_factory=lambda: [32])
    interaction: str = "dot"
    dcn_num_layers: int = 2
    dcn_low_rank_dim: int = 16
    projection_branch1_layer_sizes: List[int] = field(default_factory=lambda: [64, 64])
    projection_branch2_layer_sizes: List[int] = field(default_factory=lambda: [64, 64])
    input_fusion: bool = True
    prehead_fusion: str = "concat"
    sparse_features: Optional[List[str]] = None

    def __post_init__(self) -> None:
        if self.interaction not in INTERACTIONS:
            raise ValueError(f"RankerConfig.interaction must be one of {INTERACTIONS}, got {self.interaction!r}")
        if self.prehead_fusion not in PREHEAD_FUSIONS:
            raise ValueError(
                f"RankerConfig.prehead_fusion must be one of {PREHEAD_FUSIONS}, got {self.prehead_fusion!r}"
            )
        if self.sparse_features is not None and not self.sparse_features:
            raise ValueError("RankerConfig.sparse_features: name at least one feature (null reads every one)")


NODE_INITS = ("torchrec", "fan_in")


@dataclass
class ModelConfig:
    """Everything that shapes the model.

    Args:
        embedding_dim (int): D of the ranker's sparse tables (and of the dense arch output).
        node_embedding_dim (int): width of the node tables (GNN input).
        use_graph (bool): build the GNN tower (False = the no-graph ranker).
        use_gfae (bool): add the GFAE's feature-reconstruction loss (to pre-training, with
            ``two_stage``); its edge part is ``gfae.edge_objective``.
        two_stage (bool): the two-stage baseline: the GNN is pre-trained on the graph alone
            (``torchrec_gnn.train.pretrain``) and the ranker gets its exported embeddings
            frozen, through the same fusion (needs ``use_graph``). Default False (end to end).
        warm_start (bool): pre-train the tower exactly as the two-stage baseline does, then
            train the whole model end to end from those weights (the tower is not frozen).
            Default False.
        freeze_node_tables (bool): with ``warm_start``, the node tables keep their pre-trained
            rows while the GNN, the GFAE and the ranker train end to end: a cheaper step (no
            backward into the tables' rows of every sampled node, nor into the first layer's
            inputs). Default False.
        node_degree (bool): every node's scaled ``log1p`` in-degree per relation joins
            its side features (:mod:`torchrec_gnn.graph.degree`), counted in the graph as each
            batch sees it (temporal sampling: before the batch), so the GNN can tell a node with
            many neighbours from one with few. Default False.
        node_init (str): the node tables' initial rows: ``"torchrec"``, TorchRec's default
            uniform on ``+-sqrt(1 / N_t)`` (N_t rows: about 0.006 for 30k nodes, small against
            the GNN's biases), or ``"fan_in"``, uniform on ``+-sqrt(1 / node_embedding_dim)``, the
            bound the GNN's linear layers use for their own inputs. Default ``"torchrec"``.
        gnn (GNNConfig): message passing.
        gfae (GFAEConfig): masking and reconstruction loss.
        ranker (RankerConfig): DLRM arches and fusion switches.
        regression_loss (str): ``"mse_log1p"`` or ``"huber_log1p"``.
    """

    embedding_dim: int = 16
    node_embedding_dim: int = 32
    use_graph: bool = True
    use_gfae: bool = True
    two_stage: bool = False
    warm_start: bool = False
    freeze_node_tables: bool = False
    node_degree: bool = False
    node_init: str = "torchrec"
    gnn: GNNConfig = field(default_factory=GNNConfig)
    gfae: GFAEConfig = field(default_factory=GFAEConfig)
    ranker: RankerConfig = field(default_factory=RankerConfig)
    regression_loss: str = "mse_log1p"

    def __post_init__(self) -> None:
        if self.node_init not in NODE_INITS:
            raise ValueError(f"ModelConfig.node_init must be one of {NODE_INITS}, got {self.node_init!r}")
        if (self.two_stage or self.warm_start) and not self.use_graph:
            raise ValueError("ModelConfig: two_stage and warm_start need use_graph=True (they pre-train the GNN tower)")
        if self.two_stage and self.warm_start:
            raise ValueError("ModelConfig: choose two_stage (frozen pre-trained embeddings) or warm_start "
                             "(end-to-end from the pre-trained tower), not both")
        if self.freeze_node_tables and not self.warm_start:
            raise ValueError("ModelConfig: freeze_node_tables keeps the node tables' pre-trained rows; it needs "
                             "warm_start=True (cold, the rows would stay at their random init)")

    def without_graph(self) -> "ModelConfig":
        """The same ranker without its graph tower (and the tower's switches, which need one)."""
        return replace(self, use_graph=False, two_stage=False, warm_start=False, freeze_node_tables=False)

    def sampled_fanouts(self, fanouts: Dict[EdgeType, List[int]]) -> Dict[EdgeType, List[int]]:
        """The hops of ``fanouts`` this model reads from a batch's sampled subgraph: every hop
        for an end-to-end tower, all but the outer one when the outer hop comes from the history,
        none for the two-stage ranker (it reads its users' and items' embeddings from a table)."""
        if self.two_stage:
            return {et: [] for et in fanouts}
        if self.gnn.outer_hop == "history":
            return {et: f[:-1] for et, f in fanouts.items()}
        return dict(fanouts)

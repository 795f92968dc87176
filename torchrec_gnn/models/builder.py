"""Build a GraphDLRM for a dataset and its graph from one config dataclass."""

from __future__ import annotations


from dataclasses import replace
from typing import Dict, Mapping, Optional

import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from torchrec_gnn.data.dataset import GraphRecDataset
from torchrec_gnn.graph.degree import DegreeFeatures, degree_channels
from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.models.config import ModelConfig, RankerConfig
from torchrec_gnn.models.graph_dlrm import GraphDLRM, GraphDLRMTrain
from torchrec_gnn.modules.frozen_tower import FrozenGraphTower
from torchrec_gnn.modules.gfae import GFAE
from torchrec_gnn.modules.gnn import HeteroGNN
from torchrec_gnn.modules.gnn_tower import GNNTower, GraphEncoder
from torchrec_gnn.typing import NodeType


def node_table_name(node_type: str) -> str:
    """Table name of a node type's embeddings (unique, so planner constraints can name it)."""
    return f"node_{node_type}"


def tower_node_features(
    dataset: GraphRecDataset, graph: HeteroGraph, degree: Optional[DegreeFeatures]
) -> Dict[NodeType, torch.Tensor]:
    """Every node's side features as the tower reads them, (N_t, F_t [+ R_t]): the data set's,
    with ``degree``'s columns over the whole ``graph`` when given (for full-graph passes;
    batches count degrees themselves, before their own time)."""
    return degree.append(dataset.node_features, graph) if degree is not None else dict(dataset.node_features)


def ranker_sparse_features(dataset: GraphRecDataset, config: RankerConfig) -> Dict[str, int]:
    """``{feature: cardinality}`` of the sparse features the ranker reads, in the data set's
    order: ``config.sparse_features``, or every one when None.

    Raises:
        ValueError: a named feature the data set does not have (lists the valid ones), or a
            data set without sparse features.
    """
    if not dataset.sparse_cardinality:
        raise ValueError(f"data set {dataset.name!r} has no sparse features for the ranker")
    if config.sparse_features is None:
        return dict(dataset.sparse_cardinality)
    unknown = sorted(set(config.sparse_features) - set(dataset.sparse_cardinality))
    if unknown:
        raise ValueError(f"model.ranker.sparse_features: {unknown} not in data set {dataset.name!r}; "
                         f"valid: {list(dataset.sparse_cardinality)}")
    return {name: n for name, n in dataset.sparse_cardinality.items() if name in config.sparse_features}


def build_graph_tower(
    dataset: GraphRecDataset,
    graph: HeteroGraph,
    config: ModelConfig,
    device: Optional[torch.device] = None,
    edge_objective: Optional[bool] = None,
    history: Optional[bool] = None,
    freeze_node_tables: Optional[bool] = None,
) -> GNNTower:
    """The GNN tower: one node table per node type, the GNN and (optionally) the GFAE's feature
    part and its edge decoder (``edge_objective``; default ``config.gfae.edge_objective``, always
    on for link-prediction pre-training) and the outer hop's historical embeddings (``history``;
    default ``config.gnn.outer_hop == "history"``, always off for pre-training) and whether
    the node tables train (``freeze_node_tables``; default ``config.freeze_node_tables``, always
    trained in pre-training)."""
    dim = config.node_embedding_dim
    # "torchrec": EmbeddingBagConfig's default, +-sqrt(1 / N_t); "fan_in": +-sqrt(1 / D)
    init = {"weight_init_min": -(dim**-0.5), "weight_init_max": dim**-0.5} if config.node_init == "fan_in" else {}
    tables = [
        EmbeddingBagConfig(name=node_table_name(t), num_embeddings=n, embedding_dim=dim, feature_names=[t], **init)
        for t, n in graph.num_nodes.items()
    ]
    seed_types = [dataset.user_type] + ([dataset.item_type] if dataset.item_type != dataset.user_type else [])
    gnn = HeteroGNN.from_config(graph.node_types, graph.edge_types, dim, config.gnn, out_node_types=seed_types)
    feature_channels = {t: int(x.shape[1]) for t, x in dataset.node_features.items()}
    if config.node_degree:
        for t, columns in degree_channels(graph).items():
            feature_channels[t] = feature_channels.get(t, 0) + columns
    edges = config.gfae.edge_objective if edge_objective is None else edge_objective
    gfae = None
    if config.use_gfae or edges:
        targets = {t: feature_channels.get(t, dim) for t in seed_types} if config.use_gfae else {}
        gfae = GFAE(dim, gnn.out_channels, targets, replace(config.gfae, edge_objective=edges))
    use_history = config.gnn.outer_hop == "history" if history is None else history
    if use_history:
        gnn.add_history(graph.num_nodes, device)
    encoder = GraphEncoder(gnn, dataset.user_type, dataset.item_type, gfae, feature_channels)
    frozen = config.freeze_node_tables if freeze_node_tables is None else freeze_node_tables
    return GNNTower(EmbeddingBagCollection(tables=tables, device=device), encoder, frozen)


def build_frozen_tower(
    dataset: GraphRecDataset,
    graph: HeteroGraph,
    config: ModelConfig,
    embeddings: Optional[Mapping[str, torch.Tensor]] = None,
    device: Optional[torch.device] = None,
) -> FrozenGraphTower:
    """The two-stage tower: (N_t, H) embeddings of the user and item types, ``embeddings`` or
    empty ones of the graph's node counts and the GNN's width."""
    if embeddings is None:
        hidden = config.gnn.hidden_channels
        embeddings = {t: torch.empty(graph.num_nodes[t], hidden, device=device)
                      for t in (dataset.user_type, dataset.item_type)}
    return FrozenGraphTower(embeddings, dataset.user_type, dataset.item_type)


def build_graph_dlrm(
    dataset: GraphRecDataset,
    graph: HeteroGraph,
    config: ModelConfig,
    device: Optional[torch.device] = None,
    frozen_embeddings: Optional[Mapping[str, torch.Tensor]] = None,
) -> GraphDLRMTrain:
    """A :class:`GraphDLRMTrain` for ``dataset``: one ranker table per sparse feature it reads
    (:func:`ranker_sparse_features`), the dataset's dense features, its tasks, and the tower
    over ``graph`` when ``use_graph``.

    Args:
        dataset (GraphRecDataset): features, cardinalities, tasks, node types.
        graph (HeteroGraph): the graph the batches are sampled from (node counts, relations).
        config (ModelConfig): sizes and switches.
        device (torch.device, optional): where to build the tables (``"meta"`` before DMP).
        frozen_embeddings (Mapping[str, Tensor], optional): the two-stage tower's embeddings;
            without them it is built empty, to fill after DMP or from a state dict.
    """
    ebc = EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(name=f"t_{name}", num_embeddings=n, embedding_dim=config.embedding_dim, feature_names=[name])
            for name, n in ranker_sparse_features(dataset, config.ranker).items()
        ],
        device=device,
    )
    tower = None
    if config.use_graph and config.two_stage:
        tower = build_frozen_tower(dataset, graph, config, frozen_embeddings, device)
    elif config.use_graph:
        tower = build_graph_tower(dataset, graph, config, device)
    model = GraphDLRM(ebc, len(dataset.dense_names), dataset.tasks, config.ranker, tower)
    return GraphDLRMTrain(model, config.regression_loss)

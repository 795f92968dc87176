"""Stage 1 of the two-stage baseline (and of warm start): the library parts of pre-training the
GNN on the graph alone (the job itself is :class:`torchrec_gnn.recipes.pretrain.LinkPretrainRecipe`).

What industrial pipelines do before end-to-end training, and what E2E-GRec is compared with:

1. **Pre-train** the same GNN tower (node tables, message passing, GFAE) on the graph alone,
   with no ranking label: link prediction on the user -> item relation plus the GFAE loss. A
   small share of that relation's edges (and their reverses) is held out of the graph for good
   and scores the pre-training (link AUC). Each epoch the other edges serve as links to predict
   through the same edge-level sampling and edge decoder as the end-to-end edge objective
   (:class:`~torchrec_gnn.data.loader.LinkTargets`): a batch's links are absent from its own
   message passing and each is paired with a uniformly drawn item as negative.
2. **Export** every user's and item's embedding by layer-wise full-graph inference over the
   whole graph (:meth:`~torchrec_gnn.modules.gnn.HeteroGNN.inference`).
3. The ranker then trains with those embeddings frozen
   (:class:`~torchrec_gnn.modules.frozen_tower.FrozenGraphTower`), through the same fusion, or,
   with ``model.warm_start``, starts end-to-end training from the pre-trained tower.

Pre-training runs until the held-out link AUC stops improving (``patience``) or ``epochs`` ends,
and keeps the best epoch's tower. Both stages are timed; ``pretrain.json`` holds the seconds,
the losses and the link AUC per epoch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torchmetrics.functional.classification import binary_auroc

from torchrec_gnn.data.batch import GraphBatch
from torchrec_gnn.data.dataset import GraphRecDataset, Interactions
from torchrec_gnn.data.loader import (
    BatchPlan,
    BatchSchema,
    GraphBatchBuilder,
    GraphBatchDataset,
    LinkTargets,
    make_dataloader,
)
from torchrec_gnn.graph.degree import DegreeFeatures
from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.graph.sampler import HeldOutPairs, NeighborSampler
from torchrec_gnn.models.builder import node_table_name
from torchrec_gnn.modules.gnn_tower import GNNTower
from torchrec_gnn.train.config import PretrainConfig
from torchrec_gnn.train.run_dir import PRETRAIN_REPORT_FILE
from torchrec_gnn.typing import EdgeList, EdgeType, NodeType

logger = logging.getLogger("torchrec_gnn.pretrain")

EMBEDDINGS_FILE = "node_embeddings.pt"
TOWER_FILE = "tower.pt"


@dataclass
class PretrainSetup:
    """Settings of one pre-training run that come from the experiment config.

    Args:
        pretrain (PretrainConfig): the stage's own config.
        fanouts (Dict[EdgeType, List[int]]): the sampler's per-relation fanouts.
        seed (int): seed of the edge split, negatives, sampling and init.
        num_workers (int): DataLoader workers.
        progress (bool): show progress bars.
        device (torch.device): where the tower trains and the export runs.
        export (bool): export the embeddings (two-stage); warm start only needs the tower.
        degree (DegreeFeatures, optional): degree columns joining the side features
            (``ModelConfig.node_degree``).
        prebuild_csr (bool): the workers build the training batches' CSR arrays
            (``LoaderConfig.prebuild_csr``).
    """

    pretrain: PretrainConfig
    fanouts: Dict[EdgeType, List[int]]
    seed: int = 0
    num_workers: int = 0
    progress: bool = True
    device: torch.device = torch.device("cpu")
    export: bool = True
    degree: Optional[DegreeFeatures] = None
    prebuild_csr: bool = False


def _edge_list(graph: HeteroGraph, edge_type: EdgeType) -> EdgeList:
    index = graph.csc(edge_type)
    src, dst = graph.edge_index(edge_type)
    as_tensor = lambda a: None if a is None else torch.from_numpy(np.array(a))  # noqa: E731
    return EdgeList(src=src, dst=dst, time=as_tensor(index.time), weight=as_tensor(index.weight))


def hold_out_edges(
    graph: HeteroGraph, relation: EdgeType, fraction: float, seed: int
) -> Tuple[HeteroGraph, torch.Tensor]:
    """Remove a random ``fraction`` of ``relation``'s edges (and the same pairs of any reverse
    relation ``(dst, *, src)``) from the graph.

    Args:
        graph (HeteroGraph): the full graph.
        relation (EdgeType): ``(user, rel, item)``.
        fraction (float): share of its edges to hold out.
        seed (int): seed of the draw.

    Returns:
        Tuple[HeteroGraph, Tensor]: the remaining graph and the held-out (2, P) pairs
        ``[user; item]``.
    """
    edges = {et: _edge_list(graph, et) for et in graph.edge_types}
    candidates = edges[relation]
    generator = torch.Generator().manual_seed(seed)
    out = torch.rand(len(candidates), generator=generator) < fraction
    pairs = torch.stack([candidates.src[out], candidates.dst[out]])
    held = HeldOutPairs(relation, graph.num_nodes[relation[2]], pairs)
    for et, e in edges.items():
        if held.applies_to(et):
            keep = ~held.matches(et, e.src, e.dst)
            edges[et] = EdgeList(e.src[keep], e.dst[keep], None if e.time is None else e.time[keep],
                                 None if e.weight is None else e.weight[keep])
    return HeteroGraph.from_edges(graph.num_nodes, edges), pairs


class LinkPredictionModel(nn.Module):
    """The tower on its own: its edge decoder scores each batch's links
    (``batch.graph_features.link_index``).

    Args:
        tower (GNNTower): node tables, GNN, (optional) GFAE and an edge decoder.
        link_weight (float): weight of the link-prediction (edge) loss.
        gfae_weight (float): weight of the GFAE loss.
    """

    def __init__(self, tower: GNNTower, link_weight: float = 1.0, gfae_weight: float = 1.0) -> None:
        super().__init__()
        if tower.edge_decoder is None:
            raise ValueError("LinkPredictionModel: the tower has no edge decoder; build it with edge_objective=True")
        self.tower = tower
        self.link_weight, self.gfae_weight = link_weight, gfae_weight

    def forward(self, batch: GraphBatch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """
        Args:
            batch (GraphBatch): links to score (``graph_features.link_index``, ``link_label`` (L,)).

        Returns:
            Tuple[Tensor, Dict[str, Tensor]]: the weighted loss () and, detached, ``link``,
            ``gfae`` and the link logits ``scores`` (L,).
        """
        graph = self.tower(batch.graph_features)
        loss = self.link_weight * graph.edge_loss + self.gfae_weight * graph.gfae_loss
        return loss, {"link": graph.edge_loss.detach(), "gfae": graph.gfae_loss.detach(),
                      "scores": graph.link_logits.detach()}


@dataclass
class PretrainResult:
    """What stage 1 produced.

    Attributes:
        tower_state (Dict[str, Tensor]): the pre-trained tower's state dict (best epoch).
        embeddings (Dict[str, Tensor]): (N_t, H) for the user and item types (empty without
            export).
        report (Dict[str, Any]): seconds (``pretrain_seconds``, ``export_seconds``), steps,
            final losses, link AUC on held-out edges per epoch and of the kept epoch.
    """

    tower_state: Dict[str, torch.Tensor]
    embeddings: Dict[NodeType, torch.Tensor]
    report: Dict[str, Any]


def link_batches(
    links: LinkTargets, sampler: NeighborSampler, dataset: GraphRecDataset, train: bool, seed: int,
    degree: Optional[DegreeFeatures] = None, csr: bool = False,
) -> GraphBatchDataset:
    """GraphBatches of links alone (no ranking examples): a shuffled share to train on, or
    every link in order to score (with ``degree``'s columns when given, and each relation's CSR
    arrays with ``csr``, :class:`~torchrec_gnn.data.loader.GraphBatchBuilder`)."""
    no_examples = Interactions(
        user=torch.empty(0, dtype=torch.int64), item=torch.empty(0, dtype=torch.int64),
        timestamp=torch.empty(0, dtype=torch.int64), labels=torch.empty(0, 0), dense=torch.empty(0, 0),
    )
    schema = BatchSchema(dataset.user_type, dataset.item_type, sampler.graph.node_types)
    builder = GraphBatchBuilder(sampler, schema, node_features=dataset.node_features, degree=degree, links=links, csr=csr)
    return GraphBatchDataset(no_examples, builder, BatchPlan(batch_size=1, shuffle=train, drop_last=train, seed=seed))


@torch.no_grad()
def export_tower(
    tower: GNNTower, node_features: Dict[NodeType, torch.Tensor], graph: HeteroGraph, chunk_size: int,
    progress: bool = True,
) -> Dict[NodeType, torch.Tensor]:
    """Every output node's embedding (N_t, H), on the CPU: the tower's node tables and side
    features through its GNN by layer-wise full-graph inference (eval mode, no GFAE masking)."""
    tower.eval()
    tables = {t: tower.node_embeddings.embedding_bags[node_table_name(t)].weight.detach() for t in tower.node_types}
    embeddings = tower.encoder.full_graph(tables, node_features, graph, chunk_size, progress)
    return {t: e.cpu() for t, e in embeddings.items()}


@torch.no_grad()
def link_auc(model: LinkPredictionModel, data: GraphBatchDataset, num_workers: int, device: torch.device) -> float:
    """AUC of ``model``'s link scores over every link of ``data`` (eval mode, then back to train)."""
    model.eval()
    scores, labels = [], []
    for batch in make_dataloader(data, num_workers):
        _, parts = model(batch.to(device))
        scores.append(parts["scores"])
        labels.append(batch.graph_features.link_label.to(device))
    model.train()
    return float(binary_auroc(torch.cat(scores), torch.cat(labels).long()))


def save_result(result: PretrainResult, directory: Path) -> None:
    """Write ``tower.pt``, ``pretrain.json`` and, last (it marks the stage as done),
    ``node_embeddings.pt`` into ``directory``, each atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, value in ((TOWER_FILE, result.tower_state), (EMBEDDINGS_FILE, result.embeddings)):
        if name == EMBEDDINGS_FILE:
            (directory / PRETRAIN_REPORT_FILE).write_text(json.dumps(result.report, indent=1))
        tmp = directory / (name + ".tmp")
        torch.save(value, tmp)
        tmp.replace(directory / name)


def is_finished(directory: Path) -> bool:
    """Whether :func:`save_result` completed in ``directory`` (it writes ``node_embeddings.pt`` last)."""
    return (directory / EMBEDDINGS_FILE).is_file()


def load_pretrained(directory: Path, name: str = EMBEDDINGS_FILE) -> Dict[str, torch.Tensor]:
    """What :func:`save_result` wrote: ``node_embeddings.pt`` (node type -> (N_t, H)) or
    ``tower.pt`` (the tower's state dict).

    Raises:
        ValueError: the file is missing or unreadable (names it).
    """
    path = directory / name
    try:
        tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"{path}: cannot load the pre-training output ({err}); delete "
                         f"{directory} to pre-train again") from err
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise ValueError(f"{path}: expected a dict of name -> tensor")
    return tensors

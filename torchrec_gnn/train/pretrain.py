"""Stage 1 of the two-stage baseline: pre-train the GNN on the graph alone, export embeddings.

What industrial pipelines do before end-to-end training, and what E2E-GRec is compared with:

1. **Pre-train** the same GNN tower (node tables, message passing, GFAE) on the graph alone,
   with no ranking label: link prediction on the user -> item relation plus the GFAE loss. A
   share of that relation's edges (and their reverses) is held out of message passing and
   serves as positives, each paired with a uniformly drawn item as negative, so the model
   cannot read an edge it is asked to predict. A small part of the held-out edges scores the
   pre-training (link AUC).
2. **Export** every user's and item's embedding by layer-wise full-graph inference over the
   whole graph (:func:`~torchrec_gnn.modules.inference.full_graph_embeddings`).
3. The ranker then trains with those embeddings frozen
   (:class:`~torchrec_gnn.modules.frozen_tower.FrozenGraphTower`), through the same fusion.

Both stages are timed; ``pretrain.json`` holds the seconds, the losses and the link AUC.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.functional.classification import binary_auroc
from tqdm import tqdm

from torchrec_gnn.data.batch import GraphBatch
from torchrec_gnn.data.dataset import EdgeList, EdgeType, GraphRecDataset, Interactions, NodeType
from torchrec_gnn.data.loader import GraphBatchDataset, make_dataloader
from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.graph.sampler import NeighborSampler
from torchrec_gnn.models.builder import node_table_name
from torchrec_gnn.modules.gnn_tower import GNNTower
from torchrec_gnn.modules.inference import full_graph_embeddings

logger = logging.getLogger("torchrec_gnn.pretrain")

PRETRAIN_DIR = "pretrain"  # in a two-stage run's output directory
EMBEDDINGS_FILE = "node_embeddings.pt"
REPORT_FILE = "pretrain.json"


@dataclass
class PretrainConfig:
    """Stage 1 of the two-stage baseline (``model.two_stage: true``).

    Args:
        epochs (int): passes over the supervision edges. Default 1.
        max_steps (int, optional): stop after this many steps.
        batch_size (int): examples per batch: half positives, half negatives. Default 1024.
        lr (float): Adam learning rate of the whole tower. Default 0.005.
        link_relation (str, optional): the relation to predict, ``"src__rel__dst"`` from the user
            to the item type; default: the user -> item relation with the most edges.
        supervision_fraction (float): share of that relation's edges held out of message passing
            as positives. Default 0.3.
        validation_fraction (float): share of the held-out edges kept for the link AUC. Default 0.1.
        link_weight (float): weight of the link-prediction loss (0 = GFAE-only pre-training).
            Default 1.0.
        gfae_weight (float): weight of the GFAE loss next to the link loss (with
            ``model.use_gfae``). Default 1.0.
        chunk_size (int): destination nodes per step of the full-graph export. Default 8192.
    """

    epochs: int = 1
    max_steps: Optional[int] = None
    batch_size: int = 1024
    lr: float = 0.005
    link_relation: Optional[str] = None
    supervision_fraction: float = 0.3
    validation_fraction: float = 0.1
    link_weight: float = 1.0
    gfae_weight: float = 1.0
    chunk_size: int = 8192

    def __post_init__(self) -> None:
        for name in ("supervision_fraction", "validation_fraction"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"pretrain.{name} must be in (0, 1), got {value}")
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"pretrain.batch_size must be an even number >= 2 (positives + negatives), got {self.batch_size}")


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
    """

    pretrain: PretrainConfig
    fanouts: Dict[EdgeType, List[int]]
    seed: int = 0
    num_workers: int = 0
    progress: bool = True
    device: torch.device = torch.device("cpu")


def find_link_relation(graph: HeteroGraph, user_type: NodeType, item_type: NodeType, name: Optional[str]) -> EdgeType:
    """The relation to predict: ``name`` (``"src__rel__dst"``), else the largest user -> item one.

    Raises:
        ValueError: ``name`` is not a user -> item relation of the graph, or there is none.
    """
    candidates = {"__".join(et): et for et in graph.edge_types if et[0] == user_type and et[2] == item_type}
    if name is not None:
        if name not in candidates:
            raise ValueError(f"pretrain.link_relation: {name!r} is not a {user_type} -> {item_type} relation of the "
                             f"graph; candidates: {sorted(candidates)}")
        return candidates[name]
    if not candidates:
        raise ValueError(f"pretrain: the graph has no {user_type} -> {item_type} relation to predict; relations: "
                         f"{graph.edge_types}")
    return max(candidates.values(), key=graph.num_edges)


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
        Tuple[HeteroGraph, Tensor]: the message-passing graph and the held-out (2, P) pairs
        ``[user; item]``.
    """
    src_t, _, dst_t = relation
    edges = {et: _edge_list(graph, et) for et in graph.edge_types}
    held = edges[relation]
    generator = torch.Generator().manual_seed(seed)
    out = torch.rand(len(held), generator=generator) < fraction
    pairs = torch.stack([held.src[out], held.dst[out]])
    keys = np.unique(pairs[0].numpy() * graph.num_nodes[dst_t] + pairs[1].numpy())
    for et, e in edges.items():
        if et == relation or (et[0] == dst_t and et[2] == src_t):
            u, v = (e.src, e.dst) if et == relation else (e.dst, e.src)
            keep = torch.from_numpy(~np.isin(u.numpy() * graph.num_nodes[dst_t] + v.numpy(), keys))
            edges[et] = EdgeList(e.src[keep], e.dst[keep], None if e.time is None else e.time[keep],
                                 None if e.weight is None else e.weight[keep])
    return HeteroGraph.from_edges(graph.num_nodes, edges), pairs


def link_examples(pairs: torch.Tensor, num_items: int, seed: int) -> Interactions:
    """Positives ``pairs`` (2, P) plus one uniform negative item per positive, as 2P examples
    with the label in column 0 (no ranker features)."""
    generator = torch.Generator().manual_seed(seed)
    negatives = torch.randint(0, num_items, (pairs.shape[1],), generator=generator)
    p = pairs.shape[1]
    return Interactions(
        user=torch.cat([pairs[0], pairs[0]]),
        item=torch.cat([pairs[1], negatives]),
        timestamp=torch.zeros(2 * p, dtype=torch.int64),
        labels=torch.cat([torch.ones(p, 1), torch.zeros(p, 1)]),
        dense=torch.zeros(2 * p, 0),
    )


class LinkPredictionModel(nn.Module):
    """The tower scoring user-item pairs by the dot product of their graph embeddings.

    Args:
        tower (GNNTower): node tables, GNN and (optional) GFAE.
        link_weight (float): weight of the link-prediction loss.
        gfae_weight (float): weight of the GFAE loss.
    """

    def __init__(self, tower: GNNTower, link_weight: float = 1.0, gfae_weight: float = 1.0) -> None:
        super().__init__()
        self.tower = tower
        self.link_weight, self.gfae_weight = link_weight, gfae_weight

    def forward(self, batch: GraphBatch) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """
        Args:
            batch (GraphBatch): pairs as examples, label (B, 1) = 1 for an edge.

        Returns:
            Tuple[Tensor, Dict[str, Tensor]]: the weighted loss () and, detached, ``link``,
            ``gfae`` and the scores (B,).
        """
        graph = self.tower(batch)
        # Scaled dot product: unit-variance logits at init for any width H.
        scores = (graph.user * graph.item).sum(-1) / graph.user.shape[-1] ** 0.5  # (B,)
        link = F.binary_cross_entropy_with_logits(scores, batch.labels[:, 0])
        loss = self.link_weight * link + self.gfae_weight * graph.gfae_loss
        return loss, {"link": link.detach(), "gfae": graph.gfae_loss.detach(), "scores": scores.detach()}


@dataclass
class PretrainResult:
    """What stage 1 produced.

    Attributes:
        embeddings (Dict[str, Tensor]): (N_t, H) for the user and item types.
        report (Dict[str, float]): seconds (``pretrain_seconds``, ``export_seconds``), steps,
            final losses, link AUC on held-out edges.
    """

    embeddings: Dict[NodeType, torch.Tensor]
    report: Dict[str, float]


def pretrain_and_export(
    tower: GNNTower, dataset: GraphRecDataset, graph: HeteroGraph, config: PretrainSetup
) -> PretrainResult:
    """Pre-train ``tower`` by link prediction (+ GFAE) on ``graph``, then export by layer-wise
    full-graph inference over all of ``graph``.

    Args:
        tower (GNNTower): a freshly initialised tower for ``graph`` (eager, one process).
        dataset (GraphRecDataset): node types and side features.
        graph (HeteroGraph): the training split's graph (the past only).
        config (PretrainSetup): the stage's settings.

    Returns:
        PretrainResult: the embeddings and the report.
    """
    cfg, seed = config.pretrain, config.seed
    start = time.perf_counter()
    relation = find_link_relation(graph, dataset.user_type, dataset.item_type, cfg.link_relation)
    message_graph, pairs = hold_out_edges(graph, relation, cfg.supervision_fraction, seed)
    if pairs.shape[1] < 2:
        raise ValueError(f"pretrain: relation {relation} has {graph.num_edges(relation)} edges; holding out "
                         f"{cfg.supervision_fraction} of them leaves {pairs.shape[1]} to learn from")
    order = torch.randperm(pairs.shape[1], generator=torch.Generator().manual_seed(seed))
    num_val = max(1, int(cfg.validation_fraction * pairs.shape[1]))
    train_pairs, val_pairs = pairs[:, order[num_val:]], pairs[:, order[:num_val]]
    logger.info("pre-training on %s: %d held-out edges (%d to train, %d to score), %d edges for message passing",
                "__".join(relation), pairs.shape[1], train_pairs.shape[1], num_val, message_graph.num_edges())
    model = LinkPredictionModel(tower, cfg.link_weight, cfg.gfae_weight)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sampler = NeighborSampler(message_graph, config.fanouts)
    num_items = graph.num_nodes[dataset.item_type]

    def data(examples: Interactions, train: bool, epoch: int = 0) -> GraphBatchDataset:
        batches = link_batches(examples, sampler, dataset, cfg.batch_size, train, seed)
        batches.set_epoch(epoch)
        return batches

    steps_per_epoch = len(data(link_examples(train_pairs, num_items, seed), train=True))
    total = cfg.epochs * steps_per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * steps_per_epoch)
    progress = tqdm(total=total, desc="pre-train", dynamic_ncols=True, disable=not config.progress)
    step, last = 0, {}
    model.train()
    for epoch in range(cfg.epochs):
        examples = link_examples(train_pairs, num_items, seed * 1_000_003 + epoch)  # fresh negatives
        for batch in make_dataloader(data(examples, train=True, epoch=epoch), config.num_workers):
            if step >= total:
                break
            loss, parts = model(batch.to(config.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            last = {"link_loss": float(parts["link"]), "gfae_loss": float(parts["gfae"])}
            progress.set_postfix(link=f"{last['link_loss']:.4f}", gfae=f"{last['gfae_loss']:.4f}")
            progress.update(1)
    progress.close()
    val_data = data(link_examples(val_pairs, num_items, seed + 1), train=False)
    link_auc = _link_auc(model, val_data, config.num_workers, config.device)
    pretrain_seconds = time.perf_counter() - start

    start = time.perf_counter()
    embeddings = export_tower(tower, dataset.node_features, graph, cfg.chunk_size, config.progress)
    export_seconds = time.perf_counter() - start
    report = {"relation": "__".join(relation), "steps": step, **last, "link_auc": link_auc,
              "pretrain_seconds": pretrain_seconds, "export_seconds": export_seconds,
              "exported_nodes": sum(int(e.shape[0]) for e in embeddings.values())}
    logger.info("pre-training: %d steps, link AUC %.4f on %d held-out edges, %.1f s; export %.1f s",
                step, link_auc, num_val, pretrain_seconds, export_seconds)
    return PretrainResult(embeddings, report)


def link_batches(
    examples: Interactions, sampler: NeighborSampler, dataset: GraphRecDataset, batch_size: int, train: bool, seed: int
) -> GraphBatchDataset:
    """GraphBatches of link examples (pairs as examples, no ranker features): shuffled whole
    batches to train on, or every pair in order to score."""
    return GraphBatchDataset(
        examples, sampler, dataset.user_type, dataset.item_type, batch_size=min(batch_size, len(examples)),
        node_types=sampler.graph.node_types, sparse_names=[], node_features=dataset.node_features,
        shuffle=train, drop_last=train, seed=seed,
    )


@torch.no_grad()
def export_tower(
    tower: GNNTower, node_features: Dict[NodeType, torch.Tensor], graph: HeteroGraph, chunk_size: int,
    progress: bool = True,
) -> Dict[NodeType, torch.Tensor]:
    """Every output node's embedding (N_t, H), on the CPU: the tower's node tables and side
    features through its GNN by layer-wise full-graph inference (eval mode, no GFAE masking)."""
    tower.eval()
    tables = {t: tower.node_embeddings.embeddings[node_table_name(t)].weight.detach() for t in tower.node_types}
    device = next(iter(tables.values())).device
    x_dict = tower.encoder.input_features(tables, {t: x.to(device) for t, x in node_features.items()})
    embeddings = full_graph_embeddings(tower.encoder.gnn, x_dict, graph, chunk_size, progress)
    return {t: e.cpu() for t, e in embeddings.items()}


@torch.no_grad()
def _link_auc(model: LinkPredictionModel, data: GraphBatchDataset, num_workers: int, device: torch.device) -> float:
    model.eval()
    scores, labels = [], []
    for batch in make_dataloader(data, num_workers):
        _, parts = model(batch.to(device))
        scores.append(parts["scores"])
        labels.append(batch.labels[:, 0].to(device))
    model.train()
    return float(binary_auroc(torch.cat(scores), torch.cat(labels).long()))


def save_result(result: PretrainResult, directory: Path) -> None:
    """Write ``node_embeddings.pt`` and ``pretrain.json`` into ``directory`` (atomically)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (EMBEDDINGS_FILE + ".tmp")
    torch.save(result.embeddings, tmp)
    tmp.replace(directory / EMBEDDINGS_FILE)
    (directory / REPORT_FILE).write_text(json.dumps(result.report, indent=1))


def load_embeddings(directory: Path) -> Dict[NodeType, torch.Tensor]:
    """The embeddings :func:`save_result` wrote.

    Raises:
        ValueError: the file is missing or unreadable (names it).
    """
    path = directory / EMBEDDINGS_FILE
    try:
        embeddings = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ValueError(f"{path}: cannot load the pre-trained node embeddings ({err}); delete "
                         f"{directory} to pre-train again") from err
    if not isinstance(embeddings, dict) or not all(isinstance(v, torch.Tensor) for v in embeddings.values()):
        raise ValueError(f"{path}: expected a dict of node type -> (N_t, H) tensors")
    return embeddings

"""The link pre-training recipe: stage 1 of the two-stage baseline and of warm start.

:class:`LinkPretrainRecipe` pre-trains a GNN tower on the graph alone (link prediction on the
user -> item relation plus the GFAE loss; see :mod:`torchrec_gnn.train.pretrain`), keeps the epoch
with the best held-out link AUC and, for two-stage, exports every user's and item's embedding by
layer-wise full-graph inference. It runs on one process (rank 0 of the ranker job).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.distributed as dist
from tqdm import tqdm

from torchrec_gnn.config import ExperimentConfig, differences, flat_fields
from torchrec_gnn.data.dataset import GraphRecDataset
from torchrec_gnn.data.loader import LinkTargets, find_link_relation, make_dataloader
from torchrec_gnn.graph.degree import DegreeFeatures
from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.graph.sampler import NeighborSampler
from torchrec_gnn.models.builder import build_graph_tower, tower_node_features
from torchrec_gnn.modules.gnn_tower import GNNTower
from torchrec_gnn.recipes.batches import configured_fanouts, prebuilds_csr
from torchrec_gnn.train.distributed import DistributedContext
from torchrec_gnn.train.pretrain import (
    EMBEDDINGS_FILE,
    TOWER_FILE,
    LinkPredictionModel,
    PretrainResult,
    PretrainSetup,
    export_tower,
    hold_out_edges,
    is_finished,
    link_auc,
    link_batches,
    load_pretrained,
    save_result,
)
from torchrec_gnn.train.run_dir import PRETRAIN_REPORT_FILE
from torchrec_gnn.train.sharding import copy_into_sharded, unwrap
from torchrec_gnn.typing import NodeType, edge_type_str

logger = logging.getLogger("torchrec_gnn.pretrain")


class LinkPretrainRecipe:
    """Pre-train ``tower`` by link prediction (+ GFAE) on ``graph``, then (with ``setup.export``)
    export by layer-wise full-graph inference over all of ``graph``.

    Args:
        tower (GNNTower): a freshly initialised tower for ``graph`` with an edge decoder (eager,
            one process).
        dataset (GraphRecDataset): node types and side features.
        graph (HeteroGraph): the graph as the labelled window opens (the past only).
        setup (PretrainSetup): the stage's settings.

    Example::

        result = LinkPretrainRecipe(tower, dataset, graph, PretrainSetup(PretrainConfig(), fanouts)).run()
        save_result(result, run_dir / "pretrain")
    """

    def __init__(self, tower: GNNTower, dataset: GraphRecDataset, graph: HeteroGraph, setup: PretrainSetup) -> None:
        self.tower, self.dataset, self.graph, self.setup = tower, dataset, graph, setup

    def run(self) -> PretrainResult:
        """Set up, train, export; returns the tower, the embeddings and the report."""
        start = time.perf_counter()
        self._setup()
        aucs, kept = self.train()
        pretrain_seconds = time.perf_counter() - start
        start = time.perf_counter()
        embeddings = self.export() if self.setup.export else {}
        export_seconds = time.perf_counter() - start
        report = {"relation": edge_type_str(self.relation), "steps": self.step, **self.last, "link_auc": aucs[kept],
                  "link_auc_by_epoch": aucs, "kept_epoch": kept, "pretrain_seconds": pretrain_seconds,
                  "export_seconds": export_seconds, "exported_nodes": sum(int(e.shape[0]) for e in embeddings.values())}
        logger.info("pre-training: %d steps, kept epoch %d (link AUC %.4f on %d held-out edges), %.1f s; export %.1f s",
                    self.step, kept, aucs[kept], self.val_pairs.shape[1], pretrain_seconds, export_seconds)
        tower_state = {k: v.detach().cpu().clone() for k, v in self.tower.state_dict().items()}
        return PretrainResult(tower_state, embeddings, report)

    def _setup(self) -> None:
        """Hold the link AUC's edges out for good; the model, its optimizer and both batch sets."""
        cfg, seed = self.setup.pretrain, self.setup.seed
        self.relation = find_link_relation(self.graph, self.dataset.user_type, self.dataset.item_type, cfg.link_relation)
        message_graph, self.val_pairs = hold_out_edges(self.graph, self.relation, cfg.validation_fraction, seed)
        train_edges = message_graph.edge_index(self.relation)
        if self.val_pairs.shape[1] < 1 or train_edges.shape[1] < 2:
            raise ValueError(f"pretrain: relation {self.relation} has {self.graph.num_edges(self.relation)} edges, too "
                             f"few to hold out {cfg.validation_fraction} of them for the link AUC and learn from the rest")
        per_batch = cfg.batch_size // 2
        self.steps_per_epoch = max(1, int(cfg.supervision_fraction * train_edges.shape[1]) // per_batch)
        logger.info("pre-training on %s: %d edges to predict (%d per epoch), %d held out for the link AUC",
                    edge_type_str(self.relation), train_edges.shape[1], self.steps_per_epoch * per_batch,
                    self.val_pairs.shape[1])
        self.model = LinkPredictionModel(self.tower, cfg.link_weight, cfg.gfae_weight)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        sampler = NeighborSampler(message_graph, self.setup.fanouts)
        self.train_data = link_batches(LinkTargets(self.relation, train_edges, per_batch), sampler, self.dataset,
                                       train=True, seed=seed, degree=self.setup.degree, csr=self.setup.prebuild_csr)
        self.val_data = link_batches(LinkTargets(self.relation, self.val_pairs, per_batch), sampler, self.dataset,
                                     train=False, seed=seed + 1, degree=self.setup.degree)

    def train(self) -> "tuple[List[float], int]":
        """Epochs until ``max_steps``, ``epochs`` or ``patience`` epochs without a better link AUC;
        the best epoch's tower is kept. Returns the link AUC per epoch and the kept epoch."""
        cfg, setup = self.setup.pretrain, self.setup
        per_run = cfg.epochs * self.steps_per_epoch
        total = per_run if cfg.max_steps is None else min(cfg.max_steps, per_run)
        progress = tqdm(total=total, desc="pre-train", dynamic_ncols=True, disable=not setup.progress)
        self.step, self.last = 0, {}
        aucs: List[float] = []
        best_auc, best_epoch, best_state = -1.0, -1, None
        self.model.train()
        for epoch in range(cfg.epochs):
            if self.step >= total:
                break
            self.train_data.set_epoch(epoch)  # a fresh share of the edges and fresh negatives
            for in_epoch, batch in enumerate(make_dataloader(self.train_data, setup.num_workers)):
                if self.step >= total or in_epoch >= self.steps_per_epoch:
                    break
                self._step(batch)
                progress.set_postfix(link=f"{self.last['link_loss']:.4f}", gfae=f"{self.last['gfae_loss']:.4f}")
                progress.update(1)
            aucs.append(link_auc(self.model, self.val_data, setup.num_workers, setup.device))
            logger.info("pre-training epoch %d: link AUC %.4f on held-out edges", epoch, aucs[-1])
            if aucs[-1] > best_auc:
                best_auc, best_epoch = aucs[-1], epoch
                best_state = copy.deepcopy(self.tower.state_dict()) if cfg.patience else None
            elif cfg.patience and epoch - best_epoch >= cfg.patience:
                break
        progress.close()
        if best_state is not None:
            self.tower.load_state_dict(best_state)
        return aucs, best_epoch if cfg.patience else len(aucs) - 1

    def _step(self, batch) -> None:
        loss, parts = self.model(batch.to(self.setup.device))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        self.last = {"link_loss": float(parts["link"]), "gfae_loss": float(parts["gfae"])}

    def export(self) -> Dict[NodeType, torch.Tensor]:
        """Every user's and item's embedding (N_t, H) from the trained tower, over all of the graph."""
        features = tower_node_features(self.dataset, self.graph, self.setup.degree)
        return export_tower(self.tower, features, self.graph, self.setup.pretrain.chunk_size, self.setup.progress)


def pretrain_stage(
    config: ExperimentConfig, dataset: GraphRecDataset, graph_at_start: Callable[[], HeteroGraph],
    ctx: DistributedContext, directory: Path, initial_tower: Optional[Path] = None,
    degree: Optional[DegreeFeatures] = None,
) -> Path:
    """Stage 1 inside a ranker job: rank 0 runs :class:`LinkPretrainRecipe` on the graph
    ``graph_at_start()`` builds (called on rank 0 only; from the tower saved in
    ``initial_tower``, for a refresh) and writes the tower and (two-stage) every user's and
    item's embedding to ``directory`` (kept there, so a resumed run does not redo it). Returns
    ``directory`` once every rank can read it."""
    if ctx.is_main and not is_finished(directory):
        graph = graph_at_start()
        setup = PretrainSetup(config.pretrain, configured_fanouts(config, graph), seed=config.train.seed,
                              num_workers=config.loader.num_workers, device=ctx.device,
                              export=config.model.two_stage, degree=degree, prebuild_csr=prebuilds_csr(config, ctx))
        tower = build_graph_tower(dataset, graph, config.model, device=ctx.device, edge_objective=True, history=False,
                                   freeze_node_tables=False)
        if initial_tower is not None:
            tower.load_state_dict(load_pretrained(initial_tower, TOWER_FILE))
        result = LinkPretrainRecipe(tower, dataset, graph, setup).run()
        if initial_tower is None:  # a refresh depends on its previous tower too: not reusable
            result.report["signature"] = pretrain_signature(config, graph)
        save_result(result, directory)
    dist.barrier()
    return directory


# Settings that do not decide stage 1's result (the ranker's side, and what runs after it).
NOT_STAGE_1 = frozenset({"model.embedding_dim", "model.two_stage", "model.warm_start", "model.freeze_node_tables",
                         "model.regression_loss", "model.gfae.edge_objective",  # pre-training always has the decoder
                         "pretrain.refresh_every", "pretrain.from_dir"})
STAGE_1 = ("data.", "model.", "pretrain.", "train.seed", "train.graph", "train.protocol")


def pretrain_signature(config: ExperimentConfig, graph: HeteroGraph) -> Dict[str, Any]:
    """What decides stage 1's result, ``{"section.field": value}``: the data, the graph it reads,
    the seed, the tower's and pre-training's settings (not the ranker's, the balancer's or the
    ranker job's) and the per-relation fanouts over ``graph``'s relations. Recorded in
    ``pretrain.json``; a run reading it through ``pretrain.from_dir`` must match it (as JSON:
    lists, string keys)."""
    signature = {key: value for key, value in flat_fields(config).items()
                 if key.startswith(STAGE_1) and not key.startswith("model.ranker.") and key not in NOT_STAGE_1}
    fanouts = configured_fanouts(config, graph)
    signature["fanouts"] = {edge_type_str(et): fanouts[et] for et in sorted(fanouts)}
    return json.loads(json.dumps(signature))


def reuse_pretraining(config: ExperimentConfig, graph: HeteroGraph, ctx: DistributedContext) -> Path:
    """``pretrain.from_dir``, checked: a finished pre-training whose recorded signature equals
    this run's (:func:`pretrain_signature`), with exported embeddings when ``model.two_stage``.

    Raises:
        ValueError: unfinished, recorded by a version without signatures, made with other
            settings (names every one that differs), or without the export two-stage reads.
    """
    directory = Path(config.pretrain.from_dir)
    report_path = directory / PRETRAIN_REPORT_FILE
    prefix = f"pretrain.from_dir={directory}"
    if not is_finished(directory):
        raise ValueError(f"{prefix}: not a finished pre-training (no {EMBEDDINGS_FILE})")
    try:
        report = json.loads(report_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{report_path}: unreadable ({err})") from err
    if "signature" not in report:
        raise ValueError(f"{report_path}: records no signature (pre-trained by an earlier version or a refresh); "
                         "pre-train again")
    changed = differences(report["signature"], pretrain_signature(config, graph))
    if changed:
        raise ValueError(f"{prefix}: pre-trained with other settings (recorded -> this run): {'; '.join(changed)}")
    if config.model.two_stage and not report.get("exported_nodes"):
        raise ValueError(f"{prefix}: has no exported embeddings (a warm start's pre-training); two_stage reads them")
    if ctx.is_main:
        logger.info("pre-training read from %s (link AUC %.4f, kept epoch %d; its %.1f s are not this run's)",
                    directory, report["link_auc"], report["kept_epoch"], report["pretrain_seconds"])
    return directory


def warm_start(model: torch.nn.Module, directory: Path, ctx: DistributedContext) -> None:
    """Copy the pre-trained tower (``directory/tower.pt``) into a sharded ranker's tower: node
    tables shard by shard, GNN and GFAE wholesale (an edge decoder the model lacks is left out)."""
    state = load_pretrained(directory, TOWER_FILE)
    if unwrap(model).model.graph_tower.edge_decoder is None:  # pre-training always has one
        state = {k: v for k, v in state.items() if not k.startswith("encoder.gfae.edge_decoder.")}
    copy_into_sharded(model, state, prefix="model.graph_tower.")
    if ctx.is_main:
        logger.info("warm start: the tower starts from the pre-trained one in %s (%d tensors)", directory, len(state))

"""The ranker recipe: train and evaluate E2E-GRec or any of its baselines from one config.

:class:`RankerRecipe` holds one job the way torchtune's recipes do: ``setup`` builds everything
in TorchRec's order (process group -> data and graph -> pre-training when the config asks for
it -> model on the meta device -> planner -> DMP -> dense optimizer -> loss balancer -> train
pipeline), ``train`` runs the loop with periodic evaluation, early stopping and checkpoints,
``evaluate`` scores any examples, ``save`` writes the exported model and the evaluation.
The same class trains the end-to-end model, the no-graph ranker, the two-stage ranker over
frozen pre-trained embeddings and the warm-started model; the streaming protocol is its
subclass :class:`~torchrec_gnn.recipes.stream.StreamingRankerRecipe`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from torchrec_gnn.config import ExperimentConfig, config_fingerprint, save_config
from torchrec_gnn.data.dataset import Interactions
from torchrec_gnn.data.loader import GraphBatchDataset, make_dataloader, pad_for_ranks
from torchrec_gnn.data.split import graph_before
from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.models.builder import build_graph_dlrm, tower_node_features
from torchrec_gnn.modules.gnn_tower import GNNTower
from torchrec_gnn.modules.heads import initial_output_bias
from torchrec_gnn.recipes.batches import batch_fanouts, batches, intra_op_threads, node_degrees, prepare_data
from torchrec_gnn.recipes.pretrain import pretrain_stage, reuse_pretraining, warm_start
from torchrec_gnn.train.checkpoint import CheckpointManager, resume_latest
from torchrec_gnn.train.distributed import DistributedContext, close_distributed
from torchrec_gnn.train.early_stopping import EarlyStopping
from torchrec_gnn.train.evaluation import evaluate_batches
from torchrec_gnn.train.export import export_state_dict
from torchrec_gnn.train.metrics import format_table
from torchrec_gnn.train.monitor import Reporting, TrainingMonitor
from torchrec_gnn.train.pipeline import BalancedTrainPipeline
from torchrec_gnn.train.plots import plot_run
from torchrec_gnn.train.pretrain import load_pretrained
from torchrec_gnn.train.run_dir import PRETRAIN_DIR, TRAINING_FILE
from torchrec_gnn.train.sharding import configured_optimizer, node_pooling_factors, refresh_outer_hop, shard_model, unwrap

logger = logging.getLogger("torchrec_gnn.train")

Metrics = Dict[str, Dict[str, float]]


class RankerRecipe:
    """One ranker training job on this process's rank (see the module docstring).

    Args:
        config (ExperimentConfig): the resolved config.
        ctx (DistributedContext): the initialised process group, rank and device.

    Example::

        recipe = RankerRecipe(load_config("configs/default.yaml"), init_distributed("cpu"))
        recipe.setup()
        recipe.train()
        results = recipe.save({"val": recipe.evaluate(recipe.split.val)})
    """

    def __init__(self, config: ExperimentConfig, ctx: DistributedContext) -> None:
        self.config, self.ctx = config, ctx
        self.output_dir = Path(config.train.output_dir)

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Data, pre-training (two-stage, warm start), model, sharding, optimizers, balancer and
        pipeline, in TorchRec's order; rank 0 saves the resolved config."""
        torch.set_num_threads(intra_op_threads(self.config))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(self.config.train.seed)
        self._setup_data()
        self.pretrained = self._setup_pretrained()  # stage 1's directory (two-stage, warm start)
        torch.manual_seed(self.config.train.seed)  # the same ranker draws whether stage 1 ran here or not
        self._setup_model(self.pretrained)
        self._setup_optimizer()
        if self.ctx.is_main:
            save_config(self.config, self.output_dir / "config.yaml")
            logger.info("%s\n%s", self.split.summary(), self.split.graph.summary())

    def _setup_data(self) -> None:
        self.dataset, self.split = prepare_data(self.config, self.ctx, self.output_dir)
        self.degree = node_degrees(self.config, self.split)

    def _setup_pretrained(self) -> Optional[Path]:
        """Stage 1 of two-stage and warm start, on the graph as the labelled window opens (or
        read from ``pretrain.from_dir``)."""
        if not (self.config.model.two_stage or self.config.model.warm_start):
            return None
        if self.config.pretrain.from_dir is not None:
            return reuse_pretraining(self.config, self.split.graph, self.ctx)
        start = self.split.cutoffs["train"]
        history = (lambda: graph_before(self.dataset, start)) if self.config.fresh_graph else (lambda: self.split.graph)
        return self.pretrain(history, self.output_dir / PRETRAIN_DIR)

    def _setup_model(self, pretrained: Optional[Path]) -> None:
        config, graph = self.config, self.split.graph
        model = build_graph_dlrm(self.dataset, graph, config.model, device=torch.device("meta"))
        self.loss_names: List[str] = model.loss_names
        self.balancer = config.balancer.build(len(self.loss_names))
        pooling = None
        if isinstance(model.model.graph_tower, GNNTower):  # node tables: check their size, hint the planner
            model.model.graph_tower.check_num_nodes(graph.num_nodes)
            degrees = {et: graph.num_edges(et) / max(graph.num_nodes[et[2]], 1) for et in graph.edge_types}
            seeds = {t: config.loader.batch_size for t in {self.dataset.user_type, self.dataset.item_type}}
            pooling = node_pooling_factors(graph.num_nodes, degrees, batch_fanouts(config, graph), seeds)
        self.model, plan = shard_model(model, self.ctx.device, config.sharding, pooling_factors=pooling)
        if config.model.two_stage:  # DMP built the frozen tables empty on every rank: fill them
            unwrap(self.model).model.graph_tower.load_embeddings(load_pretrained(pretrained))
        elif config.model.warm_start:
            warm_start(self.model, pretrained, self.ctx)
        # Every head starts from the constant best (mean log1p, log-odds) of the first labels it
        # trains on (streaming: the first period's, never scored), the same on every rank.
        first_labels = self.first_examples().labels
        bias = initial_output_bias(first_labels.nan_to_num(0.0), ~first_labels.isnan(), self.dataset.tasks)
        unwrap(self.model).model.task_heads.init_output_bias(bias.to(self.ctx.device))
        if self.ctx.is_main:
            logger.info("sharding plan:\n%s", plan)

    def _setup_optimizer(self) -> None:
        extra = {f"balancer.{i}": p for i, p in enumerate(self.balancer.backward_parameters())}
        self.optimizer = configured_optimizer(self.model, self.config.sharding, extra)
        self.pipeline = BalancedTrainPipeline(self.model, self.optimizer, self.balancer, self.ctx.device)

    def first_examples(self) -> Interactions:
        """The examples the model trains on first (their labels set the heads' initial bias)."""
        return self.split.train

    def pretrain(self, graph_at_start: Callable[[], HeteroGraph], directory: Path,
                 initial_tower: Optional[Path] = None) -> Path:
        """Stage 1 into ``directory`` (see :func:`~torchrec_gnn.recipes.pretrain.pretrain_stage`)."""
        return pretrain_stage(self.config, self.dataset, graph_at_start, self.ctx, directory, initial_tower, self.degree)

    @cached_property
    def full_node_features(self) -> Dict[str, torch.Tensor]:
        """Every node's side features as the tower reads them in a full-graph pass (the graph
        does not change during a run: built once, for the history's refreshes)."""
        return tower_node_features(self.dataset, self.split.graph, self.degree)

    def batches(self, examples: Interactions, train: bool, batch_size: Optional[int] = None,
                links_before: Optional[int] = None) -> GraphBatchDataset:
        """This rank's batches of ``examples`` (see :func:`torchrec_gnn.recipes.batches.batches`)."""
        return batches(self.config, self.split.graph, self.dataset, examples, train=train, ctx=self.ctx,
                       batch_size=batch_size, links_before=links_before, degree=self.degree)

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, examples: Interactions, refresh: bool = True) -> Metrics:
        """Metrics of the model on ``examples`` (all ranks; every rank returns the global figures).
        A tower with a history refreshes it first, unless ``refresh`` is False (the model has not
        changed since the last evaluation refreshed it)."""
        if refresh:
            refresh_outer_hop(self.model, self.split.graph, self.full_node_features)
        model = self.pipeline.detach()
        model.eval()
        # Every rank needs the same number of batches (the sharded lookups are collectives): pad with
        # label-less rows so all examples are scored and the padding counts for nothing.
        world = self.ctx.world_size
        batch_size = min(self.config.loader.eval_batch_size, -(-len(examples) // world))
        data = self.batches(pad_for_ranks(examples, batch_size, world), train=False, batch_size=batch_size)
        loader = make_dataloader(data, self.config.loader.num_workers, pin_memory=self.ctx.device.type == "cuda")
        metrics, _ = evaluate_batches(model, loader, self.dataset.tasks, self.dataset.user_type, self.ctx.device)
        model.train()
        self.pipeline.attach(model)
        return metrics

    # ------------------------------------------------------------------ training
    def checkpoints(self) -> CheckpointManager:
        """Checkpoints of this run: ``train.checkpoint_dir`` or ``output_dir/checkpoints``."""
        train = self.config.train
        root = Path(train.checkpoint_dir) if train.checkpoint_dir else self.output_dir / "checkpoints"
        return CheckpointManager(root, keep=train.keep_checkpoints)

    def _state(self) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """(sharded, replicated) objects of a checkpoint."""
        return {"model": self.model, "optimizer": self.optimizer}, {"balancer": self.balancer}

    def train(self, resume: bool = False) -> List[Dict[str, Any]]:
        """The loop over ``train.epochs`` (at most ``train.max_steps``), from the latest complete
        checkpoint when ``resume``; returns the logged records (also in ``metrics.jsonl``)."""
        cfg = self.config
        # On a fresh graph the edge objective predicts only edges older than the training window.
        links_before = self.split.cutoffs["train"] if cfg.fresh_graph else None
        data = self.batches(self.split.train, train=True, links_before=links_before)
        total_steps = cfg.train.epochs * len(data)
        if cfg.train.max_steps is not None:
            total_steps = min(total_steps, cfg.train.max_steps)
        manager = self.checkpoints()
        fingerprint = config_fingerprint(cfg)  # in every checkpoint: a resume loads only this run's
        position = {"step": 0, "epoch": 0, "batch_in_epoch": 0}
        if resume:
            position = resume_latest(manager, *self._state(), fingerprint, self.ctx.world_size)
        loop = _Loop(step=int(position["step"]), total_steps=total_steps, fingerprint=fingerprint, manager=manager,
                     best=CheckpointManager(manager.root / "best", keep=1))  # the best validation step's weights
        if cfg.train.early_stopping_patience:
            loop.stopper = EarlyStopping(cfg.train.early_stopping_patience, cfg.train.early_stopping_metric)
            if "early_stopping" in position:
                loop.stopper.load_state_dict(position["early_stopping"])
        reporting = Reporting(loop.step, total_steps, cfg.loader.batch_size, cfg.train.log_every,
                              cfg.train.metrics_window, cfg.train.tensorboard)
        loop.monitor = TrainingMonitor(self.loss_names, self.dataset.tasks, self.ctx, self.output_dir, reporting)
        loop.has_history = refresh_outer_hop(self.model, self.split.graph, self.full_node_features)
        for epoch in range(position["epoch"], cfg.train.epochs):
            if loop.step >= total_steps:
                break
            data.set_epoch(epoch)
            self._train_epoch(data, epoch, position["batch_in_epoch"] if epoch == position["epoch"] else 0, loop)
            if loop.stopper is not None and loop.stopper.should_stop:
                break
        loop.monitor.close()
        self._finish(loop)
        return loop.monitor.records

    def _train_epoch(self, data: GraphBatchDataset, epoch: int, start: int, loop: "_Loop") -> None:
        """Steps of one epoch from its batch ``start``: train, report, evaluate and checkpoint."""
        cfg = self.config.train
        loader = make_dataloader(data, self.config.loader.num_workers, pin_memory=self.ctx.device.type == "cuda",
                                 start=start)
        iterator, in_epoch = iter(loader), start
        while loop.step < loop.total_steps:
            try:
                out = self.pipeline.progress(iterator)
            except StopIteration:
                return
            loop.step += 1
            in_epoch += 1
            if loop.has_history and loop.step % self.config.model.gnn.history_refresh_every == 0:
                refresh_outer_hop(self.model, self.split.graph, self.full_node_features)
            loop.monitor.step(loop.step, epoch, out)
            at_end = in_epoch == len(data)
            trainer_state = {"epoch": epoch + at_end, "batch_in_epoch": 0 if at_end else in_epoch,
                             "config_fingerprint": loop.fingerprint}
            if cfg.eval_every and loop.step % cfg.eval_every == 0:
                self._validate(loop, trainer_state)
            if loop.stopper is not None:
                trainer_state["early_stopping"] = loop.stopper.state_dict()
            stop_early = loop.stopper is not None and loop.stopper.should_stop
            if (cfg.checkpoint_every and loop.step % cfg.checkpoint_every == 0) or loop.step == loop.total_steps or stop_early:
                loop.manager.save(loop.step, *self._state(), trainer_state)
            if stop_early:
                return

    def _validate(self, loop: "_Loop", trainer_state: Dict[str, Any]) -> None:
        """Score the validation split; with early stopping, keep a new best step's weights aside."""
        val = self.evaluate(self.split.val)
        record: Dict[str, Any] = {"step": loop.step, "eval": {"val": val}}
        if loop.stopper is not None:
            if loop.stopper.update(loop.step, val):
                loop.best.save(loop.step, *self._state(), trainer_state)
            record["early_stopping"] = loop.stopper.state_dict()
        loop.monitor.write(record)

    def _finish(self, loop: "_Loop") -> None:
        """Restore the best validation step (early stopping) and record which step is kept."""
        stopper, kept = loop.stopper, loop.step
        if stopper is not None and stopper.best_step is not None and stopper.best_step != loop.step:
            loop.best.load(loop.best.latest(), *self._state())
            kept = stopper.best_step
            if self.ctx.is_main:
                reason = "stopped early" if stopper.should_stop else "finished"
                logger.info("%s at step %d; restored step %d (best validation %s %.4f) for the final evaluation",
                            reason, loop.step, stopper.best_step, stopper.metric, stopper.best)
        if self.ctx.is_main:  # which step the final evaluation scores (compare reports it per run)
            summary = {"steps": loop.step, "kept_step": kept,
                       "stopped_early": bool(stopper is not None and stopper.should_stop)}
            (self.output_dir / TRAINING_FILE).write_text(json.dumps(summary))

    # ------------------------------------------------------------------ results
    def run(self, resume: bool = False) -> Dict[str, Metrics]:
        """Train, then score the validation and test splits and save (see :meth:`save`)."""
        if self.config.train.max_steps == 0 and self.ctx.is_main:
            logger.warning("train.max_steps=0: no training step; the evaluation scores the initial model")
        self.train(resume=resume)
        results = {"val": self.evaluate(self.split.val), "test": self.evaluate(self.split.test, refresh=False)}
        # One ordinary state dict (tables gathered from their shards) for evaluation or serving.
        export_state_dict(
            self.model, lambda device: build_graph_dlrm(self.dataset, self.split.graph, self.config.model, device),
            self.output_dir / "model.pt",
        )
        return self.save(results, title=f"{self.config.name}: evaluation")

    def save(self, results: Dict[str, Metrics], title: str) -> Dict[str, Metrics]:
        """Rank 0 writes ``eval.json`` (and the run's plots), prints the table; returns ``results``."""
        if self.ctx.is_main:
            (self.output_dir / "eval.json").write_text(json.dumps(results, indent=1))
            if self.config.train.plots and self.config.train.protocol == "static":
                plots = plot_run(self.output_dir)
                logger.info("plots: %s", ", ".join(str(p) for p in plots))
            print(format_table(results, title=title))
        return results

    def cleanup(self, wait_for_peers: bool = True) -> None:
        """Leave the process group (:func:`~torchrec_gnn.train.distributed.close_distributed`);
        ``wait_for_peers=False`` after a failure."""
        close_distributed(wait_for_peers)


@dataclass
class _Loop:
    """The training loop's moving parts: position, checkpoints, early stopping, reporting."""

    step: int
    total_steps: int
    fingerprint: str
    manager: CheckpointManager
    best: CheckpointManager
    stopper: Optional[EarlyStopping] = None
    monitor: Optional[TrainingMonitor] = None
    has_history: bool = False

"""Train and evaluate E2E-GRec (or an ablation) from one YAML config.

Single process::

    python -m torchrec_gnn train --config configs/default.yaml --set train.max_steps=50

Sharded over 2 processes (gloo on CPU, nccl on CUDA)::

    torchrun --standalone --nproc_per_node=2 -m torchrec_gnn train --config configs/default.yaml

Setup order follows TorchRec's DLRM launcher: process group -> data and graph -> model on the
meta device -> fused table optimizer -> planner -> DMP -> dense optimizer -> loss balancer ->
train pipeline -> loop with periodic evaluation and checkpoints -> final evaluation on the
validation and test splits.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
from tqdm import tqdm

from torchrec_gnn.config import ExperimentConfig, config_fingerprint, load_config, save_config
from torchrec_gnn.console import configure_console
from torchrec_gnn.data.batch import GraphBatch
from torchrec_gnn.data.dataset import GraphRecDataset, Interactions
from torchrec_gnn.data.loader import GraphBatchDataset, LinkTargets, make_dataloader, pad_for_ranks
from torchrec_gnn.data.registry import load_dataset
from torchrec_gnn.data.split import TimeSplit, graph_before, streaming_graph, time_split
from torchrec_gnn.graph.degree import DegreeFeatures
from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.graph.sampler import NeighborSampler, fanouts_by_relation
from torchrec_gnn.models.builder import build_graph_dlrm, build_graph_tower, tower_node_features
from torchrec_gnn.modules.gnn_tower import GNNTower
from torchrec_gnn.modules.heads import initial_output_bias
from torchrec_gnn.recipes.stream import run_stream, stream_periods_of
from torchrec_gnn.train.balancing import LossBalancer
from torchrec_gnn.train.checkpoint import CheckpointError, CheckpointManager
from torchrec_gnn.train.distributed import DistributedContext, init_distributed
from torchrec_gnn.train.early_stopping import EarlyStopping
from torchrec_gnn.train.export import export_state_dict
from torchrec_gnn.train.metrics import MultiTaskEvaluator, TrainingWindowMetrics, format_table
from torchrec_gnn.train.pipeline import BalancedTrainPipeline, StepOutput
from torchrec_gnn.train.plots import plot_run
from torchrec_gnn.train.pretrain import (
    EMBEDDINGS_FILE,
    PRETRAIN_DIR,
    TOWER_FILE,
    PretrainSetup,
    load_pretrained,
    pretrain_and_export,
    save_result,
)
from torchrec_gnn.train.run_dir import check_run_directory, clear_run
from torchrec_gnn.train.run_log import RunLog
from torchrec_gnn.train.sharding import (
    copy_into_sharded,
    make_optimizer,
    node_pooling_factors,
    refresh_outer_hop,
    shard_model,
    unwrap,
)
from torchrec_gnn.typing import EdgeType

logger = logging.getLogger("torchrec_gnn.train")

TRAINING_FILE = "training.json"  # steps trained and the step the final evaluation scores


@dataclass
class Job:
    """Everything a run holds after setup."""

    config: ExperimentConfig
    ctx: DistributedContext
    dataset: GraphRecDataset
    split: TimeSplit
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    balancer: LossBalancer
    pipeline: BalancedTrainPipeline
    loss_names: List[str]
    output_dir: Path
    degree: Optional[DegreeFeatures] = None

    @cached_property
    def full_node_features(self) -> Dict[str, torch.Tensor]:
        """Every node's side features as the tower reads them in a full-graph pass (the graph
        does not change during a run: built once, for the history's refreshes)."""
        return tower_node_features(self.dataset, self.split.graph, self.degree)


def build_parser() -> argparse.ArgumentParser:
    """The ``train`` command's flags; each one is a shortcut for a config field."""
    parser = argparse.ArgumentParser(prog="torchrec-gnn train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=str, default=None, help="YAML config (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field, e.g. --set loader.batch_size=512 (repeatable)")
    parser.add_argument("--max-steps", type=int, default=None, help="train.max_steps")
    parser.add_argument("--output-dir", type=str, default=None, help="train.output_dir")
    parser.add_argument("--checkpoint-dir", type=str, default=None, help="train.checkpoint_dir")
    parser.add_argument("--seed", type=int, default=None, help="train.seed")
    parser.add_argument("--device", type=str, default=None, choices=["auto", "cpu", "cuda"], help="train.device")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest complete checkpoint in the checkpoint directory "
                             "(automatic when torchrun restarts the workers, see --max-restarts)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start this run in an output directory that holds another run, deleting that run's files")
    return parser


def resolve_config(args: argparse.Namespace) -> ExperimentConfig:
    """The YAML config with ``--set`` overrides, then the dedicated flags on top."""
    overrides = list(args.overrides)
    flags = {"train.max_steps": args.max_steps, "train.output_dir": args.output_dir,
             "train.checkpoint_dir": args.checkpoint_dir, "train.seed": args.seed, "train.device": args.device}
    overrides += [f"{key}={value}" for key, value in flags.items() if value is not None]
    return load_config(args.config, overrides)


# ---------------------------------------------------------------------------------------- setup
def prepare_data(config: ExperimentConfig, ctx: DistributedContext, output_dir: Path) -> tuple:
    """Load the data set, split it by time and share its graph through a memory-mapped copy."""
    dataset = load_dataset(config.data)
    fractions = (config.data.history_fraction, config.data.val_fraction, config.data.test_fraction)
    graph_dir = output_dir / "graph"
    if ctx.is_main:  # rank 0 builds the graph once and saves it
        # A fresh graph: every edge with its time (temporal sampling shows each batch its past only).
        (streaming_graph(dataset) if config.fresh_graph else time_split(dataset, *fractions).graph).save(graph_dir)
    dist.barrier()
    # Every rank maps the same files: the topology is held once per host.
    split = time_split(dataset, *fractions, graph=HeteroGraph.load(graph_dir, mmap=True))
    return dataset, split


def configured_fanouts(config: ExperimentConfig, graph: HeteroGraph) -> Dict[EdgeType, List[int]]:
    """The per-relation fanouts of ``loader.fanouts`` and ``loader.relation_fanouts``."""
    return fanouts_by_relation(graph, config.loader.fanouts, config.loader.relation_fanouts)


def batch_fanouts(config: ExperimentConfig, graph: HeteroGraph) -> Dict[EdgeType, List[int]]:
    """What the ranker's batches sample: the configured fanouts, less the last hop when the
    outer hop comes from the history, none for the two-stage ranker (it reads its users' and
    items' embeddings from a table)."""
    if config.model.two_stage:
        return {et: [] for et in graph.edge_types}
    fanouts = configured_fanouts(config, graph)
    if config.model.gnn.outer_hop == "history":
        fanouts = {et: f[:-1] for et, f in fanouts.items()}
    return fanouts


def node_degrees(config: ExperimentConfig, split: TimeSplit) -> Optional[DegreeFeatures]:
    """The degree columns of ``model.node_degree``, scaled on the graph as the training
    window opens (the same on every rank and in ``eval``); None when off."""
    if not (config.model.node_degree and config.model.use_graph):
        return None
    return DegreeFeatures.fit(split.graph, before=split.cutoffs["train"])


def pretrain_stage(
    config: ExperimentConfig, dataset: GraphRecDataset, graph_at_start: Callable[[], HeteroGraph],
    ctx: DistributedContext, directory: Path, initial_tower: Optional[Path] = None,
    degree: Optional[DegreeFeatures] = None,
) -> Path:
    """Stage 1 of the two-stage baseline and of warm start: rank 0 pre-trains the GNN tower on
    the graph ``graph_at_start()`` builds (called on rank 0 only) by link prediction (from the
    tower saved in ``initial_tower``, for a refresh) and writes the tower and (two-stage) every
    user's and item's exported embedding to ``directory`` (kept there, so a resumed run does not
    redo it). Returns ``directory`` once every rank can read it."""
    if ctx.is_main and not (directory / EMBEDDINGS_FILE).is_file():
        graph = graph_at_start()
        setup = PretrainSetup(config.pretrain, configured_fanouts(config, graph), seed=config.train.seed,
                              num_workers=config.loader.num_workers, device=ctx.device,
                              export=config.model.two_stage, degree=degree)
        tower = build_graph_tower(dataset, graph, config.model, device=ctx.device, edge_objective=True, history=False)
        if initial_tower is not None:
            tower.load_state_dict(load_pretrained(initial_tower, TOWER_FILE))
        save_result(pretrain_and_export(tower, dataset, graph, setup), directory)
    dist.barrier()
    return directory


def warm_start(model: torch.nn.Module, directory: Path, ctx: DistributedContext) -> None:
    """Copy the pre-trained tower (``directory/tower.pt``) into the sharded model's tower: node
    tables shard by shard, GNN and GFAE wholesale (an edge decoder the model lacks is left out)."""
    state = load_pretrained(directory, TOWER_FILE)
    if unwrap(model).model.graph_tower.edge_decoder is None:  # pre-training always has one
        state = {k: v for k, v in state.items() if not k.startswith("encoder.gfae.edge_decoder.")}
    copy_into_sharded(model, state, prefix="model.graph_tower.")
    if ctx.is_main:
        logger.info("warm start: the tower starts from the pre-trained one in %s (%d tensors)", directory, len(state))


def batches(
    config: ExperimentConfig, graph: HeteroGraph, dataset: GraphRecDataset, examples: Interactions,
    train: bool, ctx: Optional[DistributedContext] = None, batch_size: Optional[int] = None,
    links_before: Optional[int] = None, degree: Optional[DegreeFeatures] = None,
) -> GraphBatchDataset:
    """The GraphBatchDataset of ``examples`` for this rank (one process without ``ctx``;
    ``batch_size`` overrides the config's). Training batches are shuffled (whole batches of
    consecutive examples on a fresh graph), except under the streaming protocol (time order, as
    a streaming trainer reads them); the edge objective's links are the graph's edges older than
    ``links_before`` when given; ``degree`` adds degree columns to an end-to-end tower's side features."""
    loader, model = config.loader, config.model
    sampler = NeighborSampler(graph, batch_fanouts(config, graph), replace=loader.replace, temporal=loader.temporal,
                              temporal_strategy=loader.temporal_strategy)
    end_to_end = model.use_graph and not model.two_stage
    links = None
    if train and end_to_end and model.gfae.edge_objective:  # the edge objective's held-out history edges
        links = LinkTargets.from_graph(graph, dataset.user_type, dataset.item_type, model.gfae.edge_relation,
                                       model.gfae.edge_links_per_batch, model.gfae.edge_neg_ratio, links_before)
    return GraphBatchDataset(
        examples, sampler, dataset.user_type, dataset.item_type,
        batch_size=batch_size or (loader.batch_size if train else loader.eval_batch_size),
        node_types=graph.node_types, sparse_names=list(dataset.sparse_cardinality),
        node_features=dataset.node_features if end_to_end else None,
        shuffle=train and config.train.protocol == "static", batch_by_time=config.fresh_graph,
        degree=degree if end_to_end else None, drop_last=train, seed=config.train.seed,
        rank=ctx.rank if ctx else 0, world_size=ctx.world_size if ctx else 1, links=links,
    )


def score_batch(evaluator: MultiTaskEvaluator, outputs: torch.Tensor, batch: GraphBatch, user_type: str) -> None:
    """Add one batch's outputs (B, T) to ``evaluator``, grouped by the examples' users (GAUC)."""
    users = batch.node_ids[user_type].values()[batch.user_index]
    evaluator.update(outputs, batch.labels, batch.label_mask, users)


def intra_op_threads(config: ExperimentConfig, ctx: DistributedContext) -> int:
    """Threads per training process: this process's share of the cores, minus its workers."""
    if config.loader.num_threads is not None:
        return config.loader.num_threads
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cores = (os.cpu_count() or 1) // max(local_ranks, 1)
    return max(1, cores - config.loader.num_workers)


def setup(config: ExperimentConfig, ctx: DistributedContext) -> Job:
    """Data, model on meta, sharding, optimizers, balancer and pipeline, in TorchRec's order."""
    torch.set_num_threads(intra_op_threads(config, ctx))
    output_dir = Path(config.train.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.train.seed)
    dataset, split = prepare_data(config, ctx, output_dir)
    static = config.train.protocol == "static"
    degree = node_degrees(config, split)
    pretrained = None
    if config.model.two_stage or config.model.warm_start:
        # Pre-training sees the graph as it stands when the labelled window opens.
        history = (lambda: graph_before(dataset, split.cutoffs["train"])) if config.fresh_graph else (lambda: split.graph)
        pretrained = pretrain_stage(config, dataset, history, ctx, output_dir / PRETRAIN_DIR, degree=degree)
    model = build_graph_dlrm(dataset, split.graph, config.model, device=torch.device("meta"))
    loss_names = model.loss_names
    balancer = config.balancer.build(len(loss_names))
    graph = split.graph
    pooling = None
    if isinstance(model.model.graph_tower, GNNTower):  # node tables: check their size, hint the planner
        model.model.graph_tower.check_num_nodes(graph.num_nodes)
        degrees = {et: graph.num_edges(et) / max(graph.num_nodes[et[2]], 1) for et in graph.edge_types}
        seeds = {t: config.loader.batch_size for t in {dataset.user_type, dataset.item_type}}
        pooling = node_pooling_factors(graph.num_nodes, degrees, batch_fanouts(config, graph), seeds)
    dmp, plan = shard_model(model, ctx.device, config.sharding, pooling_factors=pooling)
    if config.model.two_stage:  # DMP built the frozen tables empty on every rank: fill them
        unwrap(dmp).model.graph_tower.load_embeddings(load_pretrained(pretrained))
    elif config.model.warm_start:
        warm_start(dmp, pretrained, ctx)
    # Every head starts from the constant best (mean log1p, log-odds) of the first labels it
    # trains on (streaming: the first period's, never scored), the same on every rank.
    first_labels = (split.train if static else stream_periods_of(split, config.train.periods)[0]).labels
    bias = initial_output_bias(first_labels.nan_to_num(0.0), ~first_labels.isnan(), dataset.tasks)
    unwrap(dmp).model.task_heads.init_output_bias(bias.to(ctx.device))
    if ctx.is_main:
        logger.info("sharding plan:\n%s", plan)
    extra = {f"balancer.{i}": p for i, p in enumerate(balancer.backward_parameters())}
    optimizer = make_optimizer(dmp, config.sharding.dense_lr, extra)
    pipeline = BalancedTrainPipeline(dmp, optimizer, balancer, ctx.device)
    if ctx.is_main:
        save_config(config, output_dir / "config.yaml")
    return Job(config, ctx, dataset, split, dmp, optimizer, balancer, pipeline, loss_names, output_dir, degree)


# ------------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate(job: Job, examples: Interactions, refresh: bool = True) -> Dict[str, Dict[str, float]]:
    """Metrics of the model on ``examples`` (all ranks; every rank returns the global figures).
    A tower with a history refreshes it first, unless ``refresh`` is False (the model has not
    changed since the last evaluation refreshed it)."""
    if refresh:
        refresh_outer_hop(job.model, job.split.graph, job.full_node_features)
    model = job.pipeline.detach()
    model.eval()
    evaluator = MultiTaskEvaluator(job.dataset.tasks)
    # Every rank needs the same number of batches (the sharded lookups are collectives): pad with
    # label-less rows so all examples are scored and the padding counts for nothing.
    world = job.ctx.world_size
    batch_size = min(job.config.loader.eval_batch_size, -(-len(examples) // world))
    examples = pad_for_ranks(examples, batch_size, world)
    data = batches(job.config, job.split.graph, job.dataset, examples, train=False, ctx=job.ctx, batch_size=batch_size,
                   degree=job.degree)
    pin = job.ctx.device.type == "cuda"
    for batch in make_dataloader(data, job.config.loader.num_workers, pin_memory=pin):
        batch = batch.to(job.ctx.device, non_blocking=pin)
        _, (_, outputs, _) = model(batch)
        score_batch(evaluator, outputs, batch, job.dataset.user_type)
    model.train()
    job.pipeline.attach(model)
    return evaluator.compute()


# -------------------------------------------------------------------------------------- training
def _record(job: Job, step: int, epoch: int, out: StepOutput, examples_per_s: float,
            window: Dict[str, Dict[str, float]]) -> Dict[str, object]:
    losses = dict(zip(job.loss_names, out.losses.tolist()))
    return {
        "step": step,
        "epoch": epoch,
        "loss": float(out.total),
        "losses": losses,
        "task_weights": dict(zip(job.loss_names, out.weights.tolist())),
        "examples_per_s": examples_per_s,
        "window": window,
    }


def _postfix(record: Dict[str, Any]) -> Dict[str, str]:
    """The progress bar's figures: the loss, examples/s, each binary task's windowed NE and AUC."""
    postfix = {"loss": f"{record['loss']:.4f}", "ex_s": f"{record['examples_per_s']:.0f}"}
    for task, values in record["window"].items():
        postfix[task] = f"NE {values['window_ne']:.3f} AUC {values['window_auc']:.3f}"
    return postfix


def check_finite(out: StepOutput, where: str) -> None:
    """Raise ``FloatingPointError`` naming ``where`` and every loss if the step's loss is not finite."""
    if not math.isfinite(float(out.total)):
        raise FloatingPointError(f"{where}: loss is {float(out.total)}; per-loss {out.losses.tolist()}")


def checkpoint_manager(job: Job) -> CheckpointManager:
    """Checkpoints of this run: ``train.checkpoint_dir`` or ``output_dir/checkpoints``."""
    root = Path(job.config.train.checkpoint_dir) if job.config.train.checkpoint_dir else job.output_dir / "checkpoints"
    return CheckpointManager(root, keep=job.config.train.keep_checkpoints)


def _state(job: Job) -> tuple:
    """(sharded, replicated) objects of a checkpoint."""
    return {"model": job.model, "optimizer": job.optimizer}, {"balancer": job.balancer}


def resume(job: Job, manager: CheckpointManager, fingerprint: str) -> Dict[str, object]:
    """Load the latest complete checkpoint written by the run whose config has ``fingerprint``;
    returns its trainer state (``step``, ``epoch``, ``batch_in_epoch`` and, with early stopping,
    ``early_stopping``)."""
    latest = manager.latest()
    if latest is None:
        raise CheckpointError(f"--resume: no complete checkpoint in {manager.root}")
    state = manager.load(latest, *_state(job), expect={"config_fingerprint": fingerprint})
    if state["world_size"] != job.ctx.world_size and state["batch_in_epoch"] != 0:
        raise CheckpointError(
            f"{latest}: saved by {state['world_size']} rank(s) in the middle of epoch {state['epoch']}; the "
            f"per-rank data position cannot be mapped to {job.ctx.world_size} rank(s). Resume with "
            f"--nproc_per_node={state['world_size']}, or from a checkpoint at an epoch boundary"
        )
    if job.ctx.is_main:
        logger.info("resumed from %s (step %d, epoch %d, batch %d)", latest, state["step"], state["epoch"],
                    state["batch_in_epoch"])
    return state


def train(job: Job, resume_from_checkpoint: bool = False) -> List[Dict[str, object]]:
    """The loop; returns the logged records (also appended to ``metrics.jsonl`` on rank 0)."""
    cfg, ctx = job.config, job.ctx
    # On a fresh graph the edge objective predicts only edges older than the training window.
    links_before = job.split.cutoffs["train"] if cfg.fresh_graph else None
    data = batches(cfg, job.split.graph, job.dataset, job.split.train, train=True, ctx=ctx, links_before=links_before,
                   degree=job.degree)
    total_steps = cfg.train.epochs * len(data)
    if cfg.train.max_steps is not None:
        total_steps = min(total_steps, cfg.train.max_steps)
    manager = checkpoint_manager(job)
    fingerprint = config_fingerprint(cfg)  # in every checkpoint: a resume loads only this run's
    position = resume(job, manager, fingerprint) if resume_from_checkpoint else {"step": 0, "epoch": 0, "batch_in_epoch": 0}
    step = int(position["step"])
    stopper = None
    if cfg.train.early_stopping_patience:
        stopper = EarlyStopping(cfg.train.early_stopping_patience, cfg.train.early_stopping_metric)
        if "early_stopping" in position:
            stopper.load_state_dict(position["early_stopping"])
    best = CheckpointManager(manager.root / "best", keep=1)  # the best validation step's weights
    records: List[Dict[str, object]] = []
    run_log = RunLog(job.output_dir, step, cfg.train.tensorboard) if ctx.is_main else None
    progress = tqdm(total=total_steps, initial=step, desc="train", disable=not ctx.is_main, dynamic_ncols=True)
    window_start, window_examples = time.perf_counter(), 0
    window_metrics = TrainingWindowMetrics(job.dataset.tasks, cfg.loader.batch_size, cfg.train.metrics_window,
                                           ctx.world_size, ctx.rank, ctx.device)
    has_history = refresh_outer_hop(job.model, job.split.graph, job.full_node_features)
    refresh_every = cfg.model.gnn.history_refresh_every
    for epoch in range(position["epoch"], cfg.train.epochs):
        if step >= total_steps:
            break
        data.set_epoch(epoch)
        start = position["batch_in_epoch"] if epoch == position["epoch"] else 0
        loader = make_dataloader(data, cfg.loader.num_workers, pin_memory=ctx.device.type == "cuda", start=start)
        iterator, in_epoch = iter(loader), start
        while step < total_steps:
            try:
                out = job.pipeline.progress(iterator)
            except StopIteration:
                break
            step += 1
            in_epoch += 1
            if has_history and step % refresh_every == 0:
                refresh_outer_hop(job.model, job.split.graph, job.full_node_features)
            window_examples += out.outputs.shape[0] * ctx.world_size
            check_finite(out, f"step {step}")
            window_metrics.update(out.outputs, out.labels)
            if step % cfg.train.log_every == 0 or step == total_steps:
                now = time.perf_counter()
                record = _record(job, step, epoch, out, window_examples / max(now - window_start, 1e-9),
                                 window_metrics.compute())
                window_start, window_examples = now, 0
                records.append(record)
                if run_log is not None:
                    run_log.write(record)
                progress.set_postfix(_postfix(record))
            at_end = in_epoch == len(data)
            trainer_state = {"epoch": epoch + at_end, "batch_in_epoch": 0 if at_end else in_epoch,
                             "config_fingerprint": fingerprint}
            if cfg.train.eval_every and step % cfg.train.eval_every == 0:
                val = evaluate(job, job.split.val)
                record = {"step": step, "eval": {"val": val}}
                if stopper is not None:
                    if stopper.update(step, val):
                        best.save(step, *_state(job), trainer_state)
                    record["early_stopping"] = stopper.state_dict()
                if run_log is not None:
                    run_log.write(record)
            if stopper is not None:
                trainer_state["early_stopping"] = stopper.state_dict()
            stop_early = stopper is not None and stopper.should_stop
            if (cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0) or step == total_steps or stop_early:
                manager.save(step, *_state(job), trainer_state)
            progress.update(1)
            if stop_early:
                break
        if stopper is not None and stopper.should_stop:
            break
    progress.close()
    if run_log is not None:
        run_log.close()
    kept = step
    if stopper is not None and stopper.best_step is not None and stopper.best_step != step:
        best.load(best.latest(), *_state(job))
        kept = stopper.best_step
        if ctx.is_main:
            reason = "stopped early" if stopper.should_stop else "finished"
            logger.info("%s at step %d; restored step %d (best validation %s %.4f) for the final evaluation",
                        reason, step, stopper.best_step, stopper.metric, stopper.best)
    if ctx.is_main:  # which step the final evaluation scores (compare reports it per run)
        summary = {"steps": step, "kept_step": kept, "stopped_early": bool(stopper is not None and stopper.should_stop)}
        (job.output_dir / TRAINING_FILE).write_text(json.dumps(summary))
    return records


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Run the job; returns ``{split: {task: {metric: value}}}`` (also written to ``eval.json``)."""
    configure_console()
    args = build_parser().parse_args(argv)
    config = resolve_config(args)
    streaming = config.train.protocol == "streaming"
    if streaming and args.resume:
        raise CheckpointError("--resume: a streaming run keeps no checkpoints between periods; run it again")
    if config.fresh_graph:
        config.loader.temporal = True  # each batch sees only the graph's past
    # torchrun --max-restarts N restarts every worker after a failure: the run continues.
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    continues = args.resume or restarted
    check_run_directory(config, resume=continues, overwrite=args.overwrite)  # before any write
    ctx = init_distributed(config.train.device)
    try:
        start = time.perf_counter()
        if args.overwrite and not continues:
            dist.barrier()  # every rank has checked the directory before rank 0 empties it
            if ctx.is_main:
                removed = clear_run(config)
                if removed:
                    logger.info("--overwrite: removed the previous run's %s", ", ".join(p.name for p in removed))
        job = setup(config, ctx)
        if ctx.is_main:
            logger.info("%s\n%s", job.split.summary(), job.split.graph.summary())
        if streaming:
            results = run_stream(job, setup_seconds=time.perf_counter() - start)
            if ctx.is_main:
                (job.output_dir / "eval.json").write_text(json.dumps(results, indent=1))
                print(format_table(results, title=f"{config.name}: streaming, mean over periods 2-{config.train.periods}"))
            return results
        # After a torchrun restart: pick up where the latest complete checkpoint left off (or
        # from scratch if none was written yet).
        if config.train.max_steps == 0 and ctx.is_main:
            logger.warning("train.max_steps=0: no training step; the evaluation scores the initial model")
        if restarted and ctx.is_main:
            logger.info("restart %s of this job", os.environ["TORCHELASTIC_RESTART_COUNT"])
        train(job, resume_from_checkpoint=args.resume or (restarted and checkpoint_manager(job).latest() is not None))
        results = {"val": evaluate(job, job.split.val), "test": evaluate(job, job.split.test, refresh=False)}
        # One ordinary state dict (tables gathered from their shards) for evaluation or serving.
        export_state_dict(
            job.model, lambda device: build_graph_dlrm(job.dataset, job.split.graph, config.model, device),
            job.output_dir / "model.pt",
        )
        if ctx.is_main:
            (job.output_dir / "eval.json").write_text(json.dumps(results, indent=1))
            if config.train.plots:
                plots = plot_run(job.output_dir)
                logger.info("plots: %s", ", ".join(str(p) for p in plots))
            print(format_table(results, title=f"{config.name}: evaluation"))
        return results
    finally:
        dist.destroy_process_group()

"""The streaming protocol: prequential (test-then-train) evaluation over a graph that grows.

What production looks like, and where end-to-end training can use what a two-stage pipeline
cannot have: a graph as fresh as each example. ``train.protocol: streaming`` runs it::

    time ───────────────────────────────────────────────────────────────────────────►
    │ history │ period 0   │ period 1   │ period 2   │ ... │ period P-1 │
                 train      score, train score, train       score, train
    graph: every edge with its time; a batch samples only edges older than its first example

The labelled window (the static protocol's train, validation and test examples together) is
cut into ``train.periods`` time-ordered parts. The model trains on them in one chronological
pass; period p is scored before the model trains on it (prequential evaluation), so every
score is on examples the model has never seen, with the graph as it stood at that moment.

* End to end: temporal sampling over the growing graph (``loader.temporal`` is forced on): new
  videos' first watches and new follows count as soon as they happen.
* Two-stage: the frozen embeddings come from pre-training and export on the graph as it stood
  at the last refresh: the start of the window, then every ``pretrain.refresh_every`` periods
  (0 = never), each refresh starting from the previous tower. Its cost counts every refresh.

Outputs: ``streaming.json`` (per period: metrics before training on it, seconds of training and
refreshing, cumulative seconds) and ``eval.json`` whose ``"stream"`` split holds each metric's
mean over the scored periods (1 .. P-1).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from torchrec_gnn.config import ExperimentConfig
from torchrec_gnn.data.dataset import Interactions
from torchrec_gnn.data.loader import make_dataloader
from torchrec_gnn.data.split import TimeSplit, graph_before, stream_periods
from torchrec_gnn.recipes.ranker import RankerRecipe
from torchrec_gnn.train.checkpoint import CheckpointError
from torchrec_gnn.train.distributed import DistributedContext
from torchrec_gnn.train.monitor import check_finite
from torchrec_gnn.train.pretrain import load_pretrained
from torchrec_gnn.train.run_dir import PRETRAIN_DIR, STREAM_FILE, STREAM_SPLIT
from torchrec_gnn.train.sharding import unwrap

logger = logging.getLogger("torchrec_gnn.stream")

STREAM_NO_RESUME = "--resume: a streaming run keeps no checkpoints between periods; run it again"


COUNTS = ("count", "gauc_users", "gauc_users_skipped")  # summed over periods, not averaged


def mean_over_periods(per_period: List[Dict[str, Dict[str, float]]]) -> Dict[str, Dict[str, float]]:
    """``{task: {metric: mean}}`` over periods (finite values only; NaN when none); the counts
    of :data:`COUNTS` are summed."""
    def reduce(task: str, metric: str) -> float:
        values = [p[task][metric] for p in per_period if math.isfinite(p.get(task, {}).get(metric, math.nan))]
        if metric in COUNTS:
            return int(np.sum(values))
        return float(np.mean(values)) if values else math.nan

    tasks = {t: list(m) for p in per_period for t, m in p.items()}
    return {task: {metric: reduce(task, metric) for metric in metrics} for task, metrics in tasks.items()}


def stream_periods_of(split: TimeSplit, periods: int) -> List[Interactions]:
    """The labelled window (the static split's train, validation and test examples together)
    cut into ``periods`` time-ordered parts."""
    return stream_periods(Interactions.concat([split.train, split.val, split.test]), periods)


class StreamingRankerRecipe(RankerRecipe):
    """:class:`RankerRecipe` under ``train.protocol: streaming`` (see the module docstring):
    one chronological test-then-train pass instead of epochs, no checkpoints between periods.

    Args:
        config (ExperimentConfig): the resolved config (``train.protocol == "streaming"``).
        ctx (DistributedContext): the initialised process group, rank and device.
    """

    def __init__(self, config: ExperimentConfig, ctx: DistributedContext) -> None:
        super().__init__(config, ctx)
        self.created = time.perf_counter()  # setup (data, initial pre-training) counts in the cost

    def first_examples(self) -> Interactions:
        """The first period (trained on, never scored)."""
        return stream_periods_of(self.split, self.config.train.periods)[0]

    def run(self, resume: bool = False) -> Dict[str, Dict[str, Dict[str, float]]]:
        """Test-then-train over the labelled window's periods.

        Returns:
            Dict: ``{"stream": {task: {metric: mean over scored periods}}}`` (also ``eval.json``).
        """
        if resume:
            raise CheckpointError(STREAM_NO_RESUME)
        cfg = self.config
        setup_seconds = time.perf_counter() - self.created
        periods = stream_periods_of(self.split, cfg.train.periods)
        refresh_every = cfg.pretrain.refresh_every if cfg.model.two_stage else 0
        last_tower = self.pretrained  # the initial pre-training's
        records: List[Dict[str, Any]] = []
        cumulative = setup_seconds
        for p, examples in enumerate(periods):
            start_time = int(examples.timestamp.min())
            refresh_seconds = 0.0
            if refresh_every and p > 0 and p % refresh_every == 0:
                tick = time.perf_counter()
                last_tower = self._refresh(start_time, p, last_tower)
                refresh_seconds = time.perf_counter() - tick
            metrics = self.evaluate(examples) if p > 0 else {}  # prequential: before training on it
            tick = time.perf_counter()
            steps = self._train_period(examples, p)
            train_seconds = time.perf_counter() - tick
            cumulative += refresh_seconds + train_seconds
            records.append({"period": p, "start_time": start_time, "examples": len(examples), "steps": steps,
                            "metrics": metrics, "train_seconds": train_seconds, "refresh_seconds": refresh_seconds,
                            "cumulative_seconds": cumulative})
            if self.ctx.is_main:
                scored = ", ".join(f"{t} AUC {m['auc']:.4f}" for t, m in metrics.items() if "auc" in m)
                logger.info("period %d/%d: %d examples%s; trained %d steps in %.1f s%s", p + 1, len(periods),
                            len(examples), f" scored first ({scored})" if scored else "", steps, train_seconds,
                            f"; refreshed in {refresh_seconds:.1f} s" if refresh_seconds else "")
        results = {STREAM_SPLIT: mean_over_periods([r["metrics"] for r in records[1:]])}
        if self.ctx.is_main:
            summary = {"periods": records, "setup_seconds": setup_seconds, "refresh_every": refresh_every}
            (self.output_dir / STREAM_FILE).write_text(json.dumps(summary, indent=1))
        return self.save(results, title=f"{cfg.name}: streaming, mean over periods 2-{cfg.train.periods}")

    def _train_period(self, examples: Interactions, period: int) -> int:
        """One chronological pass over ``examples``; returns the steps taken. The edge objective
        (if on) predicts only edges older than the period."""
        data = self.batches(examples, train=True, links_before=int(examples.timestamp.min()))
        data.set_epoch(period)
        loader = make_dataloader(data, self.config.loader.num_workers, pin_memory=self.ctx.device.type == "cuda")
        iterator, steps = iter(loader), 0
        while True:
            try:
                out = self.pipeline.progress(iterator)
            except StopIteration:
                return steps
            steps += 1
            check_finite(out, f"period {period}, step {steps}")

    def _refresh(self, cutoff: int, period: int, previous: Path) -> Path:
        """Two-stage refresh: pre-train again from the tower in ``previous`` on the graph as it
        stands at ``cutoff``, export, and load the new embeddings into the frozen tower (every
        rank). Returns the refresh's directory."""
        directory = self.output_dir / PRETRAIN_DIR / f"refresh_{period:02d}"
        snapshot = lambda: graph_before(self.dataset, cutoff)  # noqa: E731 - built on rank 0 only
        directory = self.pretrain(snapshot, directory, initial_tower=previous)
        unwrap(self.model).model.graph_tower.load_embeddings(load_pretrained(directory))
        return directory

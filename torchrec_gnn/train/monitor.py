"""What a training loop reports after each step: a finite-loss check, windowed metrics, periodic
records (``metrics.jsonl``, TensorBoard on rank 0) and the progress bar."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence

from tqdm import tqdm

from torchrec_gnn.data.dataset import TaskSpec
from torchrec_gnn.train.distributed import DistributedContext
from torchrec_gnn.train.metrics import TrainingWindowMetrics
from torchrec_gnn.train.pipeline import StepOutput
from torchrec_gnn.train.run_log import RunLog


def check_finite(out: StepOutput, where: str) -> None:
    """Raise ``FloatingPointError`` naming ``where`` and every loss if the step's loss is not finite."""
    if not math.isfinite(float(out.total)):
        raise FloatingPointError(f"{where}: loss is {float(out.total)}; per-loss {out.losses.tolist()}")


@dataclass(frozen=True)
class Reporting:
    """When and what a training loop reports.

    Args:
        start_step (int): the step training starts (or resumes) from.
        total_steps (int): the step training ends at.
        batch_size (int): training examples per batch and rank.
        log_every (int): steps between records.
        metrics_window (int): examples in the windowed metrics.
        tensorboard (bool): also write TensorBoard events.
    """

    start_step: int
    total_steps: int
    batch_size: int
    log_every: int
    metrics_window: int
    tensorboard: bool


class TrainingMonitor:
    """The per-step reporting of a training loop.

    Every ``log_every`` steps (and at the last) it writes a record ``{step, epoch, loss, losses,
    task_weights, examples_per_s, window}`` (``window``: each binary task's NE and AUC over the
    last ``metrics_window`` training examples, all ranks) and shows it on the progress bar.

    Args:
        loss_names (Sequence[str]): the L losses' names (tasks, then auxiliary losses).
        tasks (Sequence[TaskSpec]): the T tasks.
        ctx (DistributedContext): this process's rank and device.
        output_dir (Path): where rank 0 writes ``metrics.jsonl``.
        reporting (Reporting): steps, batch size, cadence and outputs.
    """

    def __init__(self, loss_names: Sequence[str], tasks: Sequence[TaskSpec], ctx: DistributedContext, output_dir: Path,
                 reporting: Reporting) -> None:
        self.loss_names, self.ctx, self.reporting = list(loss_names), ctx, reporting
        self.records: List[Dict[str, Any]] = []
        self.run_log = RunLog(output_dir, reporting.start_step, reporting.tensorboard) if ctx.is_main else None
        self.progress = tqdm(total=reporting.total_steps, initial=reporting.start_step, desc="train",
                             disable=not ctx.is_main, dynamic_ncols=True)
        self.window = TrainingWindowMetrics(tasks, reporting.batch_size, reporting.metrics_window, ctx.world_size,
                                            ctx.rank, ctx.device)
        self._since, self._examples = time.perf_counter(), 0

    def step(self, step: int, epoch: int, out: StepOutput) -> None:
        """Account for training step ``step`` (raises on a non-finite loss)."""
        self._examples += out.outputs.shape[0] * self.ctx.world_size
        check_finite(out, f"step {step}")
        self.window.update(out.outputs, out.labels)
        if step % self.reporting.log_every == 0 or step == self.reporting.total_steps:
            now = time.perf_counter()
            record = {
                "step": step,
                "epoch": epoch,
                "loss": float(out.total),
                "losses": dict(zip(self.loss_names, out.losses.tolist())),
                "task_weights": dict(zip(self.loss_names, out.weights.tolist())),
                "examples_per_s": self._examples / max(now - self._since, 1e-9),
                "window": self.window.compute(),
            }
            self._since, self._examples = now, 0
            self.records.append(record)
            self.write(record)
            self.progress.set_postfix(_postfix(record))
        self.progress.update(1)

    def write(self, record: Dict[str, Any]) -> None:
        """Append ``record`` to the run's log (rank 0)."""
        if self.run_log is not None:
            self.run_log.write(record)

    def close(self) -> None:
        self.progress.close()
        if self.run_log is not None:
            self.run_log.close()


def _postfix(record: Dict[str, Any]) -> Dict[str, str]:
    """The progress bar's figures: the loss, examples/s, each binary task's windowed NE and AUC."""
    postfix = {"loss": f"{record['loss']:.4f}", "ex_s": f"{record['examples_per_s']:.0f}"}
    for task, values in record["window"].items():
        postfix[task] = f"NE {values['window_ne']:.3f} AUC {values['window_auc']:.3f}"
    return postfix


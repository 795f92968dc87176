"""A run's training log: ``metrics.jsonl`` (one JSON record per line) and, optionally,
TensorBoard event files with the same numbers.

A record is a nested dict with a ``"step"``: training records (``loss``, ``losses``,
``task_weights``, ``examples_per_s``, ``window``) and evaluation records (``eval`` →
split → task → metric). TensorBoard gets every finite number of a record as a scalar at that
step, tagged by its path (``losses/click``, ``task_weights/gfae``, ``eval/val/click/auc``).

Resuming from step ``s`` first drops the records after ``s`` (written by the interrupted run
after its last checkpoint), so a step is never logged twice.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Tuple

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def scalars(record: Mapping[str, Any], prefix: str = "") -> Iterator[Tuple[str, float]]:
    """``(tag, value)`` for every finite number in ``record`` except its ``step``."""
    for key, value in record.items():
        tag = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from scalars(value, f"{tag}/")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step" and math.isfinite(value):
            yield tag, float(value)


class RunLog:
    """Rank 0's ``metrics.jsonl`` (and TensorBoard events) of a run.

    Args:
        output_dir (Path): the run's output directory.
        resume_step (int): the step the run resumes from; the records after it are dropped
            (0: a new log, any old one is replaced). Default 0.
        tensorboard (bool): also write ``output_dir/tensorboard``. Default False.

    Example::

        log = RunLog(Path("runs/default"), resume_step=0, tensorboard=True)
        log.write({"step": 20, "loss": 2.6, "losses": {"click": 0.48}})
        log.close()
    """

    def __init__(self, output_dir: Path, resume_step: int = 0, tensorboard: bool = False) -> None:
        path = output_dir / METRICS_FILE
        kept = []
        if resume_step and path.is_file():
            kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= resume_step]
        self._file = path.open("w")
        self._file.writelines(line + "\n" for line in kept)
        self._file.flush()
        self._board = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # TensorBoard hides the events at or after purge_step: those the interrupted run wrote after resume_step.
            self._board = SummaryWriter(str(output_dir / TENSORBOARD_DIR), purge_step=resume_step + 1 if resume_step else None)

    def write(self, record: Dict[str, Any]) -> None:
        """Append ``record`` (it must hold ``"step"``)."""
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._board is not None:
            for tag, value in scalars(record):
                self._board.add_scalar(tag, value, record["step"])
            self._board.flush()

    def close(self) -> None:
        self._file.close()
        if self._board is not None:
            self._board.close()

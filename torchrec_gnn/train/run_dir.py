"""One output directory holds one run, and the names of what the run writes there.

A new run refuses a directory (or checkpoint directory) that holds another run's files, unless
asked to replace it; a resume continues only the run the directory holds, with the same config
(up to :data:`~torchrec_gnn.config.RESUMABLE_FIELDS`), checked before anything is written, so a
refused resume leaves the finished run exactly as it was. Checkpoints carry the config's
fingerprint, so a resume from a shared checkpoint directory never loads another run's weights
(see :meth:`torchrec_gnn.recipes.ranker.RankerRecipe.train`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from torchrec_gnn.config import ConfigError, ExperimentConfig, config_differences, load_config

CONFIG_FILE = "config.yaml"
TRAINING_FILE = "training.json"  # steps trained and the step the final evaluation scores
STREAM_FILE = "streaming.json"  # a streaming run's periods
STREAM_SPLIT = "stream"  # eval.json key of a streaming run's mean over scored periods
PRETRAIN_DIR = "pretrain"  # a two-stage or warm-start run's pre-trained tower (and its refreshes)
PRETRAIN_REPORT_FILE = "pretrain.json"  # in each pre-training directory: seconds, steps, link AUC
# What a training run writes into its output directory (compare's run.json/cost.json are not).
RUN_FILES = (CONFIG_FILE, "metrics.jsonl", "eval.json", TRAINING_FILE, "model.pt", STREAM_FILE,
             "losses.png", "task_weights.png", "auc.png", "checkpoints", "graph", PRETRAIN_DIR, "tensorboard")


class RunDirectoryError(RuntimeError):
    """The output directory holds another run, or not the run a resume expects."""


def _directories(config: ExperimentConfig) -> Tuple[Path, Optional[Path]]:
    """``train.output_dir`` and the separate ``train.checkpoint_dir`` (None when not set)."""
    return Path(config.train.output_dir), Path(config.train.checkpoint_dir) if config.train.checkpoint_dir else None


def run_files(output_dir: Path, checkpoint_dir: Optional[Path] = None) -> List[Path]:
    """The files and folders of a run in ``output_dir`` (and a separate ``checkpoint_dir``'s
    checkpoints) that exist, in :data:`RUN_FILES` order."""
    found = [output_dir / name for name in RUN_FILES if (output_dir / name).exists()]
    if checkpoint_dir is not None and checkpoint_dir.is_dir() and any(checkpoint_dir.iterdir()):
        found.append(checkpoint_dir)
    return found


def check_run_directory(config: ExperimentConfig, resume: bool, overwrite: bool = False) -> None:
    """Raise :class:`RunDirectoryError` if this run may not use ``train.output_dir`` as asked.

    Args:
        config (ExperimentConfig): the resolved config of the run about to start.
        resume (bool): the run continues the one in the directory (``--resume``, or a torchrun
            restart): that run's ``config.yaml`` must exist and equal ``config`` up to the
            resumable fields.
        overwrite (bool): a new run may replace the directory's run (``--overwrite``).
    """
    output_dir, checkpoint_dir = _directories(config)
    if resume:
        saved = output_dir / CONFIG_FILE
        if not saved.is_file():
            raise RunDirectoryError(f"--resume: {output_dir} holds no run ({CONFIG_FILE} is missing)")
        try:
            differences = config_differences(load_config(saved), config)
        except ConfigError as error:
            raise RunDirectoryError(f"--resume: cannot read the run's config: {error}") from None
        if differences:
            raise RunDirectoryError(
                f"--resume: this config differs from the run in {output_dir} ({saved}): " + "; ".join(differences)
                + ". Resume with the run's own settings, or start a new run in another --output-dir"
            )
        return
    existing = run_files(output_dir, checkpoint_dir)
    if existing and not overwrite:
        names = ", ".join(str(p.relative_to(output_dir)) if p.is_relative_to(output_dir) else str(p) for p in existing)
        raise RunDirectoryError(
            f"{output_dir} holds another run ({names}); choose another --output-dir, continue that run "
            f"with --resume, or replace it with --overwrite (deletes those files)"
        )


def clear_run(config: ExperimentConfig) -> List[Path]:
    """Delete the run files of ``train.output_dir`` and the checkpoints of ``train.checkpoint_dir``
    (``--overwrite``); returns what was deleted."""
    removed = run_files(*_directories(config))
    for path in removed:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return removed


def load_stream(run_dir: Path) -> Dict[str, Any]:
    """A finished streaming run's ``streaming.json``."""
    return json.loads((run_dir / STREAM_FILE).read_text())

"""PNG plots of a run from its ``metrics.jsonl`` and ``eval.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Union

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def _read_records(path: Path) -> List[Dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_run(run_dir: Union[str, Path]) -> List[Path]:
    """Write ``losses.png``, ``task_weights.png`` and ``auc.png`` into ``run_dir``.

    Args:
        run_dir (str or Path): a training output directory (``metrics.jsonl``, optional
            ``eval.json``).

    Returns:
        List[Path]: the files written.
    """
    run_dir = Path(run_dir)
    records = _read_records(run_dir / "metrics.jsonl")
    steps = [r for r in records if "losses" in r]
    written = []
    if steps:
        x = [r["step"] for r in steps]
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for name in steps[0]["losses"]:
            ax.plot(x, [r["losses"][name] for r in steps], label=name)
        ax.plot(x, [r["loss"] for r in steps], "k--", label="weighted total")
        ax.set(xlabel="step", ylabel="loss", title="Training losses per task", yscale="log")
        ax.legend(fontsize=8, ncol=2)
        written.append(_save(fig, run_dir / "losses.png"))

        fig, ax = plt.subplots(figsize=(8, 4.5))
        for name in steps[0]["task_weights"]:
            ax.plot(x, [r["task_weights"][name] for r in steps], label=name)
        ax.set(xlabel="step", ylabel="weight", title="Loss weights (GradNorm keeps their sum at the number of losses)")
        ax.legend(fontsize=8, ncol=2)
        written.append(_save(fig, run_dir / "task_weights.png"))

    evals = [r for r in records if "eval" in r]
    final = json.loads((run_dir / "eval.json").read_text()) if (run_dir / "eval.json").is_file() else {}
    binary = [t for t, m in next(iter(final.values()), {}).items() if "auc" in m]
    if evals or binary:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        if evals:  # validation AUC over training
            tasks = [t for t, m in evals[0]["eval"]["val"].items() if "auc" in m]
            for task in tasks:
                ax.plot([r["step"] for r in evals], [r["eval"]["val"][task]["auc"] for r in evals], marker="o", label=task)
            ax.set(xlabel="step", ylabel="validation AUC", title="Validation AUC per task")
        else:  # final AUC per task and split
            width = 0.8 / max(len(final), 1)
            for i, (split, metrics) in enumerate(final.items()):
                ax.bar([j + i * width for j in range(len(binary))], [metrics[t]["auc"] for t in binary], width, label=split)
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(binary))], binary)
            ax.set(ylabel="AUC", title="AUC per task", ylim=(0.5, 1.0))
        ax.legend(fontsize=8)
        written.append(_save(fig, run_dir / "auc.png"))
    return written


def _save(fig: "plt.Figure", path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

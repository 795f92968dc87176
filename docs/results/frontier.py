"""AUC against seconds per run, across compares: where each pipeline sits for its budget.

    python docs/results/frontier.py --split val --png frontier.png label=runs/compare_a label=runs/compare_b ...

Prints one markdown row per (compare, variant): AUC mean ± std over seeds per binary task and
seconds per run; a run that read its pre-training (``pretrain.from_dir``) is charged that
pre-training's seconds (``compare``'s ``read_pretrain_seconds``), so every row is a whole run's
cost. The PNG has one panel per task. Run from the repository root with the package installed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Tuple

import matplotlib.pyplot as plt

from torchrec_gnn.recipes.report import mean_std, run_cost
from torchrec_gnn.recipes.runs import COST_FILE

TASKS = ("click", "long_view", "like", "skip")


def run_seconds(run: Path) -> float:
    """The run's seconds, plus those of the pre-training it read (``pretrain.from_dir``)."""
    cost = run_cost(run)
    return cost["train_seconds"] + cost.get("read_pretrain_seconds", 0.0)


def rows(label: str, compare: Path, split: str) -> List[Tuple[str, Dict[str, List[float]], List[float]]]:
    """(name, AUC per task over seeds, seconds over seeds) for every variant of a compare."""
    found = []
    for variant in sorted(p for p in compare.iterdir() if p.is_dir()):
        runs = sorted(r for r in variant.glob("seed_*") if (r / COST_FILE).is_file())
        if not runs:
            continue
        evals = [json.loads((r / "eval.json").read_text())[split] for r in runs]
        aucs = {t: [e[t]["auc"] for e in evals] for t in TASKS}
        found.append((f"{label}: {variant.name}", aucs, [run_seconds(r) for r in runs]))
    return found


def mean_and_std(values: List[float]) -> Tuple[float, float]:
    """(mean, sample std) of :func:`mean_std`."""
    stats = mean_std(values)
    return stats["mean"], stats["std"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compares", nargs="+", help="label=compare_dir")
    parser.add_argument("--split", default="val", choices=("val", "test", "stream"))
    parser.add_argument("--png", type=Path, help="write the plot here")
    args = parser.parse_args()
    pairs = [arg.split("=", 1) for arg in args.compares]
    table = [row for label, compare in pairs for row in rows(label, Path(compare), args.split)]
    print("| run | " + " | ".join(TASKS) + " | seconds per run |")
    print("|---|" + "---|" * len(TASKS) + "---:|")
    for name, aucs, seconds in table:
        cells = ["%.4f ± %.4f" % mean_and_std(aucs[t]) for t in TASKS]
        print(f"| {name} | " + " | ".join(cells) + " | %.0f ± %.0f |" % mean_and_std(seconds))
    if args.png:
        variants = list(dict.fromkeys(name.split(": ", 1)[1] for name, _, _ in table))
        colours = {v: f"C{i}" for i, v in enumerate(variants)}  # one colour per variant, the label beside each point
        fig, axes = plt.subplots(1, len(TASKS), figsize=(4.2 * len(TASKS), 4.4))
        for ax, task in zip(axes, TASKS):
            for name, aucs, seconds in table:
                label, variant = name.split(": ", 1)
                (x, dx), (y, dy) = mean_and_std(seconds), mean_and_std(aucs[task])
                ax.errorbar(x, y, xerr=dx, yerr=dy, fmt="o", capsize=3, color=colours[variant], label=variant)
                ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            ax.set_title(f"{task} ({args.split} AUC)")
            ax.set_xlabel("seconds per run")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("AUC, mean ± std over seeds")
        handles = {label: handle for handle, label in zip(*axes[0].get_legend_handles_labels())}
        fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=len(handles), fontsize=8)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        fig.savefig(args.png, dpi=110)
        print(f"plot: {args.png}")


if __name__ == "__main__":
    main()

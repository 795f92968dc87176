"""Validation AUC against training step for several runs in one PNG (runs trained with
``train.eval_every``; the final evaluation's figure is drawn at the last step), to see whether a
run was still learning when its epoch ended.

    python docs/results/val_curves.py --task click --output curves.png \\
        "lr 1e-3, seed 0=runs/curve_s0" "lr 3e-3, seed 0=runs/curve_dlr3_s0"
"""

import argparse
import json
from pathlib import Path
from typing import List, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from torchrec_gnn.train.run_dir import TRAINING_FILE  # noqa: E402


def validation_curve(run: Path, task: str) -> List[Tuple[int, float]]:
    """(step, validation AUC of ``task``) of every validation pass of ``run`` and of the final
    evaluation (at the step it scored), in step order."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    curve = {r["step"]: r["eval"]["val"][task]["auc"] for r in records if "eval" in r}
    kept_step = json.loads((run / TRAINING_FILE).read_text())["kept_step"]
    curve.setdefault(kept_step, json.loads((run / "eval.json").read_text())["val"][task]["auc"])
    return sorted(curve.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR, one per curve")
    parser.add_argument("--task", default="click", help="binary task whose validation AUC is drawn")
    parser.add_argument("--output", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for spec in args.runs:
        label, _, run = spec.partition("=")
        if not run:
            parser.error(f"run {spec!r}: expected LABEL=RUN_DIR")
        curve = validation_curve(Path(run), args.task)
        ax.plot(*zip(*curve), marker="o", markersize=3, label=label)
        print(f"{label}: " + " ".join(f"{step}:{auc:.4f}" for step, auc in curve))
    ax.set_xlabel("training step")
    ax.set_ylabel(f"validation {args.task} AUC")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=120)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

"""The README table "Add the tower to your own model": click/like AUC of each stock model with and
without the tower, mean ± sample std over the seeds whose JSON is in docs/results/add_gnn_tower/.

    python docs/results/add_gnn_tower_table.py

Each JSON is what `python examples/add_gnn_tower.py --model M [--no-tower] --preset default
--batch-size 1024 --seed S --json docs/results/add_gnn_tower/M[_no_tower]_sS.json` wrote.
"""

import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "add_gnn_tower"
TASKS = ("click", "long_view", "like", "skip")


def cell(values):
    mean = statistics.mean(values)
    return f"{mean:.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{mean:.4f}"


def main() -> None:
    runs = {}
    for path in sorted(RESULTS.glob("*.json")):
        result = json.loads(path.read_text())
        runs.setdefault((result["model"], result["tower"]), []).append(result)
    print("| model | tower | seeds | " + " | ".join(f"{t} AUC (test)" for t in TASKS) + " | click AUC (val) |")
    print("|---|---|---|" + "---|" * (len(TASKS) + 1))
    for (model, tower), results in sorted(runs.items(), key=lambda kv: (kv[0][0], not kv[0][1])):
        seeds = sorted(r["seed"] for r in results)
        test = [cell([r["metrics"]["test"][t]["auc"] for r in results]) for t in TASKS]
        val = cell([r["metrics"]["val"]["click"]["auc"] for r in results])
        print(f"| {model} | {'with' if tower else 'without'} | {','.join(map(str, seeds))} | " + " | ".join(test) + f" | {val} |")


if __name__ == "__main__":
    main()

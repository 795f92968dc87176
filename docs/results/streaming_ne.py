"""NE of finished streaming runs from their ``streaming.json``, for runs made before the
evaluation reported NE itself (this version's runs write ``ne`` per period directly).

NE of period p = its log loss / H(rate_p), with rate_p the period's positive rate (the
definition of ``torchrec.metrics.NEMetric``); the figure is the mean over the scored periods
(2..P), like every streaming metric, then mean ± std over the runs given.

    python docs/results/streaming_ne.py runs/stream/two_stage/seed_* [--set data.synthetic.taste_drift_fraction=0.5]
"""

import argparse
import json
import math
import statistics
from pathlib import Path

from torchrec_gnn.config import load_config
from torchrec_gnn.data.registry import load_dataset
from torchrec_gnn.data.split import time_split
from torchrec_gnn.recipes.stream import stream_periods_of
from torchrec_gnn.train.run_dir import STREAM_FILE

TASKS = ("click", "long_view", "like", "skip")


def entropy(rate: float) -> float:
    return -rate * math.log(rate) - (1 - rate) * math.log(1 - rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of one variant (one per seed)")
    parser.add_argument("--config", default="configs/default.yaml", help="the config the runs used")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="the runs' data overrides")
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    dataset = load_dataset(config.data)
    split = time_split(dataset, config.data.history_fraction, config.data.val_fraction, config.data.test_fraction)
    periods = stream_periods_of(split, config.train.periods)
    columns = {t: dataset.task_names.index(t) for t in TASKS}
    rates = [{t: float(p.labels[:, c].nanmean()) for t, c in columns.items()} for p in periods]
    per_run = []
    for run in args.runs:
        scored = [p for p in json.loads((run / STREAM_FILE).read_text())["periods"] if p["period"] >= 1]
        per_run.append({t: statistics.mean(p["metrics"][t]["logloss"] / entropy(rates[p["period"]][t]) for p in scored)
                        for t in TASKS})
    for t in TASKS:
        values = [r[t] for r in per_run]
        spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
        print(f"{t}: NE {statistics.mean(values):.4f}{spread} over {len(values)} run(s)")


if __name__ == "__main__":
    main()

"""How much AUC is there to win on the synthetic data: the Bayes-optimal scores of the split.

The generator knows every latent (tastes, video topics and quality, the click bias), so the
best any model can do is score each example with its true probability given those latents,
averaged over the generator's per-impression noise (click noise, watched fraction, skim time).
This script rebuilds the data set of a config with the latents captured, computes those
probabilities by Monte Carlo over the noise, and prints each binary task's AUC on the static
split (validation and test), next to oracles that lack one latent (replaced by its mean):

* ``bayes``: every latent known (the ceiling; no model can beat it in expectation);
* ``no_quality``: the video's quality unknown;
* ``new_video_quality``: the quality unknown only for videos uploaded inside the labelled window
  (what their in-window watches could reveal to a model that sees a fresh graph);
* ``no_taste``: taste/topic affinity unknown (0).

With ``--runs``, also the test AUC of ``--task`` per segment (cold and warm users, videos uploaded
before and inside the labelled window, videos with no training example) for the Bayes scores
and each finished run's model (``torchrec-gnn eval --predictions`` scores).

    python docs/results/synthetic_oracle.py [--config configs/default.yaml] [--set data.synthetic.taste_drift_fraction=0.5]
    python docs/results/synthetic_oracle.py --runs runs/compare/two_stage/seed_0 runs/compare/e2e/seed_0
"""

import argparse
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np

from torchrec_gnn.config import load_config
from torchrec_gnn.data import synthetic
from torchrec_gnn.data.registry import load_dataset
from torchrec_gnn.data.split import time_split
from torchrec_gnn.recipes.evaluate import score_run
from torchrec_gnn.train.metrics import roc_auc

TASKS = ("click", "long_view", "like", "skip")


def capture_world(config) -> Tuple[object, synthetic._World, float]:
    """The data set of ``config`` with the generator's world and click bias captured."""
    captured: Dict[str, object] = {}
    create, calibrate = synthetic._World.create, synthetic._calibrate_bias

    def create_and_keep(rng, cfg):
        captured["world"] = create(rng, cfg)
        return captured["world"]

    def calibrate_and_keep(*args):
        captured["bias"] = calibrate(*args)
        return captured["bias"]

    synthetic._World.create, synthetic._calibrate_bias = create_and_keep, calibrate_and_keep
    try:
        dataset = load_dataset(config.data)
    finally:
        synthetic._World.create, synthetic._calibrate_bias = create, calibrate
    return dataset, captured["world"], captured["bias"]


def expected_labels(w: synthetic._World, bias: float, users: np.ndarray, videos: np.ndarray,
                    times: np.ndarray, aff: np.ndarray, quality: np.ndarray, draws: int,
                    rng: np.random.Generator) -> Dict[str, np.ndarray]:
    """P(label) (M,) per binary task, given the affinity and quality, by Monte Carlo over the
    generator's click noise, watched-fraction noise and skim time (its own formulas)."""
    base = synthetic.click_base(w, users, videos, times, aff, quality)
    frac_base = synthetic.watch_fraction_base(aff, quality, w.duration[videos])
    totals = {t: np.zeros(users.size) for t in TASKS}
    for _ in range(draws):
        p_click = synthetic._sigmoid(bias + base + rng.normal(0.0, synthetic.CLICK_NOISE, users.size))
        frac = synthetic._sigmoid(frac_base + rng.normal(0.0, synthetic.WATCH_NOISE, users.size))
        skim = synthetic.skim_seconds(rng.exponential(1.0, users.size), p_click, w.duration[videos])
        totals["click"] += p_click
        totals["long_view"] += p_click * (frac >= synthetic.WATCH_LONG_FRACTION)
        totals["like"] += p_click * synthetic._sigmoid(synthetic.like_logit(aff, quality, frac))
        totals["skip"] += (1.0 - p_click) * (skim < synthetic.SKIP_SECONDS)
    return {t: v / draws for t, v in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--draws", type=int, default=200, help="Monte Carlo draws per example")
    parser.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo draws")
    parser.add_argument("--runs", nargs="*", type=Path, default=[], help="finished runs of this config to score by segment")
    parser.add_argument("--task", default="click", choices=TASKS, help="the task of the segment table")
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    dataset, w, bias = capture_world(config)
    split = time_split(dataset, config.data.history_fraction, config.data.val_fraction, config.data.test_fraction)
    mean_quality = float(w.quality.mean())
    # Each oracle: (affinity, video ids) -> the (affinity, quality) it scores with.
    oracles: Dict[str, Callable[[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]] = {
        "bayes": lambda aff, v: (aff, w.quality[v]),
        "no_quality": lambda aff, v: (aff, np.full(v.size, mean_quality)),
        "new_video_quality": lambda aff, v: (aff, np.where(w.video_new[v], mean_quality, w.quality[v])),
        "no_taste": lambda aff, v: (np.zeros(v.size), w.quality[v]),
    }
    columns = {t: dataset.task_names.index(t) for t in TASKS}
    print(f"{'split':<5} {'oracle':<16} " + " ".join(f"{t:>10}" for t in TASKS))
    bayes_test: Dict[str, np.ndarray] = {}
    for name in ("val", "test"):
        ex = split.split(name)
        u, v, t = ex.user.numpy(), ex.item.numpy(), ex.timestamp.numpy()
        aff = synthetic.affinity(w, u, v, t)
        for oracle, latents in oracles.items():
            probs = expected_labels(w, bias, u, v, t, *latents(aff, v), args.draws, np.random.default_rng(args.seed))
            aucs = [roc_auc(probs[task], ex.labels[:, columns[task]].numpy()) for task in TASKS]
            print(f"{name:<5} {oracle:<16} " + " ".join(f"{a:>10.4f}" for a in aucs))
            if (name, oracle) == ("test", "bayes"):
                bayes_test = probs
    if args.runs:
        print_segments(w, split, bayes_test[args.task], args.runs, args.task, columns[args.task])


def print_segments(w: synthetic._World, split, bayes: np.ndarray, runs: List[Path], task: str, column: int) -> None:
    """Test AUC of ``task`` per segment: the Bayes scores ``bayes`` (N_test,) and each run's model."""
    test = split.test
    u, v, t = test.user.numpy(), test.item.numpy(), test.timestamp.numpy()
    labels = test.labels[:, column].numpy()
    scores = {"bayes": bayes}
    for run in runs:
        frame = score_run(run, "test").predictions()
        if not (np.array_equal(frame["user"], u) and np.array_equal(frame["timestamp"], t)):
            raise ValueError(f"{run}: its test examples are not this config's; pass the config and --set it ran with")
        scores[str(run)] = frame[task].to_numpy()
    unseen = ~np.isin(v, split.train.item.numpy())
    segments = {"all": np.ones(u.size, dtype=bool), "cold user": w.cold[u], "warm user": ~w.cold[u],
                "old video": ~w.video_new[v], "new video": w.video_new[v], "no training example": unseen}
    print(f"\ntest {task} AUC by segment")
    print(f"{'segment':<20} {'share':>6} " + " ".join(f"{name:>{max(10, len(name))}}" for name in scores))
    for segment, mask in segments.items():
        cells = [f"{roc_auc(s[mask], labels[mask]):>{max(10, len(name))}.4f}" for name, s in scores.items()]
        print(f"{segment:<20} {mask.mean():>6.3f} " + " ".join(cells))


if __name__ == "__main__":
    main()

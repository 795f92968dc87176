"""Compare E2E-GRec with its ablations over several seeds: train, evaluate, tabulate, plot.

    python -m torchrec_gnn compare --config configs/default.yaml --seeds 3 --output-dir runs/compare
    python -m torchrec_gnn compare --config configs/default.yaml --variants no_graph,e2e --seeds 2 \\
        --set data.preset=tiny --max-steps 50 --output-dir runs/compare_tiny

Every (variant, seed) pair is one ordinary ``train`` job, run one after another, each in its own
directory ``DIR/<variant>/seed_<s>/`` (``eval.json``, ``metrics.jsonl``, ``train.log``,
``cost.json``, ...). A variant is a list of ``--set`` overrides applied on top of ``--config`` and
the command's own ``--set`` overrides (:data:`VARIANTS`; the files in ``configs/ablations/`` hold the
same overrides, and a test keeps the two in step). Seed ``s`` sets ``train.seed=s`` (model init,
shuffling, neighbour sampling, GFAE masking). The data set follows ``data.seed``, which no seed or
variant changes, so every run sees the same examples and graph (a variant that would change
``data.*`` is refused).

Each run is a child process ``python -m torchrec_gnn train ...`` by default: runs cannot leak
state into each other, the child's peak resident memory is measured exactly (``os.wait4``), and
the run's seconds are those of ``train``'s ``main`` (interpreter start and imports excluded).
``--in-process`` calls :func:`torchrec_gnn.recipes.train.main` instead (no interpreter start,
but the peak RSS is then this process's peak so far, which never goes down).

A run is finished once its ``cost.json`` exists: this process writes it last (atomically, after
the run's ``eval.json``), so an interrupted comparison resumes where it stopped and never takes
a half-written run for a finished one; ``--force`` reruns everything. An unfinished run is
removed and rerun from scratch. A child run dies with this process, even when it is killed
(``SIGKILL``; Linux), so nothing keeps writing into ``DIR`` behind a rerun. A finished run made
with other arguments (``run.json``) is an error, not a skip: one ``DIR`` never mixes settings.
``DIR`` then receives:

* ``results.json``: ``{"variants": {variant: {task: {metric: {"mean", "std", "n"}}}},
  "cost": {variant: {"train_seconds": {...}, "peak_rss_mb": {...}}}, "split", "seeds",
  ... (``two_stage`` and warm-start runs add ``pretrain_seconds`` and ``export_seconds`` from
  their ``pretrain/pretrain.json``; their ``train_seconds`` already include both)
  "config", ...}`` over the seeds (sample std, ``ddof=1``; 0.0 for a single seed);
* ``results.md``: one table per metric (AUC, GAUC, LogLoss, RMSE; rows = variants, columns =
  tasks, cells ``mean ± std``) and a cost table; printed at the end too;
* ``auc_by_variant.png`` (AUC per task and variant, std error bars) and ``learning_curves.png``
  (each unweighted training loss against the step, mean over seeds, one panel per loss).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from torchrec_gnn.config import PROTOCOLS, config_to_dict, load_config
from torchrec_gnn.console import configure_console
from torchrec_gnn.recipes.stream import STREAM_SPLIT, load_stream
from torchrec_gnn.recipes.ranker import TRAINING_FILE
from torchrec_gnn.train.pretrain import PRETRAIN_DIR, REPORT_FILE

# The variants, once: name -> overrides on top of the config (configs/ablations/ mirrors them).
VARIANTS: Dict[str, List[str]] = {
    "no_graph": ["model.use_graph=false"],
    "two_stage": ["model.two_stage=true"],
    # Under --protocol streaming: pre-train and export again every period (static: = two_stage).
    "two_stage_refresh": ["model.two_stage=true", "pretrain.refresh_every=1"],
    "e2e": [],
    "e2e_edge": ["model.gfae.edge_objective=true"],
    "e2e_warm": ["model.warm_start=true"],
    "e2e_warm_edge": ["model.warm_start=true", "model.gfae.edge_objective=true"],
    "e2e_no_gfae": ["model.use_gfae=false"],
    "e2e_fixed_weights": ["balancer.kind=fixed"],
    "e2e_uncertainty": ["balancer.kind=uncertainty"],
    "e2e_input_fusion_only": ["model.ranker.prehead_fusion=none"],
    "e2e_prehead_fusion_only": ["model.ranker.input_fusion=false"],
    # The outer hop read from historical embeddings instead of sampled (the step-cost lever),
    # with 15 instead of 10 first-hop neighbours (chosen on validation AUC, README "Step cost").
    "e2e_history": ["model.gnn.outer_hop=history", "loader.fanouts=[15,5]"],
    # Trained and scored on the graph as it stands at each batch (the window's edges included).
    "e2e_fresh": ["train.graph=fresh"],
}
SPLITS = ("val", "test")
# (title in results.md, metric, which value is best: "higher", "lower" or "closer to 1")
TABLES: Tuple[Tuple[str, str, str], ...] = (
    ("AUC", "auc", "higher"), ("GAUC", "gauc", "higher"), ("NE", "ne", "lower"), ("LogLoss", "logloss", "lower"),
    ("Calibration", "calibration", "closer to 1"), ("RMSE", "rmse", "lower"),
)
_BADNESS = {"higher": lambda m: -m, "lower": lambda m: m, "closer to 1": lambda m: abs(m - 1.0)}
# train_seconds: the whole run (for two_stage: pre-training and export included, also given apart).
COST_KEYS = ("train_seconds", "pretrain_seconds", "export_seconds", "peak_rss_mb", "kept_step")
PRETRAIN_REPORT = Path(PRETRAIN_DIR) / REPORT_FILE  # in a two-stage run's directory
# torchrun's variables: a child run is always a one-process job with its own free port.
_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                 "MASTER_PORT", "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_MAX_RESTARTS")

Stats = Dict[str, float]


class CompareError(ValueError):
    """A comparison that cannot run as asked (unknown or unavailable variant, failed run)."""


@dataclass
class Run:
    """One (variant, seed) training job.

    Args:
        variant (str): the variant's name (a key of :data:`VARIANTS`).
        seed (int): its ``train.seed``.
        run_dir (Path): its output directory, ``DIR/<variant>/seed_<seed>``.
        argv (List[str]): the ``train`` command's arguments.
    """

    variant: str
    seed: int
    run_dir: Path
    argv: List[str]


def build_parser() -> argparse.ArgumentParser:
    """The ``compare`` command's flags."""
    parser = argparse.ArgumentParser(prog="torchrec-gnn compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=str, default=None, help="YAML config every variant starts from")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds: train.seed = 0 .. N-1 (default 3)")
    parser.add_argument("--output-dir", type=Path, required=True, help="runs, results.json/.md and plots go here")
    parser.add_argument("--variants", type=str, default=",".join(VARIANTS),
                        help=f"comma-separated variants (default all: {','.join(VARIANTS)})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field of every run, e.g. --set data.preset=tiny (repeatable)")
    parser.add_argument("--max-steps", type=int, default=None, help="train.max_steps of every run")
    parser.add_argument("--split", choices=SPLITS, default="test", help="split the results are reported on "
                        "(static protocol; streaming reports the mean over the scored periods)")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="static",
                        help="static: train, then score validation and test; streaming: test-then-train over "
                             "time periods with a graph that grows (train.protocol, torchrec_gnn.recipes.stream)")
    parser.add_argument("--force", action="store_true", help="rerun finished runs too")
    parser.add_argument("--in-process", action="store_true",
                        help="call train.main in this process instead of one child process per run "
                             "(faster start; peak RSS is then this process's peak so far)")
    return parser


def parse_variants(text: str) -> List[str]:
    """The variant names of a ``--variants`` value, checked.

    Args:
        text (str): comma-separated names, e.g. ``"no_graph,e2e"``.

    Returns:
        List[str]: the names in the given order, duplicates dropped.

    Raises:
        CompareError: a name is unknown, or none is given.
    """
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    available = ", ".join(VARIANTS)
    if not names:
        raise CompareError(f"--variants: no variant given; available variants: {available}")
    for name in names:
        if name not in VARIANTS:
            raise CompareError(f"--variants: unknown variant {name!r}; available variants: {available}")
    return names


def plan_runs(args: argparse.Namespace) -> List[Run]:
    """Every (variant, seed) run, with every variant's config checked before anything runs.

    Args:
        args (Namespace): the parsed ``compare`` flags.

    Returns:
        List[Run]: the runs in order (variant-major).

    Raises:
        CompareError: bad ``--variants`` or ``--seeds``, or a variant that changes the data.
        ConfigError: a variant's config has problems (all of them listed).
    """
    variants = parse_variants(args.variants)
    if args.seeds < 1:
        raise CompareError(f"--seeds must be >= 1, got {args.seeds}")
    data = config_to_dict(load_config(args.config, args.overrides).data)
    runs = []
    for variant in variants:
        overrides = [*args.overrides, *VARIANTS[variant]]
        max_steps = [f"train.max_steps={args.max_steps}"] if args.max_steps is not None else []
        config = load_config(args.config, overrides + max_steps)  # fail now, not after hours of other runs
        # Every run must see the same examples and graph: data.* (data.seed included) is shared.
        if config_to_dict(config.data) != data:
            raise CompareError(f"variant {variant!r} changes the data config ({VARIANTS[variant]}); "
                               "variants may only change the model, the balancer or training")
        for seed in range(args.seeds):
            run_dir = args.output_dir / variant / f"seed_{seed}"
            argv = ["--config", args.config] if args.config else []
            argv += [a for o in overrides for a in ("--set", o)]
            argv += ["--seed", str(seed), "--output-dir", str(run_dir)]
            argv += ["--max-steps", str(args.max_steps)] if args.max_steps is not None else []
            runs.append(Run(variant, seed, run_dir, argv))
    return runs


# ------------------------------------------------------------------------------------ running
def _rss_mb(maxrss: int) -> float:
    """``ru_maxrss`` in MiB (Linux reports KiB, macOS bytes)."""
    return maxrss / (2**20 if sys.platform == "darwin" else 2**10)


def timed_train(argv: Sequence[str]) -> float:
    """Run :func:`torchrec_gnn.recipes.train.main` on ``argv``; returns its wall-clock seconds.

    Args:
        argv (Sequence[str]): the ``train`` command's arguments.

    Returns:
        float: seconds of setup, training, evaluation and export (imports not included).
    """
    from torchrec_gnn.recipes.train import main as train_main

    start = time.perf_counter()
    train_main(list(argv))
    return time.perf_counter() - start


COST_FILE = "cost.json"  # written last: its presence marks a finished run
CHILD_SECONDS_FILE = "train_seconds.json"  # the child's own timing of train's main


def die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when its parent dies (Linux ``PR_SET_PDEATHSIG``), and
    exit now if ``parent`` is already gone; elsewhere nothing (Ctrl-C still reaches the child)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above: nobody would reap this run
        os._exit(1)


def _child(parent: str, seconds_path: str, argv: Sequence[str]) -> None:
    """Entry point of a child run: dies with ``parent``, runs ``train`` timed from inside and
    writes the seconds to ``seconds_path``."""
    die_with_parent(int(parent))
    Path(seconds_path).write_text(json.dumps({"train_seconds": timed_train(argv)}))


# A child run is `python -m torchrec_gnn train ARGV` timed from inside (no interpreter start).
_CHILD_CODE = ("import sys; from torchrec_gnn.recipes.compare import _child; "
               "_child(sys.argv[1], sys.argv[2], sys.argv[3:])")


def run_subprocess(run: Run) -> Dict[str, float]:
    """Run one job in a child process, with its output in ``train.log``.

    The child runs ``python -m torchrec_gnn train ARGV`` (the log's first line), only timed from
    inside so that interpreter start and imports do not count.

    Args:
        run (Run): the job.

    Returns:
        Dict[str, float]: ``train_seconds`` (wall clock of ``train``'s ``main`` in the child),
        ``process_seconds`` (of the whole child) and ``peak_rss_mb`` (the child's peak resident
        memory, from ``os.wait4``; with DataLoader workers, the largest single process of the run).

    Raises:
        CompareError: the job failed; the message holds the end of its log.
    """
    env = {k: v for k, v in os.environ.items() if k not in _TORCHRUN_ENV}
    log_path, seconds_path = run.run_dir / "train.log", run.run_dir / CHILD_SECONDS_FILE
    command = [sys.executable, "-c", _CHILD_CODE, str(os.getpid()), str(seconds_path), *run.argv]
    start = time.perf_counter()
    with log_path.open("w") as log:
        log.write(" ".join([sys.executable, "-m", "torchrec_gnn", "train", *run.argv]) + "\n")
        log.flush()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            _, status, usage = os.wait4(proc.pid, 0)  # this child's rusage, unlike RUSAGE_CHILDREN's max
        except BaseException:  # Ctrl-C or similar: never leave a training job behind
            proc.kill()
            proc.wait()
            raise
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        raise CompareError(f"{run.variant} seed {run.seed}: train exited with {proc.returncode}; "
                           f"end of {log_path}:\n{tail}")
    inside = json.loads(seconds_path.read_text())
    return {"train_seconds": inside["train_seconds"], "process_seconds": seconds, "peak_rss_mb": _rss_mb(usage.ru_maxrss)}


def run_in_process(run: Run) -> Dict[str, float]:
    """Run one job with :func:`torchrec_gnn.recipes.train.main` in this process.

    Args:
        run (Run): the job.

    Returns:
        Dict[str, float]: ``train_seconds`` (wall clock of ``main``) and ``peak_rss_mb`` (this
        process's peak so far: monotone over the runs, so an upper bound for later runs).
    """
    seconds = timed_train(run.argv)
    return {"train_seconds": seconds, "peak_rss_mb": _rss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)}


def _signature(argv: Sequence[str]) -> List[str]:
    """A run's ``train`` arguments without its output directory (which may be spelt differently)."""
    i = list(argv).index("--output-dir")
    return [*argv[:i], *argv[i + 2:]]


def execute(runs: Sequence[Run], force: bool = False, in_process: bool = False) -> None:
    """Run every job that is not finished yet (all with ``force``), one after another.

    A rerun starts from an empty run directory. Each run records its arguments in ``run.json``
    and, once finished, its cost in ``cost.json`` (written last and atomically: the mark of a
    finished run).

    Args:
        runs (Sequence[Run]): the jobs.
        force (bool): rerun finished jobs too. Default ``False``.
        in_process (bool): use :func:`run_in_process` instead of :func:`run_subprocess`.

    Raises:
        CompareError: a finished run was made with other arguments (checked before any run
            starts), or a run failed.
    """
    done = [run for run in runs if (run.run_dir / COST_FILE).is_file() and not force]
    for run in done:
        record = run.run_dir / "run.json"
        saved = json.loads(record.read_text())["argv"] if record.is_file() else None
        if saved is not None and _signature(saved) != _signature(run.argv):
            raise CompareError(
                f"{run.run_dir} holds a finished run with other arguments; rerun it with --force or "
                f"choose another --output-dir\n  finished: {' '.join(saved)}\n  asked:    {' '.join(run.argv)}"
            )
    for i, run in enumerate(runs, 1):
        prefix = f"[{i}/{len(runs)}] {run.variant} seed {run.seed}"
        if run in done:
            print(f"{prefix}: skipped, finished ({run.run_dir / COST_FILE} exists)", flush=True)
            continue
        print(f"{prefix} ...", flush=True)
        if run.run_dir.exists():
            shutil.rmtree(run.run_dir)  # a partial run (or --force): no stale checkpoints or metrics
        run.run_dir.mkdir(parents=True)
        (run.run_dir / "run.json").write_text(json.dumps({"variant": run.variant, "seed": run.seed, "argv": run.argv}))
        cost = run_in_process(run) if in_process else run_subprocess(run)
        partial = run.run_dir / f"{COST_FILE}.partial"
        partial.write_text(json.dumps(cost, indent=1))
        os.replace(partial, run.run_dir / COST_FILE)
        print(f"{prefix}: done in {cost['train_seconds']:.1f} s, peak RSS {cost['peak_rss_mb']:.0f} MB", flush=True)


# ---------------------------------------------------------------------------------- aggregation
def mean_std(values: Sequence[float]) -> Stats:
    """Mean and sample standard deviation (``ddof=1``; 0.0 for one value).

    Args:
        values (Sequence[float]): one value per seed (a NaN makes both NaN).

    Returns:
        Dict[str, float]: ``{"mean", "std", "n"}``; NaN mean and std when ``values`` is empty.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    std = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    return {"mean": float(np.mean(x)), "std": std, "n": int(x.size)}


def aggregate(runs: Sequence[Run], split: str) -> Dict[str, Any]:
    """Mean and std over the seeds of every variant's metrics on ``split``, and of its cost.

    Args:
        runs (Sequence[Run]): finished runs (each has ``eval.json`` and ``cost.json``).
        split (str): ``"val"`` or ``"test"``.

    Returns:
        Dict[str, Any]: ``{"variants": {variant: {task: {metric: stats}}}, "cost": {variant:
        {"train_seconds": stats, "peak_rss_mb": stats, ...}}}`` with :func:`mean_std` stats
        (``pretrain_seconds`` and ``export_seconds`` for two-stage runs).
    """
    metrics: Dict[str, Dict[str, Dict[str, List[float]]]] = {}
    costs: Dict[str, Dict[str, List[float]]] = {}
    for run in runs:
        results = json.loads((run.run_dir / "eval.json").read_text())[split]
        per_task = metrics.setdefault(run.variant, {})
        for task, values in results.items():
            for metric, value in values.items():
                per_task.setdefault(task, {}).setdefault(metric, []).append(value)
        cost = json.loads((run.run_dir / COST_FILE).read_text())
        report = run.run_dir / PRETRAIN_REPORT
        for extra in (report, run.run_dir / TRAINING_FILE):  # pre-training seconds; the step evaluated
            if extra.is_file():
                cost.update({k: v for k, v in json.loads(extra.read_text()).items() if k in COST_KEYS})
        for key in COST_KEYS:
            if key in cost:
                costs.setdefault(run.variant, {}).setdefault(key, []).append(cost[key])
    return {
        "variants": {v: {t: {m: mean_std(x) for m, x in ms.items()} for t, ms in ts.items()} for v, ts in metrics.items()},
        "cost": {v: {k: mean_std(x) for k, x in costs.get(v, {}).items()} for v in metrics},
    }


def aggregate_periods(runs: Sequence[Run]) -> Dict[str, Any]:
    """Streaming runs: per variant, each binary task's AUC per scored period and the cumulative
    seconds after each period, mean and std over the seeds.

    Returns:
        Dict: ``{variant: {"auc": {task: [stats per period]}, "cumulative_seconds": [stats per
        period], "refresh_seconds": stats of the sum}}`` (period 0 is trained on, never scored).
    """
    per_variant: Dict[str, List[Dict[str, Any]]] = {}
    for run in runs:
        per_variant.setdefault(run.variant, []).append(load_stream(run.run_dir))
    out: Dict[str, Any] = {}
    for variant, streams in per_variant.items():
        num = len(streams[0]["periods"])
        tasks = [t for t, m in streams[0]["periods"][1]["metrics"].items() if "auc" in m]
        out[variant] = {
            "auc": {t: [None] + [mean_std([s["periods"][p]["metrics"][t]["auc"] for s in streams]) for p in range(1, num)]
                    for t in tasks},
            "cumulative_seconds": [mean_std([s["periods"][p]["cumulative_seconds"] for s in streams]) for p in range(num)],
            "refresh_seconds": mean_std([sum(r["refresh_seconds"] for r in s["periods"]) for s in streams]),
        }
    return out


def plot_periods(results: Mapping[str, Any], path: Path) -> Path:
    """Streaming: AUC per scored period (one panel per binary task) and cumulative seconds per
    variant, mean over seeds with ± std bands."""
    periods = results["periods"]
    tasks = list(dict.fromkeys(t for v in periods.values() for t in v["auc"]))
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(4.0 * (len(tasks) + 1), 3.4), squeeze=False)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (variant, data) in enumerate(periods.items()):
        color = palette[i % len(palette)]
        for ax, task in zip(axes[0], tasks):
            stats = data["auc"].get(task, [])[1:]
            x = np.arange(2, len(stats) + 2)
            mean, std = np.array([s["mean"] for s in stats]), np.array([s["std"] for s in stats])
            ax.plot(x, mean, marker="o", label=variant, color=color)
            ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15)
            ax.set(title=f"{task} AUC, scored before training", xlabel="period", ylabel="AUC", xticks=x)
        cost = data["cumulative_seconds"]
        x = np.arange(1, len(cost) + 1)
        axes[0][-1].plot(x, [c["mean"] for c in cost], marker="o", label=variant, color=color)
        axes[0][-1].set(title="cumulative seconds", xlabel="period", ylabel="seconds", xticks=x)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("Streaming protocol (mean over seeds, band = ± std)")
    return _save(fig, path)


def markdown(results: Mapping[str, Any]) -> str:
    """``results.md``: a ``mean ± std`` table per metric (best mean in bold) and a cost table.

    Args:
        results (Mapping): the ``results.json`` content.

    Returns:
        str: Markdown, ending with a newline.
    """
    variants: Mapping[str, Mapping[str, Mapping[str, Stats]]] = results["variants"]
    seeds = len(results["seeds"])
    lines = [f"# Variant comparison: {results['config'] or 'built-in defaults'}", "",
             f"Split `{results['split']}`, mean ± sample std over {seeds} seed(s) {results['seeds']}.", ""]
    tasks = list(dict.fromkeys(t for per_task in variants.values() for t in per_task))
    for title, metric, target in TABLES:
        columns = [t for t in tasks if any(metric in variants[v].get(t, {}) for v in variants)]
        if not columns:
            continue
        best = {}
        for task in columns:
            means = {v: variants[v][task][metric]["mean"] for v in variants if metric in variants[v].get(task, {})}
            finite = {v: m for v, m in means.items() if np.isfinite(m)}
            if len(finite) > 1:
                best[task] = min(finite, key=lambda v: _BADNESS[target](finite[v]))
        lines += [f"## {title} ({target} is better)", "",
                  "| variant | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
        for v in variants:
            cells = []
            for task in columns:
                stats = variants[v].get(task, {}).get(metric)
                cell = f"{stats['mean']:.4f} ± {stats['std']:.4f}" if stats else "-"
                cells.append(f"**{cell}**" if best.get(task) == v else cell)
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Cost per run", "",
              "Seconds of the whole run (training, evaluation and, for two-stage and warm start, pre-training "
              "and export), of which pre-training and export; peak resident memory of the run's main process; "
              "the training step the final evaluation scored (the best validation step with early stopping).", "",
              "| variant | seconds | pre-training s | export s | peak RSS (MB) | step evaluated | runs measured |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for v, cost in results["cost"].items():
        cells = [f"{cost[k]['mean']:.1f} ± {cost[k]['std']:.1f}" if k in cost else "-"
                 for k in ("train_seconds", "pretrain_seconds", "export_seconds")]
        cells += [f"{cost[k]['mean']:.0f} ± {cost[k]['std']:.0f}" if k in cost else "-" for k in ("peak_rss_mb", "kept_step")]
        runs = cost["train_seconds"]["n"] if "train_seconds" in cost else 0
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {runs} |")
    if "periods" in results:
        lines += _period_tables(results["periods"])
    return "\n".join(lines) + "\n"


def _period_tables(periods: Mapping[str, Any]) -> List[str]:
    """Streaming: AUC per scored period per binary task, then cumulative seconds per period."""
    lines: List[str] = []
    tasks = list(dict.fromkeys(t for v in periods.values() for t in v["auc"]))
    count = max(len(v["cumulative_seconds"]) for v in periods.values())
    for task in tasks:
        lines += ["", f"## {task} AUC per period (scored before training on it)", "",
                  "| variant | " + " | ".join(f"period {p + 1}" for p in range(1, count)) + " |",
                  "|---|" + "---:|" * (count - 1)]
        for v, data in periods.items():
            cells = [f"{st['mean']:.4f} ± {st['std']:.4f}" for st in data["auc"].get(task, [None])[1:]]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
    lines += ["", "## Cumulative seconds after each period (setup and pre-training included; refreshes too)", "",
              "| variant | " + " | ".join(f"period {p + 1}" for p in range(count)) + " | of which refreshes |",
              "|---|" + "---:|" * (count + 1)]
    for v, data in periods.items():
        cells = [f"{st['mean']:.0f}" for st in data["cumulative_seconds"]]
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {data['refresh_seconds']['mean']:.0f} |")
    return lines


# ---------------------------------------------------------------------------------------- plots
def plot_auc(results: Mapping[str, Any], path: Path) -> Optional[Path]:
    """Grouped bars: AUC per binary task (groups) and variant (bars), std as error bars.

    Args:
        results (Mapping): the ``results.json`` content.
        path (Path): the PNG to write.

    Returns:
        Path, optional: ``path``, or ``None`` when no task has an AUC.
    """
    variants = results["variants"]
    tasks = list(dict.fromkeys(t for ts in variants.values() for t, ms in ts.items() if "auc" in ms))
    if not tasks:
        return None
    width = 0.8 / len(variants)
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(tasks)), 4.5))
    for i, (variant, per_task) in enumerate(variants.items()):
        stats = [per_task.get(t, {}).get("auc", {"mean": np.nan, "std": 0.0}) for t in tasks]
        ax.bar([j + i * width for j in range(len(tasks))], [s["mean"] for s in stats], width,
               yerr=[s["std"] for s in stats], capsize=3, label=variant)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(tasks))], tasks)
    lowest = min((s["mean"] - s["std"] for ts in variants.values() for t in tasks
                  for s in [ts.get(t, {}).get("auc")] if s and np.isfinite(s["mean"])), default=0.5)
    ax.set(ylabel=f"{results['split']} AUC", ylim=(min(0.5, lowest - 0.02), 1.0),
           title=f"AUC per task and variant (mean ± std over {len(results['seeds'])} seeds)")
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def learning_curves(runs: Sequence[Run]) -> Dict[str, Dict[str, Tuple[List[int], np.ndarray]]]:
    """Each variant's unweighted training losses per step, one row per seed.

    Unweighted losses are comparable across balancers (the weighted total is not: uncertainty
    weighting adds log-variance terms). Only steps every seed logged are kept, and losses that
    are 0 throughout (the GFAE loss of a variant without it) are left out.

    Args:
        runs (Sequence[Run]): finished runs (each has ``metrics.jsonl``).

    Returns:
        Dict: ``{variant: {loss name: (steps, (S, len(steps)) array)}}`` for S seeds.
    """
    per_run: Dict[str, List[Dict[int, Dict[str, float]]]] = {}
    for run in runs:
        lines = (run.run_dir / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        per_run.setdefault(run.variant, []).append({r["step"]: r["losses"] for r in records if "losses" in r})
    curves: Dict[str, Dict[str, Tuple[List[int], np.ndarray]]] = {}
    for variant, seeds in per_run.items():
        steps = sorted(set.intersection(*(set(s) for s in seeds)))
        names = list(dict.fromkeys(n for s in seeds for step in steps for n in s[step]))
        values = {name: np.array([[s[step].get(name, np.nan) for step in steps] for s in seeds]) for name in names}
        # A loss the variant does not have is logged as 0 (e.g. the GFAE loss without a graph).
        curves[variant] = {name: (steps, v) for name, v in values.items() if np.any(v != 0)}
    return curves


def plot_learning_curves(runs: Sequence[Run], path: Path) -> Path:
    """One panel per training loss: mean over seeds against the step, a line per variant.

    Args:
        runs (Sequence[Run]): finished runs.
        path (Path): the PNG to write.

    Returns:
        Path: ``path``.
    """
    curves = learning_curves(runs)
    names = list(dict.fromkeys(n for per_loss in curves.values() for n in per_loss))
    cols = min(3, max(len(names), 1))
    rows = -(-max(len(names), 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    # One colour per variant across all panels (a panel may miss a variant, e.g. GFAE).
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = {variant: palette[i % len(palette)] for i, variant in enumerate(curves)}
    for ax, name in zip(axes.flat, names):
        for variant, per_loss in curves.items():
            if name in per_loss:
                steps, values = per_loss[name]  # values: (S, len(steps))
                mean = values.mean(axis=0)
                ax.plot(steps, mean, label=variant, color=colors[variant])
                if len(values) > 1:
                    std = values.std(axis=0, ddof=1)
                    ax.fill_between(steps, mean - std, mean + std, color=colors[variant], alpha=0.15)
        ax.set(title=name, xlabel="step", ylabel="training loss")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Unweighted training losses (mean over seeds, band = ± std)")
    return _save(fig, path)


def _save(fig: "plt.Figure", path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Run the comparison, write ``results.json``/``results.md``/plots, print the tables.

    Args:
        argv (Sequence[str], optional): the ``compare`` flags (default: ``sys.argv[1:]``).

    Returns:
        Dict[str, Any]: the ``results.json`` content.

    Raises:
        CompareError: an unknown or unavailable variant, bad ``--seeds``, or a failed run.
        ConfigError: a variant's config has problems.
    """
    configure_console()
    args = build_parser().parse_args(argv)
    streaming = args.protocol == "streaming"
    if streaming:
        args.overrides = [*args.overrides, "train.protocol=streaming"]
        args.split = STREAM_SPLIT
    runs = plan_runs(args)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    execute(runs, force=args.force, in_process=args.in_process)
    results: Dict[str, Any] = {
        **aggregate(runs, args.split),
        **({"periods": aggregate_periods(runs)} if streaming else {}),
        "protocol": args.protocol,
        "split": args.split,
        "seeds": sorted({run.seed for run in runs}),
        "config": args.config,
        "overrides": list(args.overrides),
        "max_steps": args.max_steps,
        "variant_overrides": {v: VARIANTS[v] for v in dict.fromkeys(run.variant for run in runs)},
    }
    (args.output_dir / "results.json").write_text(json.dumps(results, indent=1))
    table = markdown(results)
    (args.output_dir / "results.md").write_text(table)
    plot_auc(results, args.output_dir / "auc_by_variant.png")
    if streaming:
        plot_periods(results, args.output_dir / "streaming.png")
    else:
        plot_learning_curves(runs, args.output_dir / "learning_curves.png")
    print(table)
    return results

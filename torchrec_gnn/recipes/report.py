"""``compare``'s report: mean and std over seeds, ``results.md`` tables and the PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

from torchrec_gnn.recipes.runs import COST_FILE, Run  # noqa: E402
from torchrec_gnn.config import load_config  # noqa: E402
from torchrec_gnn.train.run_dir import CONFIG_FILE, PRETRAIN_DIR, PRETRAIN_REPORT_FILE, TRAINING_FILE, load_stream  # noqa: E402

Stats = Dict[str, float]


# (title in results.md, metric, which value is best: "higher", "lower" or "closer to 1")
TABLES: Tuple[Tuple[str, str, str], ...] = (
    ("AUC", "auc", "higher"), ("GAUC", "gauc", "higher"), ("NE", "ne", "lower"), ("LogLoss", "logloss", "lower"),
    ("Calibration", "calibration", "closer to 1"), ("RMSE", "rmse", "lower"),
)


_BADNESS = {"higher": lambda m: -m, "lower": lambda m: m, "closer to 1": lambda m: abs(m - 1.0)}
# train_seconds: the whole run (for two_stage: pre-training and export included, also given apart);
# read_pretrain_seconds: a pre-training the run read (pretrain.from_dir), not in its train_seconds.
COST_KEYS = ("train_seconds", "pretrain_seconds", "read_pretrain_seconds", "export_seconds", "peak_rss_mb", "kept_step")
PRETRAIN_REPORT = Path(PRETRAIN_DIR) / PRETRAIN_REPORT_FILE  # in a two-stage run's directory


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


def run_cost(run_dir: Path) -> Dict[str, float]:
    """A finished run's cost, the :data:`COST_KEYS` it has.

    ``cost.json``, plus its own pre-training's seconds (two-stage, warm start), the step its final
    evaluation scored and, when it read another run's pre-training (``pretrain.from_dir``), that
    pre-training's seconds as ``read_pretrain_seconds`` (left out if that directory is gone).

    Args:
        run_dir (Path): the run's directory (``DIR/<variant>/seed_<s>``).

    Returns:
        Dict[str, float]: ``{key: value}`` for the keys of :data:`COST_KEYS` the run records.
    """
    cost = json.loads((run_dir / COST_FILE).read_text())
    for extra in (run_dir / PRETRAIN_REPORT, run_dir / TRAINING_FILE):  # pre-training seconds; the step evaluated
        if extra.is_file():
            cost.update({k: v for k, v in json.loads(extra.read_text()).items() if k in COST_KEYS})
    from_dir = load_config(run_dir / CONFIG_FILE).pretrain.from_dir
    read_report = Path(from_dir) / PRETRAIN_REPORT_FILE if from_dir is not None else None
    if read_report is not None and read_report.is_file():
        cost["read_pretrain_seconds"] = json.loads(read_report.read_text())["pretrain_seconds"]
    return {key: cost[key] for key in COST_KEYS if key in cost}


def aggregate(runs: Sequence[Run], split: str) -> Dict[str, Any]:
    """Mean and std over the seeds of every variant's metrics on ``split``, and of its cost.

    Args:
        runs (Sequence[Run]): finished runs (each has ``eval.json`` and ``cost.json``).
        split (str): ``"val"`` or ``"test"``.

    Returns:
        Dict[str, Any]: ``{"variants": {variant: {task: {metric: stats}}}, "cost": {variant:
        {"train_seconds": stats, "peak_rss_mb": stats, ...}}}`` with :func:`mean_std` stats
        (``pretrain_seconds`` and ``export_seconds`` for two-stage runs, ``read_pretrain_seconds``
        for runs that read their pre-training; :func:`run_cost`).
    """
    metrics: Dict[str, Dict[str, Dict[str, List[float]]]] = {}
    costs: Dict[str, Dict[str, List[float]]] = {}
    for run in runs:
        results = json.loads((run.run_dir / "eval.json").read_text())[split]
        per_task = metrics.setdefault(run.variant, {})
        for task, values in results.items():
            for metric, value in values.items():
                per_task.setdefault(task, {}).setdefault(metric, []).append(value)
        for key, value in run_cost(run.run_dir).items():
            costs.setdefault(run.variant, {}).setdefault(key, []).append(value)
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
              "and export), of which pre-training and export; for a run that read its pre-training "
              "(`pretrain.from_dir`), that pre-training's seconds, marked \"read\" and not in the run's; peak "
              "resident memory of the run's main process; the training step the final evaluation scored (the "
              "best validation step with early stopping).", "",
              "| variant | seconds | pre-training s | export s | peak RSS (MB) | step evaluated | runs measured |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for v, cost in results["cost"].items():
        cells = [f"{cost[k]['mean']:.1f} ± {cost[k]['std']:.1f}" if k in cost else "-"
                 for k in ("train_seconds", "pretrain_seconds", "export_seconds")]
        if "pretrain_seconds" not in cost and "read_pretrain_seconds" in cost:
            read = cost["read_pretrain_seconds"]
            cells[1] = f"{read['mean']:.1f} ± {read['std']:.1f} (read)"
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

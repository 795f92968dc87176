"""Compare E2E-GRec with its ablations over several seeds: train, evaluate, tabulate, plot.

    python -m torchrec_gnn compare --config configs/default.yaml --seeds 3 --output-dir runs/compare
    python -m torchrec_gnn compare --config configs/default.yaml --variants no_graph,e2e --seeds 2 \\
        --set data.preset=tiny --max-steps 50 --output-dir runs/compare_tiny

Every (variant, seed) pair is one ordinary ``train`` job, run one after another, each in its own
directory ``DIR/<variant>/seed_<s>/`` (``eval.json``, ``metrics.jsonl``, ``train.log``,
``cost.json``, ...). A variant is a list of ``--set`` overrides applied on top of ``--config`` and
the command's own ``--set`` overrides (:data:`VARIANTS`; the files in ``configs/ablations/`` hold the
same overrides, and a test keeps the two in step). Seed ``s`` sets ``train.seed=s`` (model init,
shuffling, neighbour sampling, GFAE masking; ``{seed}`` in a ``--set`` value becomes it, so a
comparison can read each seed's own pre-training from an earlier one with ``--set
pretrain.from_dir=DIR0/e2e_warm_edge/seed_{seed}/pretrain``: its runs' seconds then leave the
pre-training out, and the cost table gives that pre-training's seconds apart, marked "read"). The data set follows ``data.seed``, which no seed or
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
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from torchrec_gnn.config import PROTOCOLS, config_to_dict, load_config, override_key
from torchrec_gnn.console import configure_console
from torchrec_gnn.recipes.report import aggregate, aggregate_periods, markdown, plot_auc, plot_learning_curves, plot_periods
from torchrec_gnn.recipes.runs import CompareError, Run, execute
from torchrec_gnn.train.run_dir import STREAM_SPLIT

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
    # with 15 instead of 10 first-hop neighbours (chosen on validation AUC, docs/RESULTS.md "Step cost").
    "e2e_history": ["model.gnn.outer_hop=history", "loader.fanouts=[15,5]"],
    # Trained and scored on the graph as it stands at each batch (the window's edges included).
    "e2e_fresh": ["train.graph=fresh"],
}


SPLITS = ("val", "test")
SEED_FIELD = "{seed}"  # in a --set value: the run's seed (e.g. each seed's own pre-training to read)


def build_parser() -> argparse.ArgumentParser:
    """The ``compare`` command's flags."""
    parser = argparse.ArgumentParser(prog="torchrec-gnn compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=str, default=None, help="YAML config every variant starts from")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds: train.seed = 0 .. N-1 (default 3)")
    parser.add_argument("--output-dir", type=Path, required=True, help="runs, results.json/.md and plots go here")
    parser.add_argument("--variants", type=str, default=",".join(VARIANTS),
                        help=f"comma-separated variants (default all: {','.join(VARIANTS)})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field of every run, e.g. --set data.preset=tiny (repeatable); "
                             f"{SEED_FIELD} in a value becomes the run's seed, e.g. "
                             f"--set pretrain.from_dir=runs/a/e2e_warm_edge/seed_{SEED_FIELD}/pretrain")
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
    # The data every run must share; only the data overrides, as the others may need a
    # variant's own (``--set model.freeze_node_tables=true`` needs warm start's).
    data_overrides = [o for o in args.overrides if override_key(o).startswith("data.")]
    data = config_to_dict(load_config(args.config, data_overrides).data)
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
            argv += [a for o in overrides for a in ("--set", o.replace(SEED_FIELD, str(seed)))]
            argv += ["--seed", str(seed), "--output-dir", str(run_dir)]
            argv += ["--max-steps", str(args.max_steps)] if args.max_steps is not None else []
            runs.append(Run(variant, seed, run_dir, argv))
    return runs


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

"""``torchrec-gnn`` command line: a thin dispatcher over the job scripts in ``recipes/``.

    torchrec-gnn train --config configs/default.yaml [--set key=value ...]
    torchrec-gnn eval --run-dir runs/default [--split test] [--predictions scores.parquet]
    torchrec-gnn predict --run-dir runs/default --input rows.parquet --output scores.parquet
    torchrec-gnn export --run-dir runs/default [--output-dir runs/default/export]
    torchrec-gnn compare --config configs/default.yaml --seeds 3 --output-dir runs/compare [--variants no_graph,e2e]
    torchrec-gnn bench [sampler|loader|step|graph_size] [benchmark flags]

A user error (a bad config, data file or run directory) prints its message alone and exits with
status 2; ``--debug`` (anywhere on the line) shows the traceback as well.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path
from typing import List, Optional, Sequence

COMMANDS = ("train", "eval", "predict", "export", "compare", "bench")
BENCHMARKS = {"sampler": "bench_sampler.py", "loader": "bench_loader.py", "step": "bench_step.py",
              "graph_size": "bench_graph_size.py"}


def _bench(argv: List[str]) -> None:
    name = argv[0] if argv and not argv[0].startswith("-") else "sampler"
    if name not in BENCHMARKS:
        raise SystemExit(f"torchrec-gnn bench: unknown benchmark {name!r}; choose from {sorted(BENCHMARKS)}")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / BENCHMARKS[name]
    if not script.is_file():
        raise SystemExit(f"torchrec-gnn bench: {script} not found (benchmarks ship with the source checkout)")
    sys.argv = [str(script)] + argv[1 if argv and argv[0] == name else 0 :]
    runpy.run_path(str(script), run_name="__main__")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Dispatch ``argv`` (default: ``sys.argv[1:]``) to a command."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    from torchrec_gnn.train.checkpoint import CheckpointError
    from torchrec_gnn.train.run_dir import RunDirectoryError

    # ConfigError, CompareError and the data loaders' errors are ValueErrors; each message names
    # the file, field and value. RuntimeErrors of torch (or of a bug) keep their traceback.
    user_errors = (ValueError, FileNotFoundError, RunDirectoryError, CheckpointError)
    try:
        _dispatch(args)
    except user_errors as error:
        if debug:
            raise
        command = args[0] if args else ""
        print(f"torchrec-gnn {command}: error: {error}\n(--debug shows the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


def _dispatch(args: List[str]) -> None:
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        print(__doc__)
        if args and args[0] not in ("-h", "--help"):
            raise SystemExit(f"torchrec-gnn: unknown command {args[0]!r}; choose from {list(COMMANDS)}")
        return
    command, rest = args[0], args[1:]
    if command == "train":
        from torchrec_gnn.recipes.train import main as train_main

        train_main(rest)
    elif command == "eval":
        from torchrec_gnn.recipes.evaluate import main as eval_main

        eval_main(rest)
    elif command == "predict":
        from torchrec_gnn.recipes.evaluate import predict_main

        predict_main(rest)
    elif command == "export":
        from torchrec_gnn.recipes.export import main as export_main

        export_main(rest)
    elif command == "compare":
        from torchrec_gnn.recipes.compare import main as compare_main

        compare_main(rest)
    else:
        _bench(rest)

"""Mutation testing of the modules where a silent bug costs most (``make mutate``; not in CI).

    python tools/mutate.py                         # every module below (hours on 2 cores)
    python tools/mutate.py --modules fusion,balancing --json docs/results/mutation.json

For each module, mutmut (pinned in ``requirements-mutate.txt``) mutates that file alone in a
scratch copy of the committed tree (``git archive HEAD``: the checkout is never touched) and
runs that module's tests against every mutant. Profiler labels (``record_function("...")``)
are not mutated: renaming a label changes no behaviour. A mutant is *killed* when a test fails
(or times out), *survived* when every test passes; the score is killed / all. Surviving mutants
are printed with their diff, so each one is either killed by a new test or recorded as
equivalent, with the reason, in the README's Tests section. numba kernels
(``graph/_kernels.py``) are out of reach: mutmut's trampolines are not numba-compilable; the
sampler's tests check the kernels' outputs against brute-force references instead.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]

# mutmut's statuses that mean a test noticed the mutant (a crash of a numba kernel is noticed too)
DETECTED = ("killed", "timeout", "segfault")

# module name -> (file to mutate, the tests that cover it)
MODULES: Dict[str, tuple] = {
    "fusion": ("torchrec_gnn/modules/fusion.py", ["tests/modules/test_fusion.py"]),
    "balancing": ("torchrec_gnn/train/balancing.py", ["tests/train/test_balancing.py"]),
    "split": ("torchrec_gnn/data/split.py", ["tests/data/test_split.py",
                                             "tests/recipes/test_stream.py::test_stream_periods_cut_the_window_in_time_order",
                                             "tests/recipes/test_stream.py::test_streaming_graph_holds_every_edge_with_a_time"]),
    "batch": ("torchrec_gnn/data/batch.py", ["tests/data/test_batch.py"]),
    "gfae": ("torchrec_gnn/modules/gfae.py", ["tests/modules/test_gfae.py"]),
    "gnn_tower": ("torchrec_gnn/modules/gnn_tower.py",
                  ["tests/modules/test_gnn_tower.py", "tests/models/test_graph_dlrm.py", "tests/modules/test_history.py"]),
    "metrics": ("torchrec_gnn/train/metrics.py", ["tests/train/test_metrics.py"]),
    "checkpoint": ("torchrec_gnn/train/checkpoint.py", ["tests/train/test_checkpoint.py"]),
    "sampler": ("torchrec_gnn/graph/sampler.py", ["tests/graph/test_sampler.py"]),
}


def mutmut_config(path: str, tests: List[str]) -> str:
    """The ``[tool.mutmut]`` section that mutates ``path`` alone against ``tests``."""
    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["torchrec_gnn"]\n'
        f'only_mutate = ["{path}"]\n'
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}\n"
        'also_copy = ["configs"]\n'
        'do_not_mutate_patterns = ["record_function\\\\("]\n'
    )


def run_module(name: str, workdir: Path, max_children: int) -> Dict[str, object]:
    """Mutate one module in a fresh copy of HEAD under ``workdir``; its counts and survivors."""
    path, tests = MODULES[name]
    copy = workdir / name
    copy.mkdir()
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(copy, filter="data")
    with open(copy / "pyproject.toml", "a") as f:
        f.write(mutmut_config(path, tests))
    mutmut = [sys.executable, "-m", "mutmut"]
    # One thread per test process: forked workers must not inherit busy OpenMP pools. mutmut forks
    # each mutant's run from a process whose clean run already used numba's parallel kernel, and
    # numba's GNU OpenMP layer SIGTERMs a forked child that uses it again ("suspicious" verdicts for
    # mutants that no test had failed yet): its fork-safe workqueue layer runs the same kernels.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
           "NUMBA_THREADING_LAYER": "workqueue"}
    start = time.perf_counter()
    run = subprocess.run([*mutmut, "run", "--max-children", str(max_children)], cwd=copy, env=env,
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"mutmut run failed for {name} ({path}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    listing = subprocess.run([*mutmut, "results", "--all", "true"], cwd=copy, env=env, check=True,
                             capture_output=True, text=True).stdout
    statuses = dict(line.strip().rsplit(": ", 1) for line in listing.splitlines() if ": " in line)
    counts: Dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    survivors = {
        mutant: subprocess.run([*mutmut, "show", mutant], cwd=copy, env=env, capture_output=True, text=True).stdout
        for mutant, status in statuses.items() if status == "survived"
    }
    return {"file": path, "tests": tests, "mutants": len(statuses), "counts": counts,
            "seconds": round(time.perf_counter() - start, 1),
            "survivors": survivors}


def detected(counts: Dict[str, int]) -> int:
    """Mutants some test noticed (:data:`DETECTED` statuses)."""
    return sum(counts.get(status, 0) for status in DETECTED)


def results_table(results: Dict[str, Dict[str, object]]) -> str:
    """The README table: per module the mutants, killed (timeouts included), survived, those no
    selected test runs, and the killed share of all and of those the tests reach."""
    rows = ["| module | mutants | killed | survived | undecided | no test reaches | killed / all | killed / reached |",
            "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        counts = r["counts"]
        killed = detected(counts)
        survived, unreached = counts.get("survived", 0), counts.get("no tests", 0)
        undecided = r["mutants"] - killed - survived - unreached  # e.g. "suspicious": slower than expected
        reached = r["mutants"] - unreached
        rows.append(f"| {name} | {r['mutants']} | {killed} | {survived} | {undecided} | {unreached} | "
                    f"{killed / max(r['mutants'], 1):.1%} | {killed / max(reached, 1):.1%} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", default=",".join(MODULES), help=f"comma-separated, from {list(MODULES)}")
    parser.add_argument("--max-children", type=int, default=1, help="mutants tested at once")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    names = [n for n in args.modules.split(",") if n]
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        raise SystemExit(f"tools/mutate.py: unknown modules {unknown}; choose from {list(MODULES)}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="mutate_") as tmp:
        for name in names:
            print(f"[{name}] mutating {MODULES[name][0]} against {' '.join(MODULES[name][1])} ...", flush=True)
            results[name] = run_module(name, Path(tmp), args.max_children)
            r = results[name]
            killed = detected(r["counts"])
            print(f"[{name}] {killed}/{r['mutants']} killed ({killed / max(r['mutants'], 1):.1%}), {r['seconds']} s",
                  flush=True)
            for mutant, diff in r["survivors"].items():
                print(f"  survived: {diff.strip()}\n")
    print(results_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

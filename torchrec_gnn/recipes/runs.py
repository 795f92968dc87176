"""How ``compare`` runs its training jobs: one child process each (or in this process), timed
from inside, with the child's peak memory, and a ``cost.json`` written last so that an
interrupted comparison resumes and never takes a half-written run for a finished one."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

# torchrun's variables: a child run is always a one-process job with its own free port.
_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                 "MASTER_PORT", "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_MAX_RESTARTS")


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


COST_FILE = "cost.json"  # written last: its presence marks a finished run
CHILD_SECONDS_FILE = "train_seconds.json"  # the child's own timing of train's main


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
_CHILD_CODE = ("import sys; from torchrec_gnn.recipes.runs import _child; "
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

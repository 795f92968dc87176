"""Memory of 2 processes that load the same saved HeteroGraph: ``mmap=True`` vs private copies.

Builds a power-law ``user -watches-> video`` graph plus its reverse (>= 10M edges, with int64
edge times; CSC arrays drawn directly, vectorised), ``save()``s it to a temporary directory and,
for ``mmap=True`` and then ``mmap=False``, starts 2 separate Python processes that each
``HeteroGraph.load(dir, mmap=...)``, touch every page of every array (a sum over each), sample
``--sample-batches`` batches of 1024 seed videos with ``NeighborSampler([10, 5])`` (the sampler
must not copy the mapped arrays) and hold. While both hold, it reads each process's
``/proc/<pid>/smaps_rollup`` (Rss, Pss, Shared_Clean, Private_Clean, Private_Dirty, Anonymous)
and ``/proc/<pid>/smaps`` (the Pss of the mappings of the graph's own ``.npy`` files), plus the
system's ``/proc/meminfo``.

"Graph memory" of a process = Pss of its mappings of the graph files + growth of its anonymous
memory since just before the load. The claim checked: with ``mmap=True`` the 2 processes share
one copy (sum of graph memory ~= 1x the graph's size on disk), with ``mmap=False`` each holds
its own (~= 2x). Each mode starts with the graph's files evicted from the page cache
(``posix_fadvise(DONTNEED)``, this benchmark's files only), so the system figures include the
page cache the mode causes.

    .venv/bin/python benchmarks/bench_mmap_memory.py --json out.json
    .venv/bin/python benchmarks/bench_mmap_memory.py --edges 20000000 --sample-batches 0
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torchrec_gnn.graph.hetero_graph import CSC, HeteroGraph  # noqa: E402

RELATION = ("user", "watches", "video")
REVERSE = ("video", "rev_watches", "user")
ROLLUP_FIELDS = ("Rss", "Pss", "Shared_Clean", "Shared_Dirty", "Private_Clean", "Private_Dirty", "Anonymous")
MEMINFO_FIELDS = ("MemTotal", "MemAvailable", "Cached", "AnonPages", "Shmem")
MIB = 2**20


# ---------------------------------------------------------------------- /proc readers (bytes)
def smaps_rollup(pid: int) -> Dict[str, int]:
    """Whole-process memory counters of ``/proc/<pid>/smaps_rollup``, in bytes."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        if key in ROLLUP_FIELDS:
            values[key] = int(rest.split()[0]) * 1024
    return values


_MAPPING_HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")


def file_pss(pid: int, directory: str) -> Dict[str, int]:
    """Rss and Pss (bytes) summed over the mappings of files under ``directory``."""
    totals = {"Rss": 0, "Pss": 0, "mappings": 0}
    inside = False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if _MAPPING_HEADER.match(line):
            parts = line.split(maxsplit=5)
            inside = len(parts) == 6 and parts[5].startswith(directory)
            totals["mappings"] += inside
        elif inside and (line.startswith("Rss:") or line.startswith("Pss:")):
            totals[line[:3]] += int(line.split()[1]) * 1024
    return totals


def meminfo() -> Dict[str, int]:
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in MEMINFO_FIELDS:
            values[key] = int(rest.split()[0]) * 1024
    return values


# ---------------------------------------------------------------------- the graph
def build_graph(num_users: int, num_videos: int, num_edges: int, seed: int) -> HeteroGraph:
    """Power-law bipartite CSC arrays for both directions, drawn directly (no sort of E pairs).

    In-degrees follow ``floor(n * u ** a)`` draws (a few hubs, a long tail), sources are drawn
    with the same skew, and edge times ascend within every segment (``arange``) so the arrays
    are valid for temporal sampling too.
    """
    rng = np.random.default_rng(seed)

    def csc(num_src: int, num_dst: int, a_dst: float, a_src: float) -> CSC:
        dst = np.floor(num_dst * rng.random(num_edges) ** a_dst).astype(np.int64)
        degree = np.bincount(rng.permutation(num_dst)[dst], minlength=num_dst)
        del dst
        colptr = np.zeros(num_dst + 1, np.int64)
        np.cumsum(degree, out=colptr[1:])
        src = np.floor(num_src * rng.random(num_edges) ** a_src).astype(np.int32)
        row = rng.permutation(num_src).astype(np.int32)[src]
        return CSC(colptr=colptr, row=row, time=np.arange(num_edges, dtype=np.int64))

    return HeteroGraph(
        {"user": num_users, "video": num_videos},
        {RELATION: csc(num_users, num_videos, 3.0, 2.0), REVERSE: csc(num_videos, num_users, 2.0, 3.0)},
    )


def evict_from_page_cache(directory: Path) -> None:
    """Drop the clean cached pages of this benchmark's files (no one else's)."""
    for path in directory.iterdir():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


# ---------------------------------------------------------------------- child process
def child(directory: str, mmap: bool, sample_batches: int) -> None:
    """Load, touch, sample and hold; talk to the parent with one JSON line per step."""
    import torch

    from torchrec_gnn.graph.sampler import NeighborSampler

    def say(**message) -> None:
        print(json.dumps(message), flush=True)

    # Warm the sampler on a tiny graph of the same dtypes first, so numba's cache load and
    # compilation land in the baseline, not in the graph's figures.
    tiny = HeteroGraph(
        {"user": 4, "video": 3},
        {RELATION: CSC(np.array([0, 2, 3, 4]), np.array([0, 1, 2, 3], np.int32), np.arange(4)),
         REVERSE: CSC(np.array([0, 1, 2, 3, 4]), np.array([0, 0, 1, 2], np.int32), np.arange(4))},
    )
    NeighborSampler(tiny, [10, 5]).sample({"video": torch.tensor([0, 1])}, generator=torch.Generator().manual_seed(0))
    gc.collect()
    say(step="ready", rollup=smaps_rollup(os.getpid()))
    sys.stdin.readline()  # "load"

    start = time.perf_counter()
    graph = HeteroGraph.load(directory, mmap=mmap)
    touched, checksum = 0, 0.0
    for et in graph.edge_types:
        index = graph.csc(et)
        for array in (index.colptr, index.row, index.time, index.weight):
            if array is not None:
                checksum += float(array.sum())  # reads every page of the array
                touched += array.nbytes
    sampler = NeighborSampler(graph, [10, 5])
    generator = torch.Generator().manual_seed(os.getpid())
    sampled_edges = 0
    for _ in range(sample_batches):
        seeds = torch.randint(0, graph.num_nodes["video"], (1024,), generator=generator)
        out = sampler.sample({"video": seeds}, generator=generator)
        sampled_edges += sum(r.numel() for r in out.row.values())
    del out
    gc.collect()
    say(step="loaded", seconds=time.perf_counter() - start, touched_bytes=touched, checksum=checksum, sampled_edges=sampled_edges,
        rollup=smaps_rollup(os.getpid()))
    sys.stdin.readline()  # "exit"


# ---------------------------------------------------------------------- parent
def run_mode(directory: Path, mmap: bool, processes: int, sample_batches: int) -> Dict[str, object]:
    evict_from_page_cache(directory)
    command = [sys.executable, __file__, "--child", str(directory), "--child-mmap", str(int(mmap)),
               "--sample-batches", str(sample_batches)]
    procs = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    try:
        def receive(p: subprocess.Popen, step: str) -> Dict[str, object]:
            line = p.stdout.readline()
            if not line:
                raise RuntimeError(f"bench_mmap_memory: child {p.pid} exited (code {p.wait()}) before {step!r}")
            message = json.loads(line)
            assert message["step"] == step, message
            return message

        ready = [receive(p, "ready") for p in procs]
        system_before = meminfo()
        for p in procs:
            p.stdin.write("load\n")
            p.stdin.flush()
        loaded = [receive(p, "loaded") for p in procs]
        time.sleep(0.5)
        # Measured while every process holds the graph, so Pss splits the shared pages among them.
        per_process = []
        for p, before, after in zip(procs, ready, loaded):
            rollup = smaps_rollup(p.pid)
            files = file_pss(p.pid, str(directory))
            anon_growth = rollup["Anonymous"] - before["rollup"]["Anonymous"]
            per_process.append({
                "pid": p.pid, "rollup": rollup, "rollup_before_load": before["rollup"],
                "graph_file_rss": files["Rss"], "graph_file_pss": files["Pss"], "graph_file_mappings": files["mappings"],
                "anonymous_growth": anon_growth, "graph_memory": files["Pss"] + anon_growth,
                "pss_growth": rollup["Pss"] - before["rollup"]["Pss"],
                "load_touch_sample_seconds": after["seconds"], "touched_bytes": after["touched_bytes"],
                "sampled_edges": after["sampled_edges"],
            })
        system_after = meminfo()
    finally:
        for p in procs:
            try:
                p.stdin.write("exit\n")
                p.stdin.flush()
            except (BrokenPipeError, OSError):
                pass
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    system = {k: system_after[k] - system_before[k] for k in system_before}
    return {
        "mmap": mmap,
        "processes": per_process,
        "sum_pss": sum(p["rollup"]["Pss"] for p in per_process),
        "sum_graph_memory": sum(p["graph_memory"] for p in per_process),
        "sum_graph_file_pss": sum(p["graph_file_pss"] for p in per_process),
        "sum_anonymous_growth": sum(p["anonymous_growth"] for p in per_process),
        "system_delta": {**system, "used": -system["MemAvailable"]},
    }


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edges", type=int, default=6_000_000, help="edges per direction (default 6M, so 12M in all)")
    parser.add_argument("--users", type=int, default=2_000_000)
    parser.add_argument("--videos", type=int, default=1_000_000)
    parser.add_argument("--processes", type=int, default=2, help="processes loading the graph at once (default 2)")
    parser.add_argument("--sample-batches", type=int, default=50, help="sampler batches per process after the touch (default 50)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the figures as one JSON object here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-mmap", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        child(args.child, bool(args.child_mmap), args.sample_batches)
        return {}

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_mmap_memory_") as tmp:
        directory = Path(tmp) / "graph"
        graph = build_graph(args.users, args.videos, args.edges, args.seed)
        graph.save(directory)
        num_edges, nbytes = graph.num_edges(), graph.nbytes()
        del graph
        gc.collect()
        disk = sum(p.stat().st_size for p in directory.iterdir())
        print(f"graph: {num_edges:,} edges, {nbytes / MIB:.1f} MiB of arrays, {disk / MIB:.1f} MiB on disk "
              f"(built and saved in {time.perf_counter() - start:.1f}s)")
        modes = {}
        for mmap in (True, False):
            modes["mmap" if mmap else "copy"] = run_mode(directory, mmap, args.processes, args.sample_batches)
    # The temporary directory (graph files) is gone here.

    print(f"\n{args.processes} processes, each: load, touch every array, sample {args.sample_batches} batches, hold")
    header = f"{'mode':<5} {'proc':>4} {'RSS':>8} {'PSS':>8} {'Shr_Cln':>8} {'Prv_Cln':>8} {'Prv_Drt':>8} {'file PSS':>9} {'+anon':>8} {'graph':>8}"
    print(header + "   (MiB; graph = file PSS + anonymous growth since before the load)")
    for name, mode in modes.items():
        for i, p in enumerate(mode["processes"]):
            r = p["rollup"]
            print(f"{name:<5} {i:>4} {r['Rss'] / MIB:>8.1f} {r['Pss'] / MIB:>8.1f} {r['Shared_Clean'] / MIB:>8.1f} "
                  f"{r['Private_Clean'] / MIB:>8.1f} {r['Private_Dirty'] / MIB:>8.1f} {p['graph_file_pss'] / MIB:>9.1f} "
                  f"{p['anonymous_growth'] / MIB:>8.1f} {p['graph_memory'] / MIB:>8.1f}")
        print(f"{name:<5} {'sum':>4} {'':>8} {mode['sum_pss'] / MIB:>8.1f} {'':>8} {'':>8} {'':>8} "
              f"{mode['sum_graph_file_pss'] / MIB:>9.1f} {mode['sum_anonymous_growth'] / MIB:>8.1f} "
              f"{mode['sum_graph_memory'] / MIB:>8.1f}   = {mode['sum_graph_memory'] / disk:.2f}x the graph on disk")
    print("\nsystem /proc/meminfo change while both hold (noisy: other processes share this machine):")
    for name, mode in modes.items():
        d = mode["system_delta"]
        print(f"  {name:<5} used (MemTotal-MemAvailable) {d['used'] / MIB:+8.1f} MiB, AnonPages {d['AnonPages'] / MIB:+8.1f} MiB, "
              f"Cached {d['Cached'] / MIB:+8.1f} MiB")
    ratio = modes["mmap"]["sum_graph_memory"] / modes["copy"]["sum_graph_memory"]
    print(f"\nsum of graph memory, mmap / copy: {ratio:.2f} "
          f"(mmap {modes['mmap']['sum_graph_memory'] / disk:.2f}x, copy {modes['copy']['sum_graph_memory'] / disk:.2f}x the graph)")
    print(f"total time {time.perf_counter() - start:.1f}s")

    result = {
        "graph": {"num_edges": num_edges, "array_bytes": nbytes, "disk_bytes": disk,
                  "num_nodes": {"user": args.users, "video": args.videos}},
        "modes": modes,
        "sum_graph_memory_over_disk": {k: m["sum_graph_memory"] / disk for k, m in modes.items()},
        "sum_pss": {k: m["sum_pss"] for k, m in modes.items()},
        "ratio_mmap_over_copy": ratio,
        "config": {"processes": args.processes, "sample_batches": args.sample_batches, "seed": args.seed,
                   "cpu_count": os.cpu_count(), "machine": platform.machine(), "seconds": time.perf_counter() - start},
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()

"""Neighbour-sampler throughput: ours (numba) against PyG + torch-sparse on the same graph.

Builds a synthetic power-law heterogeneous graph (``user -watches-> video`` plus its reverse,
>= 10M edges in total), then samples 2 hops with fanouts [10, 5] around 1024 seed videos per
batch and reports sampled edges/s and batches/s. When ``torch_sparse`` is importable, PyG's own
``torch_geometric.sampler.NeighborSampler`` (which calls ``torch.ops.torch_sparse.
hetero_neighbor_sample`` when pyg-lib is absent) runs on the same graph, seeds and fanouts in the
same process, timed both through PyG's sampler API and as the bare C++ op.

The link case is what ``LinkNeighborLoader`` asks of a sampler: 1024 watches per batch, one
uniformly drawn negative video each (binary mode), both endpoints sampled 2 hops. Ours
(:class:`torchrec_gnn.pyg.PyGNeighborSampler`) and PyG's sampler both run behind PyG's own
``sample_from_edges``, so negative drawing and seed handling are PyG's code on both sides.

Every figure is timed in interleaved rounds; the summary gives the rate over all rounds and the
median and range of the per-round rates.

    .venv/bin/python benchmarks/bench_sampler.py                      # threads 1 and 2, 200 batches
    .venv/bin/python benchmarks/bench_sampler.py --batches 500 --threads 1 --json out.json

The peer is optional (never a project dependency); to install it for this benchmark only:
``.venv/bin/python -m pip install --no-deps ../shared/wheels/*.whl && .venv/bin/python -m pip
install scipy``. The generated graph is cached under ``--cache-dir`` (HeteroGraph.save/load).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torchrec_gnn.graph import sampler as sampler_module  # noqa: E402
from torchrec_gnn.graph.hetero_graph import HeteroGraph  # noqa: E402
from torchrec_gnn.graph.sampler import NeighborSampler  # noqa: E402
from torchrec_gnn.pyg import PyGNeighborSampler  # noqa: E402

SEED_TYPE = "video"
RELATION = ("user", "watches", "video")


def build_graph(num_users: int, num_videos: int, num_edges: int, seed: int) -> HeteroGraph:
    """Power-law bipartite graph: video popularity and user activity both heavy-tailed.

    ``id = floor(n * u ** a)`` makes node ``x`` drawn with density ~ ``x ** (1/a - 1)``, i.e.
    expected degree ~ ``x ** -(1 - 1/a)``: a power-law degree distribution with a few huge hubs
    and a long tail of degree 0-2 nodes. Ids are then shuffled so hubs are spread over the range.
    """
    rng = np.random.default_rng(seed)
    video = np.floor(num_videos * rng.random(num_edges) ** 3.0).astype(np.int64)
    user = np.floor(num_users * rng.random(num_edges) ** 2.0).astype(np.int64)
    video = rng.permutation(num_videos)[video]
    user = rng.permutation(num_users)[user]
    return HeteroGraph.from_edges(
        {"user": num_users, "video": num_videos},
        {RELATION: (torch.from_numpy(user), torch.from_numpy(video))},
        add_reverse=True,
    )


def load_or_build(args: argparse.Namespace) -> HeteroGraph:
    key = f"u{args.users}-v{args.videos}-e{args.edges}-s{args.seed}"
    path = Path(args.cache_dir) / f"bench_sampler_{hashlib.md5(key.encode()).hexdigest()[:10]}"
    if (path / "graph.json").is_file():
        print(f"graph: loading cached {path}")
        return HeteroGraph.load(path, mmap=False)
    print(f"graph: building {key} (cached to {path})")
    graph = build_graph(args.users, args.videos, args.edges, args.seed)
    graph.save(path)
    return graph


class Contender:
    """A named ``step(seed_batch) -> sampled edges`` with its accumulated time and edge count."""

    def __init__(self, name: str, step) -> None:
        self.name, self.step = name, step
        self.seconds, self.edges, self.batches = 0.0, 0, 0
        self.round_rates: List[float] = []  # edges/s of each timed round

    def run(self, batches: list, timed: bool) -> None:
        start = time.perf_counter()
        edges = sum(self.step(batch) for batch in batches)
        if timed:
            seconds = time.perf_counter() - start
            self.seconds += seconds
            self.edges += edges
            self.batches += len(batches)
            self.round_rates.append(edges / seconds)

    def result(self) -> Dict[str, float]:
        return {
            "batches_per_s": self.batches / self.seconds,
            "edges_per_s": self.edges / self.seconds,
            "edges_per_s_median": float(np.median(self.round_rates)),
            "edges_per_s_min": float(np.min(self.round_rates)),
            "edges_per_s_max": float(np.max(self.round_rates)),
            "edges_per_batch": self.edges / self.batches,
            "seconds": self.seconds,
        }


def ours_step(graph: HeteroGraph, fanouts: List[int], threads: int):
    sampler = NeighborSampler(graph, fanouts, num_threads=threads)
    generator = torch.Generator().manual_seed(0)

    def step(batch: torch.Tensor) -> int:
        out = sampler.sample({SEED_TYPE: batch}, generator=generator)
        return sum(r.numel() for r in out.row.values())

    return step


def pyg_steps(graph: HeteroGraph, fanouts: List[int]):
    """PyG's sampler API and its bare torch-sparse op, or None when torch_sparse is absent."""
    try:
        import torch_sparse  # noqa: F401
    except ImportError:
        return None
    import torch_geometric.typing
    from torch_geometric.data import HeteroData
    from torch_geometric.sampler import NeighborSampler as PyGSampler
    from torch_geometric.sampler import NodeSamplerInput

    if torch_geometric.typing.WITH_PYG_LIB:
        print("note: pyg-lib is installed, so PyG's sampler uses pyg-lib, not torch-sparse")
    data = HeteroData()
    for t, n in graph.num_nodes.items():
        data[t].num_nodes = n
    for et in graph.edge_types:
        data[et].edge_index = graph.edge_index(et)  # CSC order: PyG's own CSC conversion is a no-op sort
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "using NeighborSampler without pyg-lib is deprecated"
        sampler = PyGSampler(data, num_neighbors=fanouts)
    del data

    def api_step(batch: torch.Tensor) -> int:
        out = sampler.sample_from_nodes(NodeSamplerInput(input_id=None, node=batch, input_type=SEED_TYPE))
        return sum(r.numel() for r in out.row.values())

    # The bare op with the exact arguments PyG's sampler passes (neighbor_sampler.py, torch-sparse branch).
    num_neighbors = sampler.num_neighbors.get_mapped_values(sampler.edge_types)

    def op_step(batch: torch.Tensor) -> int:
        out = torch.ops.torch_sparse.hetero_neighbor_sample(
            sampler.node_types, sampler.edge_types, sampler.colptr_dict, sampler.row_dict,
            {SEED_TYPE: batch}, num_neighbors, sampler.num_neighbors.num_hops, False, True,
        )  # fmt: skip
        return sum(r.numel() for r in out[1].values())

    return api_step, op_step, sampler


def link_steps(graph: HeteroGraph, fanouts: List[int], pyg_sampler) -> List[Contender]:
    """LinkNeighborLoader's work, one negative per link, for ours and (if present) PyG's sampler."""
    from torch_geometric.sampler import EdgeSamplerInput, NegativeSampling

    negatives = NegativeSampling("binary", amount=1)

    def step_of(sampler):
        def step(links: torch.Tensor) -> int:
            inputs = EdgeSamplerInput(input_id=None, row=links[0], col=links[1], input_type=RELATION)
            out = sampler.sample_from_edges(inputs, neg_sampling=negatives)
            return sum(r.numel() for r in out.row.values())

        return step

    contenders = [Contender("link: ours (PyGNeighborSampler)", step_of(PyGNeighborSampler(NeighborSampler(graph, fanouts))))]
    if pyg_sampler is not None:
        contenders.append(Contender("link: PyG NeighborSampler (torch-sparse)", step_of(pyg_sampler)))
    return contenders


def link_batches(graph: HeteroGraph, count: int, batch_size: int, seed: int) -> List[torch.Tensor]:
    """``count`` batches of ``batch_size`` watches drawn uniformly from the graph: (2, B) each."""
    generator = torch.Generator().manual_seed(seed + 1)
    edge_index = graph.edge_index(RELATION)
    picks = torch.randint(0, edge_index.shape[1], (count, batch_size), generator=generator)
    return [edge_index[:, p] for p in picks]


def interleave(contenders: List[Contender], batches: list, warmup: int, rounds: int) -> Dict[str, Dict[str, float]]:
    """Warm every contender up, then time them on the same chunks in turn, round after round, so
    load from other processes on a shared machine hits all of them alike."""
    for c in contenders:
        c.run(batches[:warmup], timed=False)
    timed = batches[warmup:]
    chunk = -(-len(timed) // rounds)
    for r in range(rounds):
        for c in contenders:
            c.run(timed[r * chunk:(r + 1) * chunk], timed=True)
    return {c.name: c.result() for c in contenders}


def report(results: Dict[str, Dict[str, float]]) -> None:
    for name, r in results.items():
        print(f"{name + ':':42s} {r['edges_per_s'] / 1e6:8.2f}M edges/s (rounds: median {r['edges_per_s_median'] / 1e6:.2f}M, "
              f"{r['edges_per_s_min'] / 1e6:.2f}-{r['edges_per_s_max'] / 1e6:.2f}M)  {r['batches_per_s']:8.1f} batches/s  "
              f"({r['edges_per_batch']:.0f} edges/batch)")


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=200, help="timed batches per sampler (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed batches first (default 20)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds the timed batches are split into (default 10)")
    parser.add_argument("--batch-size", type=int, default=1024, help="seed videos per batch (default 1024)")
    parser.add_argument("--fanouts", type=int, nargs="+", default=[10, 5], help="fanout per hop (default 10 5)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="numba thread counts to time ours with; the first is reported as ours_* (default 1 2)")
    parser.add_argument("--parallel-min-frontier", type=int, default=sampler_module.PARALLEL_MIN_FRONTIER,
                        help="smallest frontier that threads > 1 runs in parallel (default: the library's, "
                             f"{sampler_module.PARALLEL_MIN_FRONTIER}; 0 = always)")
    parser.add_argument("--users", type=int, default=2_000_000)
    parser.add_argument("--videos", type=int, default=1_000_000)
    parser.add_argument("--edges", type=int, default=8_000_000, help="user->video edges drawn before dedup; the reverse doubles them")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "torchrec_gnn_bench"))
    parser.add_argument("--json", default=None, help="write the results as one JSON object here")
    args = parser.parse_args(argv)

    sampler_module.PARALLEL_MIN_FRONTIER = args.parallel_min_frontier
    start = time.perf_counter()
    graph = load_or_build(args)
    print(f"graph: ready in {time.perf_counter() - start:.1f}s")
    print(graph.summary())
    generator = torch.Generator().manual_seed(args.seed)
    total = args.warmup + args.batches
    perm = torch.cat([torch.randperm(graph.num_nodes[SEED_TYPE], generator=generator)
                      for _ in range(-(-total * args.batch_size // graph.num_nodes[SEED_TYPE]))])
    seeds = list(perm[: total * args.batch_size].view(total, args.batch_size))
    print(f"config: {args.batch_size} seed {SEED_TYPE}s per batch, fanouts {args.fanouts}, "
          f"{args.warmup} warm-up + {args.batches} timed batches, torch threads {torch.get_num_threads()}")

    contenders = [Contender(f"ours (numba, threads={t})", ours_step(graph, args.fanouts, t)) for t in args.threads]
    peer = pyg_steps(graph, args.fanouts)
    links = link_steps(graph, args.fanouts, None if peer is None else peer[2])
    if peer is None:
        print("pyg: torch_sparse is not importable: peer absent, no comparison "
              "(pip install --no-deps ../shared/wheels/*.whl to compare)")
    else:
        contenders += [Contender("PyG NeighborSampler (torch-sparse)", peer[0]),
                       Contender("torch_sparse op only", peer[1])]
    load_start = os.getloadavg()[0]
    results = interleave(contenders, seeds, args.warmup, args.rounds)
    link_results = interleave(links, link_batches(graph, total, args.batch_size, args.seed), args.warmup, args.rounds)
    load = os.getloadavg()[0]
    print(f"load average (1 min): {load_start:.2f} at the start, {load:.2f} at the end, on {os.cpu_count()} cores")
    report(results)
    report(link_results)
    ours = {t: results[c.name] for t, c in zip(args.threads, contenders)}
    pyg = None if peer is None else {"api": results[contenders[-2].name], "op": results[contenders[-1].name]}
    first = ours[args.threads[0]]
    ratio = ratio_op = None
    if pyg is not None:
        ratio = first["edges_per_s"] / pyg["api"]["edges_per_s"]
        ratio_op = first["edges_per_s"] / pyg["op"]["edges_per_s"]
        for threads, r in ours.items():
            print(f"ratio ours(threads={threads}) / PyG: {r['edges_per_s'] / pyg['api']['edges_per_s']:.2f}x edges/s, "
                  f"{r['batches_per_s'] / pyg['api']['batches_per_s']:.2f}x batches/s; "
                  f"vs the bare op {r['edges_per_s'] / pyg['op']['edges_per_s']:.2f}x edges/s")
    link_ours = link_results[links[0].name]
    link_pyg = None if peer is None else link_results[links[1].name]
    link_ratio = None if link_pyg is None else link_ours["edges_per_s"] / link_pyg["edges_per_s"]
    if link_ratio is not None:
        print(f"link ratio ours / PyG: {link_ratio:.2f}x edges/s")

    result = {
        "ours_edges_per_s": first["edges_per_s"],
        "ours_batches_per_s": first["batches_per_s"],
        "ours_threads": args.threads[0],
        "ours_by_threads": {str(k): v for k, v in ours.items()},
        "pyg_edges_per_s": None if pyg is None else pyg["api"]["edges_per_s"],
        "pyg_batches_per_s": None if pyg is None else pyg["api"]["batches_per_s"],
        "pyg_op_edges_per_s": None if pyg is None else pyg["op"]["edges_per_s"],
        "pyg_op_batches_per_s": None if pyg is None else pyg["op"]["batches_per_s"],
        "ratio": ratio,
        "ratio_vs_op": ratio_op,
        "link_ours_edges_per_s": link_ours["edges_per_s"],
        "link_pyg_edges_per_s": None if link_pyg is None else link_pyg["edges_per_s"],
        "link_ratio": link_ratio,
        "rounds": {**results, **link_results},
        "graph": {"num_nodes": graph.num_nodes, "num_edges": graph.num_edges(),
                  "edges_per_relation": {"__".join(et): graph.num_edges(et) for et in graph.edge_types}},
        "config": {"batch_size": args.batch_size, "fanouts": args.fanouts, "batches": args.batches,
                   "warmup": args.warmup, "rounds": args.rounds, "threads": args.threads, "parallel_min_frontier": args.parallel_min_frontier, "seed": args.seed,
                   "cpu_count": os.cpu_count(), "loadavg_1min_start": load_start, "loadavg_1min_end": load, "machine": platform.machine(), "torch": torch.__version__},
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()

"""Loader throughput (GraphBatches/s through ``make_dataloader``) against the training step rate.

Builds the synthetic dataset (``SyntheticConfig.preset(--preset)``), its leak-free time split
(``history_fraction=0``), a ``NeighborSampler`` with fanouts [10, 5] and a
``GraphBatchDataset(batch_size=1024, shuffle=True)`` over the training examples (with the
dataset's node side features, as the model needs them). It then times:

* the loader: GraphBatches/s delivered by ``make_dataloader`` with 0, 1 and 2 worker processes,
  after a warm-up (worker start, numba cache load, scratch buffers), median over repeats that
  interleave the worker counts so background load hits them alike; plus, for reference, the
  bare build rate (``dataset[i]`` in this process with 1 torch thread, no DataLoader);
* the trainer the loader must keep up with: plain eager steps (forward, ``losses.sum().backward()``,
  Adam step) of ``build_graph_dlrm(dataset, graph, ModelConfig())`` on pre-built batches, with
  1 torch thread and with torch's default (on a shared 2-core machine 2 intra-op threads can be
  several times slower than 1); the faster one sets the ratio.

and prints ``loader batches/s (2 workers) / train steps/s``: above 1 the loader is not the
bottleneck. Both run on the same CPUs here (no GPU), so in a real job the trainer is much faster
and the ratio much smaller.

Those two are timed apart. ``--pipeline`` also times them together, as a job runs: the training
job itself (:class:`~torchrec_gnn.recipes.ranker.RankerRecipe` on ``configs/default.yaml`` with
this preset and batch size: sharded model, GradNorm, TorchRec's train pipeline) stepping on
pre-built batches, and the same job fed by ``make_dataloader`` with its workers building the
batches on the same cores, in interleaved rounds. ``fed / pre-built`` below 1 is what delivery
costs the trainer.

    .venv/bin/python benchmarks/bench_loader.py --json out.json
    .venv/bin/python benchmarks/bench_loader.py --pipeline --json out.json   # also loader and trainer together
    .venv/bin/python benchmarks/bench_loader.py --preset tiny --batch-size 64 --batches 20 --train-steps 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torchrec_gnn.data.loader import BatchPlan, BatchSchema, GraphBatchBuilder, GraphBatchDataset, make_dataloader  # noqa: E402
from torchrec_gnn.data.split import time_split  # noqa: E402
from torchrec_gnn.data.synthetic import SyntheticConfig, make_synthetic  # noqa: E402
from torchrec_gnn.graph.sampler import NeighborSampler  # noqa: E402
from torchrec_gnn.models.builder import ModelConfig, build_graph_dlrm  # noqa: E402


def time_loader(dataset: GraphBatchDataset, num_workers: int, warmup: int, batches: int, epoch: int) -> float:
    """GraphBatches/s of one pass: ``warmup`` untimed batches, then ``batches`` timed ones."""
    dataset.set_epoch(epoch)
    iterator = iter(make_dataloader(dataset, num_workers=num_workers))
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    seconds = time.perf_counter() - start
    del iterator  # shuts the workers down before the next configuration starts
    return batches / seconds


def time_build_only(dataset: GraphBatchDataset, warmup: int, batches: int, epoch: int) -> float:
    """GraphBatches/s of ``dataset[i]`` in this process with 1 torch thread: no DataLoader, no IPC.

    The per-batch cost a worker pays before handing the batch over (a worker also runs with 1
    thread, see ``make_dataloader``); the gap to the worker rows is the transfer cost.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dataset.set_epoch(epoch)
        for i in range(warmup):
            dataset[i]
        start = time.perf_counter()
        for i in range(warmup, warmup + batches):
            dataset[i]
        return batches / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)


def time_training(
    model: torch.nn.Module, batches: List, warmup: int, steps: int, threads: List[int], rounds: int = 4
) -> Dict[int, List[float]]:
    """Seconds of each timed eager step (forward, backward of the summed losses, Adam step) per
    torch thread count; the counts take turns in ``rounds`` blocks so background load hits them alike."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    default_threads = torch.get_num_threads()
    seconds: Dict[int, List[float]] = {t: [] for t in threads}
    step = 0

    def run(n: int, record: Optional[List[float]]) -> None:
        nonlocal step
        for _ in range(n):
            batch = batches[step % len(batches)]
            step += 1
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            losses, _ = model(batch)
            losses.sum().backward()
            optimizer.step()
            if record is not None:
                record.append(time.perf_counter() - start)

    try:
        for t in threads:
            torch.set_num_threads(t)
            run(warmup, None)
        chunk = -(-steps // rounds)
        for r in range(rounds):
            for t in threads:
                torch.set_num_threads(t)
                run(min(chunk, steps - r * chunk), seconds[t])
    finally:
        torch.set_num_threads(default_threads)
    return seconds


def time_pipeline_fed(args: argparse.Namespace) -> Dict[str, object]:
    """Steps/s of the real training job on pre-built batches and fed by its DataLoader workers
    (``args.pipeline_workers``), interleaved over ``args.repeats`` rounds of ``args.train_steps`` steps."""
    import tempfile

    import torch.distributed as dist

    from torchrec_gnn.config import load_config
    from torchrec_gnn.recipes.ranker import RankerRecipe
    from torchrec_gnn.train.distributed import init_distributed

    with tempfile.TemporaryDirectory() as out:
        config = load_config("configs/default.yaml", [
            f"data.preset={args.preset}", f"data.seed={args.seed}", f"loader.batch_size={args.batch_size}",
            f"loader.fanouts={list(args.fanouts)}", f"train.output_dir={out}", f"train.seed={args.seed}",
        ])
        recipe = RankerRecipe(config, init_distributed("cpu"))
        try:
            recipe.setup()
            data = recipe.batches(recipe.split.train, train=True)
            prebuilt = [data[i] for i in range(min(args.train_batches, len(data)))]
            rates: Dict[str, List[float]] = {"prebuilt": [], "fed": []}

            def timed(iterator, steps: int) -> float:
                for _ in range(args.train_warmup):
                    recipe.pipeline.progress(iterator)
                start = time.perf_counter()
                for _ in range(steps):
                    recipe.pipeline.progress(iterator)
                return steps / (time.perf_counter() - start)

            cycle = (prebuilt[i % len(prebuilt)] for i in range(10**9))
            for r in range(args.repeats):
                rates["prebuilt"].append(timed(cycle, args.train_steps))
                data.set_epoch(r)
                loader = make_dataloader(data, num_workers=args.pipeline_workers)
                rates["fed"].append(timed(iter(loader), args.train_steps))
                del loader  # shuts the workers down
                print(f"  repeat {r}: pre-built {rates['prebuilt'][-1]:.3f} steps/s, fed by "
                      f"{args.pipeline_workers} workers {rates['fed'][-1]:.3f} steps/s")
        finally:
            recipe.cleanup()
    prebuilt_rate, fed_rate = statistics.median(rates["prebuilt"]), statistics.median(rates["fed"])
    return {"prebuilt_steps_per_s": prebuilt_rate, "fed_steps_per_s": fed_rate, "fed_over_prebuilt": fed_rate / prebuilt_rate,
            "repeats": rates, "workers": args.pipeline_workers, "torch_threads": torch.get_num_threads(),
            "config": "configs/default.yaml"}


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="default", help="SyntheticConfig preset (default 'default')")
    parser.add_argument("--batches", type=int, default=60, help="timed loader batches per pass (default 60)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed loader batches per pass (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="passes per worker count; the median is reported (default 3)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="worker counts (default 0 1 2)")
    parser.add_argument("--batch-size", type=int, default=1024, help="B, examples per batch (default 1024)")
    parser.add_argument("--fanouts", type=int, nargs="+", default=[10, 5], help="fanout per hop (default 10 5)")
    parser.add_argument("--train-steps", type=int, default=20, help="timed training steps per thread count (default 20)")
    parser.add_argument("--train-warmup", type=int, default=2, help="untimed training steps per thread count first (default 2)")
    parser.add_argument("--train-batches", type=int, default=8, help="distinct pre-built batches the steps cycle through (default 8)")
    parser.add_argument("--train-threads", type=int, nargs="+", default=None,
                        help="torch thread counts to time training with; the fastest sets the ratio "
                             "(default: 1 and torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pipeline", action="store_true",
                        help="also time the training job (GradNorm pipeline) fed by the loader against pre-built batches")
    parser.add_argument("--pipeline-workers", type=int, default=2, help="loader workers feeding the job (default 2)")
    parser.add_argument("--json", default=None, help="write the figures as one JSON object here")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    data = make_synthetic(SyntheticConfig.preset(args.preset, seed=args.seed))
    split = time_split(data, history_fraction=0.0)
    graph = split.graph
    print(f"data: preset {args.preset!r}, {len(split.train):,} training examples, built in {time.perf_counter() - start:.1f}s")
    print(graph.summary())
    sampler = NeighborSampler(graph, args.fanouts)
    schema = BatchSchema(data.user_type, data.item_type, graph.node_types, list(data.sparse_cardinality))
    dataset = GraphBatchDataset(split.train, GraphBatchBuilder(sampler, schema, node_features=data.node_features),
                                BatchPlan(args.batch_size, shuffle=True, seed=args.seed))
    needed = args.warmup + args.batches
    if len(dataset) < needed:
        raise SystemExit(f"bench_loader: {len(dataset)} batches per epoch, fewer than --warmup + --batches = {needed}")
    probe = dataset[0].graph_features
    edges = sum(e.shape[1] for e in probe.edge_index.values())
    print(f"config: B={args.batch_size}, fanouts {args.fanouts}, {len(dataset)} batches/epoch; a batch has "
          f"{sum(probe.num_nodes.values()):,} nodes, {edges:,} edges; torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} cores")

    # Loader: interleave worker counts within each repeat (a repeat = one fresh DataLoader pass).
    rates: Dict[int, List[float]] = {w: [] for w in args.workers}
    build_rates: List[float] = []
    for r in range(args.repeats):
        for w in args.workers:
            rates[w].append(time_loader(dataset, w, args.warmup, args.batches, epoch=r))
            print(f"  repeat {r}: {w} workers {rates[w][-1]:7.2f} batches/s")
        build_rates.append(time_build_only(dataset, args.warmup, args.batches, epoch=r))
        print(f"  repeat {r}: build only {build_rates[-1]:7.2f} batches/s")
    loader = {w: statistics.median(v) for w, v in rates.items()}
    build_only = statistics.median(build_rates)

    # Training: eager steps on pre-built batches (no loader in the loop).
    torch.manual_seed(args.seed)
    model = build_graph_dlrm(data, graph, ModelConfig())
    train_batches = [dataset[i] for i in range(min(args.train_batches, len(dataset)))]
    train_threads = args.train_threads or sorted({1, torch.get_num_threads()})
    step_seconds = time_training(model, train_batches, args.train_warmup, args.train_steps, train_threads)
    train_rate = {t: 1.0 / statistics.median(v) for t, v in step_seconds.items()}
    fastest = max(train_rate, key=train_rate.get)
    train_steps_per_s = train_rate[fastest]

    load = os.getloadavg()[0]
    print(f"\nload average (1 min) at the end: {load:.2f} on {os.cpu_count()} cores")
    print(f"{'what':<34} {'batches/s':>10} {'ms/batch':>10}   repeats")
    for w in args.workers:
        print(f"{f'loader, {w} workers':<34} {loader[w]:>10.2f} {1e3 / loader[w]:>10.1f}   "
              + " ".join(f"{x:.2f}" for x in rates[w]))
    print(f"{'build only (dataset[i], 1 thread)':<34} {build_only:>10.2f} {1e3 / build_only:>10.1f}   "
          + " ".join(f"{x:.2f}" for x in build_rates))
    for t, v in step_seconds.items():
        print(f"{f'train step (fwd+bwd+Adam), {t} thr':<34} {train_rate[t]:>10.3f} {1e3 / train_rate[t]:>10.1f}   "
              f"min {min(v):.2f}s max {max(v):.2f}s over {len(v)} steps")
    ratio_workers = 2 if 2 in loader else max(loader)
    ratio = loader[ratio_workers] / train_steps_per_s
    print(f"ratio loader({ratio_workers} workers) / train steps ({fastest} threads, the faster): {ratio:.1f}x "
          f"({'loader keeps up' if ratio >= 1 else 'loader is the bottleneck'})")

    together = None
    if args.pipeline:
        print("\ntogether: the training job on pre-built batches vs fed by its loader")
        together = time_pipeline_fed(args)
        print(f"training job: pre-built {together['prebuilt_steps_per_s']:.3f} steps/s, fed by "
              f"{together['workers']} workers {together['fed_steps_per_s']:.3f} steps/s: "
              f"fed / pre-built {together['fed_over_prebuilt']:.2f}")

    result = {
        "together": together,
        "loader_batches_per_s": {str(w): v for w, v in loader.items()},
        "loader_batches_per_s_repeats": {str(w): v for w, v in rates.items()},
        "build_only_batches_per_s": build_only,
        "build_only_batches_per_s_repeats": build_rates,
        "train_steps_per_s": train_steps_per_s,
        "train_threads": fastest,
        "train_steps_per_s_by_threads": {str(t): v for t, v in train_rate.items()},
        "train_step_seconds": {str(t): v for t, v in step_seconds.items()},
        "ratio_workers": ratio_workers,
        "ratio_loader_over_train": ratio,
        "batch": {"nodes": sum(probe.num_nodes.values()), "edges": edges, "nodes_per_type": probe.num_nodes},
        "config": {"preset": args.preset, "batch_size": args.batch_size, "fanouts": args.fanouts,
                   "batches": args.batches, "warmup": args.warmup, "repeats": args.repeats,
                   "train_steps": args.train_steps, "train_warmup": args.train_warmup,
                   "train_batches": args.train_batches, "seed": args.seed, "cpu_count": os.cpu_count(),
                   "torch_threads": torch.get_num_threads(), "loadavg_1min_end": load,
                   "machine": platform.machine(), "torch": torch.__version__},
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()

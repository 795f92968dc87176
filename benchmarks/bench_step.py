"""Train-step cost of the GNN tower: the configured ranker with and without it, on the same batches.

    python benchmarks/bench_step.py --json step.json                 # configs/default.yaml
    python benchmarks/bench_step.py --profile                        # + ms per stage, top ops and backward functions
    python benchmarks/bench_step.py --set model.gnn.outer_hop=history --json step.json

The models are built from a training config (``--config``, ``--set`` as in ``train``) and run
through the real training path (DMP with world size 1, fused row-wise Adagrad node tables,
TorchRec's TrainPipelineSparseDist via BalancedTrainPipeline) over pre-built batches, so
sampling is not timed here (see bench_loader.py). Three models: ``tower`` (the config as is,
its balancer included: GradNorm by default), ``tower_fixed`` (the same with fixed loss weights,
to show the balancer's share) and ``no_graph`` (the ranker alone, fixed weights: the cheapest
step, the baseline of the slowdown). Each runs with the intra-op threads ``train`` would give
its process (``--threads`` to change): 1 on a 2-core machine beside 2 loader workers.

Each model is timed in a process of its own, as a training job holds one model. The processes
run in the order A B C C B A (``--passes`` times), each building the same batches and timing
``--rounds`` rounds after a warm-up, so machine noise hits all models; figures are medians of
per-round steps/s. With ``model.gnn.outer_hop=history`` the
history's full-graph refresh is timed on its own and its cost per step (refresh seconds /
``history_refresh_every``) is added to the tower figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
from torch.profiler import ProfilerActivity, profile

from torchrec_gnn.config import ExperimentConfig, load_config
from torchrec_gnn.data.batch import GraphBatch
from torchrec_gnn.data.registry import load_dataset
from torchrec_gnn.data.split import time_split
from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.models.builder import build_graph_dlrm, tower_node_features
from torchrec_gnn.recipes.batches import batches as training_batches, intra_op_threads, node_degrees
from torchrec_gnn.train.balancing import BalancerConfig
from torchrec_gnn.train.distributed import init_distributed
from torchrec_gnn.train.pipeline import BalancedTrainPipeline
from torchrec_gnn.train.sharding import configured_optimizer, refresh_outer_hop, shard_model

# The stages a step is cut into (record_function ranges in the model, the pipeline and TorchRec).
STAGES = {
    "node_tables": "## node_tables ##",
    "gnn_tower": "## gnn_tower ##",
    "task_heads": "## task_heads ##",
    "forward": "## forward ##",
    "balancer": "## loss_balancer ##",
    "backward": "## backward ##",
    "optimizer": "## optimizer ##",
}


class Bench:
    """One model in its training pipeline, and its history's refresh when it has one."""

    def __init__(self, dataset, graph: HeteroGraph, config: ExperimentConfig, node_features: Dict[str, torch.Tensor]) -> None:
        torch.manual_seed(config.train.seed)
        model = build_graph_dlrm(dataset, graph, config.model, device=torch.device("meta"))
        self.dmp, _ = shard_model(model, torch.device("cpu"), config.sharding)
        balancer = config.balancer.build(len(model.loss_names))
        extra = {f"balancer.{i}": p for i, p in enumerate(balancer.backward_parameters())}
        optimizer = configured_optimizer(self.dmp, config.sharding, extra)
        self.pipeline = BalancedTrainPipeline(self.dmp, optimizer, balancer, torch.device("cpu"))
        self.graph, self.node_features = graph, node_features
        self.has_history = refresh_outer_hop(self.dmp, graph, node_features)

    def refresh(self) -> float:
        """Seconds of one full refresh of the history."""
        start = time.perf_counter()
        refresh_outer_hop(self.dmp, self.graph, self.node_features)
        return time.perf_counter() - start

    def steps_per_s(self, batches: List[GraphBatch]) -> float:
        """Steps/s over ``batches`` (the pipeline's two-batch fill is included, as in training)."""
        iterator = iter(batches)
        start = time.perf_counter()
        steps = 0
        while True:
            try:
                self.pipeline.progress(iterator)
            except StopIteration:
                break
            steps += 1
        return steps / (time.perf_counter() - start)


BACKWARD_FUNCTION = "autograd::engine::evaluate_function: "  # the profiler's name of one backward node


def profile_stages(bench: Bench, batches: List[GraphBatch], rows: int) -> Dict[str, Dict[str, float]]:
    """CPU milliseconds per step of each stage (inclusive), of the heaviest ops (self) and of the
    heaviest backward functions (inclusive: ``SliceBackward0`` with the zeros it fills, ...)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        bench.steps_per_s(batches)
    events = prof.key_averages()
    steps = len(batches)
    totals: Dict[str, float] = {}
    for e in events:
        key = re.sub(r" \d+ ##$", " ##", e.key)  # TorchRec numbers its ranges per batch
        totals[key] = totals.get(key, 0.0) + e.cpu_time_total / 1e3 / steps
    stages = {name: totals.get(label, 0.0) for name, label in STAGES.items()}
    heavy = sorted((e for e in events if not e.key.startswith("#")), key=lambda e: -e.self_cpu_time_total)[:rows]
    ops = {e.key: e.self_cpu_time_total / 1e3 / steps for e in heavy}
    backward = sorted((e for e in events if e.key.startswith(BACKWARD_FUNCTION)), key=lambda e: -e.cpu_time_total)[:rows]
    backward_functions = {e.key[len(BACKWARD_FUNCTION):]: e.cpu_time_total / 1e3 / steps for e in backward}
    print("\nwhere a tower step's time goes (ms per step, profiler overhead included; forward holds "
          "node_tables, gnn_tower and task_heads):")
    for name, ms in stages.items():
        print(f"  stage {name:<50} {ms:9.1f}")
    for key, ms in ops.items():
        print(f"  op    {key:<50} {ms:9.1f} (self)")
    for key, ms in backward_functions.items():
        print(f"  grad  {key[:50]:<50} {ms:9.1f} (inclusive)")
    return {"stages": stages, "ops": ops, "backward_functions": backward_functions}


MODELS = ("tower", "tower_fixed", "no_graph")


def model_config(config: ExperimentConfig, name: str) -> ExperimentConfig:
    """The config of bench model ``name`` (one of :data:`MODELS`)."""
    fixed = BalancerConfig(kind="fixed")
    if name == "tower":
        return config
    if name == "tower_fixed":
        return dataclasses.replace(config, balancer=fixed)
    return dataclasses.replace(config, balancer=fixed, model=config.model.without_graph())


def time_one_model(args: argparse.Namespace, config: ExperimentConfig, name: str) -> Dict:
    """In this process: build the batches and model ``name``, warm up, time ``args.rounds``
    rounds (and the history's refresh, the profile when asked); returns the figures."""
    torch.set_num_threads(args.threads)
    init_distributed("cpu")  # DMP needs a process group, even for one process
    dataset = load_dataset(config.data)
    split = time_split(dataset, config.data.history_fraction, config.data.val_fraction, config.data.test_fraction)
    degree = node_degrees(config, split)
    data = training_batches(config, split.graph, dataset, split.train, train=True, degree=degree)
    features = tower_node_features(dataset, split.graph, degree) if name != "no_graph" else dataset.node_features
    batches = [data[i] for i in range(min(args.steps, len(data)))]
    bench = Bench(dataset, split.graph, model_config(config, name), features)
    bench.steps_per_s(batches[:3])  # warm-up: tracing, first allocations
    result: Dict = {"rates": [bench.steps_per_s(batches) for _ in range(args.rounds)]}
    result["refresh_s"] = statistics.median(bench.refresh() for _ in range(3)) if bench.has_history else None
    result["sampled_edges"] = statistics.mean(sum(e.shape[1] for e in b.graph_features.edge_index.values()) for b in batches)
    result["sampled_nodes"] = statistics.mean(sum(b.graph_features.num_nodes.values()) for b in batches)
    if args.profile and name == "tower":
        result["profile_ms_per_step"] = profile_stages(bench, batches, rows=12)
    dist.destroy_process_group()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/default.yaml"), help="training config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override as in `train`, e.g. model.gnn.outer_hop=history (repeatable)")
    parser.add_argument("--steps", type=int, default=12, help="batches per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per model process")
    parser.add_argument("--passes", type=int, default=1, help="times the A B C C B A order of model processes runs")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads; default: what `train` gives its process (the cores minus the "
                             "loader's workers, loader.num_threads when set)")
    parser.add_argument("--profile", action="store_true", help="profile one round of the tower model")
    parser.add_argument("--json", type=Path, default=None, help="write the figures as one JSON object")
    parser.add_argument("--model", choices=MODELS, default=None, help=argparse.SUPPRESS)  # one model process
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    args.threads = args.threads or intra_op_threads(config)

    if args.model is not None:  # a child: one model, its figures as one JSON line on stdout
        print("RESULT " + json.dumps(time_one_model(args, config, args.model)), flush=True)
        return

    order = [*MODELS, *reversed(MODELS)] * args.passes
    runs: Dict[str, List[Dict]] = {name: [] for name in MODELS}
    for i, name in enumerate(order):
        command = [sys.executable, __file__, "--config", str(args.config), "--steps", str(args.steps),
                   "--rounds", str(args.rounds), "--threads", str(args.threads), "--model", name]
        for override in args.overrides:
            command += ["--set", override]
        if args.profile and name == "tower" and not runs["tower"]:  # the first tower process profiles
            command.append("--profile")
        print(f"[{i + 1}/{len(order)}] {name} ...", flush=True)
        child = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
        if child.returncode != 0 or not lines:
            sys.exit(f"bench_step.py: the {name} process failed (exit {child.returncode}):\n{child.stderr[-3000:]}")
        print("\n".join(line for line in child.stdout.splitlines() if not line.startswith("RESULT ")), end="")
        runs[name].append(json.loads(lines[-1][len("RESULT "):]))

    rates = {name: [r for run in runs[name] for r in run["rates"]] for name in MODELS}
    refresh = [run["refresh_s"] for run in runs["tower"] if run["refresh_s"] is not None]
    refresh_s: Optional[float] = statistics.median(refresh) if refresh else None
    step_s = {name: 1.0 / statistics.median(values) for name, values in rates.items()}
    for name in ("tower", "tower_fixed"):
        if refresh_s is not None:
            step_s[name] += refresh_s / config.model.gnn.history_refresh_every
    tower = runs["tower"][0]
    print(f"{args.steps} batches of {config.loader.batch_size}: {tower['sampled_nodes']:,.0f} sampled nodes, "
          f"{tower['sampled_edges']:,.0f} sampled edges each; each model in its own process ({len(order)} processes), "
          f"{args.threads} intra-op thread(s)")
    result = {
        "overrides": args.overrides,
        "config": str(args.config),
        "steps_per_s": {name: 1.0 / s for name, s in step_s.items()},
        "slowdown": step_s["tower"] / step_s["no_graph"],
        "slowdown_fixed_weights": step_s["tower_fixed"] / step_s["no_graph"],
        "balancer_share": step_s["tower"] / step_s["tower_fixed"],
        "history_refresh_s": refresh_s,
        "history_refresh_every": config.model.gnn.history_refresh_every if refresh_s is not None else None,
        "rounds": rates,
        "batch_size": config.loader.batch_size,
        "sampled_nodes_per_batch": tower["sampled_nodes"],
        "sampled_edges_per_batch": tower["sampled_edges"],
        "threads": args.threads,
        "processes": order,
    }
    print(f"\n{'model':<14} {'ms/step':>8} {'steps/s':>8} {'examples/s':>11}")
    for name, seconds in step_s.items():
        print(f"{name:<14} {seconds * 1e3:8.1f} {1 / seconds:8.2f} {config.loader.batch_size / seconds:11,.0f}")
    if refresh_s is not None:
        print(f"history refresh: {refresh_s:.2f} s every {config.model.gnn.history_refresh_every} steps (in the tower figures)")
    print(f"slowdown (tower step / no-graph step): {result['slowdown']:.2f}x "
          f"({result['slowdown_fixed_weights']:.2f}x with fixed loss weights; the balancer adds {result['balancer_share']:.2f}x)")
    profiled = [run["profile_ms_per_step"] for run in runs["tower"] if run.get("profile_ms_per_step")]
    if profiled:
        result["profile_ms_per_step"] = profiled[0]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

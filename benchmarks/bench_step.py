"""Train-step cost of the GNN tower: the same ranker with and without it, on the same batches.

    python benchmarks/bench_step.py --json step.json            # batch 1024, fanouts [10, 5]
    python benchmarks/bench_step.py --profile                   # + where the time goes

Both models run through the real training path (DMP with world size 1, fused row-wise Adagrad
tables, TorchRec's TrainPipelineSparseDist via BalancedTrainPipeline) over pre-built batches, so
sampling is not timed here (see bench_loader.py). Rounds alternate between the models
(A B B A ...) so machine noise hits both; figures are medians of per-round steps/s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import time
from pathlib import Path
from typing import Dict, List

import torch
import torch.distributed as dist
from torch.profiler import ProfilerActivity, profile

from torchrec_gnn.data.batch import GraphBatch
from torchrec_gnn.data.loader import GraphBatchDataset
from torchrec_gnn.data.split import time_split
from torchrec_gnn.data.synthetic import SyntheticConfig, make_synthetic
from torchrec_gnn.graph.sampler import NeighborSampler, fanouts_by_relation
from torchrec_gnn.models.builder import ModelConfig, build_graph_dlrm
from torchrec_gnn.train.balancing import BalancerConfig
from torchrec_gnn.train.distributed import init_distributed
from torchrec_gnn.train.pipeline import BalancedTrainPipeline
from torchrec_gnn.train.sharding import ShardingConfig, make_optimizer, shard_model


def make_pipeline(dataset, graph, config: ModelConfig, balancer: str) -> BalancedTrainPipeline:
    torch.manual_seed(0)
    model = build_graph_dlrm(dataset, graph, config, device=torch.device("meta"))
    dmp, _ = shard_model(model, torch.device("cpu"), ShardingConfig())
    return BalancedTrainPipeline(
        dmp, make_optimizer(dmp, 1e-3), BalancerConfig(kind=balancer).build(len(model.loss_names)), torch.device("cpu")
    )


def run_round(pipeline: BalancedTrainPipeline, batches: List[GraphBatch]) -> float:
    """Steps/s over ``batches`` (the pipeline's two-batch fill is included, as in training)."""
    iterator = iter(batches)
    start = time.perf_counter()
    steps = 0
    while True:
        try:
            pipeline.progress(iterator)
        except StopIteration:
            break
        steps += 1
    return steps / (time.perf_counter() - start)


def top_ops(pipeline: BalancedTrainPipeline, batches: List[GraphBatch], rows: int) -> Dict[str, float]:
    """Self CPU milliseconds per step of the heaviest ops and of our labelled stages."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_round(pipeline, batches)
    events = prof.key_averages()
    steps = len(batches)
    stages: Dict[str, float] = {}
    for e in events:
        if e.key.startswith("## "):
            stage = re.sub(r" \d+ ##$", " ##", e.key)  # TorchRec numbers its ranges per batch
            stages[stage] = stages.get(stage, 0.0) + e.cpu_time_total / 1e3 / steps
    heavy = sorted((e for e in events if not e.key.startswith("#")), key=lambda e: -e.self_cpu_time_total)[:rows]
    print("\nwhere a tower step's time goes (ms per step; profiler overhead included):")
    for key, ms in sorted(stages.items(), key=lambda kv: -kv[1]):
        if ms >= 0.5:
            print(f"  stage {key:<40} {ms:9.1f}")
    for e in heavy:
        print(f"  op    {e.key:<40} {e.self_cpu_time_total / 1e3 / steps:9.1f} (self)")
    return {**{f"stage {k}": v for k, v in stages.items()}, **{e.key: e.self_cpu_time_total / 1e3 / steps for e in heavy}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default", help="synthetic preset (default: default)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--fanouts", type=int, nargs="+", default=[10, 5])
    parser.add_argument("--relation-fanouts", nargs="*", default=[], metavar="REL=F1,F2",
                        help="per-relation fanouts, e.g. user__friend__user=5,0 (as loader.relation_fanouts)")
    parser.add_argument("--steps", type=int, default=12, help="batches per round")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per model, alternating")
    parser.add_argument("--profile", action="store_true", help="profile one round of the tower model")
    parser.add_argument("--json", type=Path, default=None, help="write the figures as one JSON object")
    args = parser.parse_args()

    init_distributed("cpu")  # DMP needs a process group, even for one process
    dataset = make_synthetic(SyntheticConfig.preset(args.preset))
    split = time_split(dataset)
    overrides = {name: [int(v) for v in values.split(",")] for name, values in
                 (item.split("=", 1) for item in args.relation_fanouts)}
    sampler = NeighborSampler(split.graph, fanouts_by_relation(split.graph, args.fanouts, overrides))
    data = GraphBatchDataset(
        split.train, sampler, dataset.user_type, dataset.item_type, args.batch_size, split.graph.node_types,
        list(dataset.sparse_cardinality), dataset.node_features, shuffle=True, drop_last=True,
    )
    batches = [data[i] for i in range(min(args.steps, len(data)))]
    edges = statistics.mean(sum(e.shape[1] for e in b.edge_index.values()) for b in batches)
    nodes = statistics.mean(sum(b.num_nodes.values()) for b in batches)
    print(f"{len(batches)} batches of {args.batch_size}: {nodes:,.0f} sampled nodes, {edges:,.0f} sampled edges each")

    base = ModelConfig(gnn=dataclasses.replace(ModelConfig().gnn, num_layers=len(args.fanouts)))
    pipelines = {
        "tower": make_pipeline(dataset, split.graph, base, "fixed"),
        "no_graph": make_pipeline(dataset, split.graph, dataclasses.replace(base, use_graph=False), "fixed"),
        "tower_gradnorm": make_pipeline(dataset, split.graph, base, "gradnorm"),
    }
    for pipeline in pipelines.values():  # warm-up: tracing, first allocations
        run_round(pipeline, batches[:3])
    rates: Dict[str, List[float]] = {name: [] for name in pipelines}
    for r in range(args.rounds):
        order = list(pipelines) if r % 2 == 0 else list(reversed(pipelines))
        for name in order:
            rates[name].append(run_round(pipelines[name], batches))
    median = {name: statistics.median(values) for name, values in rates.items()}
    result = {
        "tower_steps_per_s": median["tower"],
        "no_graph_steps_per_s": median["no_graph"],
        "slowdown": median["no_graph"] / median["tower"],
        "tower_gradnorm_steps_per_s": median["tower_gradnorm"],
        "gradnorm_slowdown": median["tower"] / median["tower_gradnorm"],
        "rounds": rates,
        "batch_size": args.batch_size,
        "fanouts": args.fanouts,
        "relation_fanouts": overrides,
        "preset": args.preset,
        "sampled_nodes_per_batch": nodes,
        "sampled_edges_per_batch": edges,
        "threads": torch.get_num_threads(),
    }
    print(f"\n{'model':<28} {'steps/s':>8} {'examples/s':>11}")
    for name, value in median.items():
        print(f"{name:<28} {value:8.2f} {value * args.batch_size:11,.0f}")
    print(f"slowdown (no-graph steps/s / tower steps/s): {result['slowdown']:.2f}x; "
          f"GradNorm on top of the tower: {result['gradnorm_slowdown']:.2f}x")
    if args.profile:
        result["profile_ms_per_step"] = top_ops(pipelines["tower_gradnorm"], batches, rows=12)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

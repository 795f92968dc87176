"""How E2E and two-stage training costs grow with the graph: synthetic data at several sizes.

    python benchmarks/bench_graph_size.py --json size.json --plot size.png     # tiny, default, large

For each synthetic preset (tiny ~13k, default ~1.4M, large ~29M raw edges) it measures, on the
real code paths and the same machine, with the model, balancer, batch size and fanouts of a
training config (``--config``, default ``configs/default.yaml``; ``--set`` overrides):

* **E2E step**: a GraphDLRM + GNN tower + balancer step (DMP world size 1, TorchRec's train
  pipeline) on pre-built batches that sample every hop (``model.gnn.outer_hop=sample``);
* **E2E step with the outer hop from history** (``model.gnn.outer_hop=history``): the same on
  batches that sample all hops but the last, plus the history's full-graph refresh (timed in
  full, counted once per ``history_refresh_every`` steps);
* **two-stage pre-training step**: the link-prediction + GFAE step of
  ``torchrec_gnn.train.pretrain`` on pre-built batches of 1024 pairs;
* **two-stage export**: layer-wise full-graph inference over the whole graph (timed in full);
* **two-stage ranker step**: the same ranker over frozen embeddings (seeds only, no sampling).

From these it projects one epoch over the training split: E2E = steps x E2E step (history:
+ steps / refresh_every x refresh); two-stage =
pre-training steps (one pass over the held-out watches, as ``configs/ablations/two_stage.yaml``)
x pre-training step + export + steps x ranker step. Step times are medians of a few timed steps
after warm-up, with the intra-op threads ``train`` gives its process (``--threads``); neighbour
sampling runs in DataLoader workers in training and is not timed here (``bench_loader.py``). The
models of a preset are built and timed one after another in one process. The projected epoch
is an estimate from measured parts, said so in the table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from torchrec_gnn.config import ExperimentConfig, load_config  # noqa: E402
from torchrec_gnn.data.loader import BatchPlan, BatchSchema, GraphBatchBuilder, GraphBatchDataset, LinkTargets, find_link_relation  # noqa: E402
from torchrec_gnn.data.split import time_split  # noqa: E402
from torchrec_gnn.data.synthetic import SyntheticConfig, make_synthetic  # noqa: E402
from torchrec_gnn.graph.sampler import NeighborSampler, fanouts_by_relation  # noqa: E402
from torchrec_gnn.models.builder import ModelConfig, build_graph_dlrm, build_graph_tower  # noqa: E402
from torchrec_gnn.recipes.batches import batch_fanouts, intra_op_threads  # noqa: E402
from torchrec_gnn.train.balancing import BalancerConfig  # noqa: E402
from torchrec_gnn.train.distributed import init_distributed  # noqa: E402
from torchrec_gnn.train.pipeline import BalancedTrainPipeline  # noqa: E402
from torchrec_gnn.train.pretrain import (  # noqa: E402
    LinkPredictionModel, PretrainConfig, export_tower, hold_out_edges, link_batches,
)
from torchrec_gnn.train.sharding import (  # noqa: E402
    ShardingConfig, configured_optimizer, refresh_outer_hop, shard_model, unwrap,
)


def median_seconds(step: Callable[[], None], warmup: int, steps: int) -> float:
    """Median wall-clock seconds of ``step`` over ``steps`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pipeline_step_seconds(dataset, graph, config: ModelConfig, balancer: BalancerConfig, sharding: ShardingConfig,
                          batches, steps: int, frozen=None) -> Tuple[float, float]:
    """Median seconds of one GradNorm train-pipeline step over ``batches`` (cycled), and the
    seconds of the tower's history refresh (0 without a history)."""
    torch.manual_seed(0)
    model = build_graph_dlrm(dataset, graph, config, device=torch.device("meta"))
    dmp, _ = shard_model(model, torch.device("cpu"), sharding)
    if frozen is not None:
        unwrap(dmp).model.graph_tower.load_embeddings(frozen)
    start = time.perf_counter()
    has_history = refresh_outer_hop(dmp, graph, dataset.node_features)
    refresh_seconds = time.perf_counter() - start if has_history else 0.0
    pipeline = BalancedTrainPipeline(dmp, configured_optimizer(dmp, sharding), balancer.build(len(model.loss_names)),
                                     torch.device("cpu"))
    iterator = itertools.cycle(batches)
    return median_seconds(lambda: pipeline.progress(iterator), 2, steps), refresh_seconds


def measure(preset: str, steps: int, experiment: ExperimentConfig) -> Dict[str, float]:
    """Every figure of one preset (see the module docstring)."""
    start = time.perf_counter()
    dataset = make_synthetic(SyntheticConfig.preset(preset))
    split = time_split(dataset)
    graph = split.graph
    build_seconds = time.perf_counter() - start
    print(f"\n== {preset}: {graph.num_edges():,} graph edges, {sum(graph.num_nodes.values()):,} nodes, "
          f"{len(split.train):,} training examples (built in {build_seconds:.0f} s)", flush=True)
    config, balancer = experiment.model, experiment.balancer
    batch_size, fanouts = experiment.loader.batch_size, experiment.loader.fanouts
    count = steps + 3  # distinct batches at most (cycled when the split has fewer)

    def ranker_batches(sampler: NeighborSampler, features) -> list:
        schema = BatchSchema(dataset.user_type, dataset.item_type, graph.node_types, list(dataset.sparse_cardinality))
        data = GraphBatchDataset(split.train, GraphBatchBuilder(sampler, schema, node_features=features),
                                 BatchPlan(batch_size, shuffle=True, drop_last=True))
        return [data[i] for i in range(min(count, len(data)))]

    sampled_config = replace(config, gnn=replace(config.gnn, outer_hop="sample"))
    every_hop = batch_fanouts(replace(experiment, model=sampled_config), graph)
    e2e_batches = ranker_batches(NeighborSampler(graph, every_hop), dataset.node_features)
    sampled_edges = statistics.mean(sum(e.shape[1] for e in b.graph_features.edge_index.values()) for b in e2e_batches)
    e2e_step, _ = pipeline_step_seconds(dataset, graph, sampled_config, balancer, experiment.sharding, e2e_batches, steps)
    print(f"  E2E step {e2e_step * 1e3:.0f} ms ({sampled_edges:,.0f} sampled edges per batch)", flush=True)
    history_config = replace(config, gnn=replace(config.gnn, outer_hop="history"))
    one_hop = batch_fanouts(replace(experiment, model=history_config), graph)
    history_step, refresh_s = pipeline_step_seconds(
        dataset, graph, history_config, balancer, experiment.sharding,
        ranker_batches(NeighborSampler(graph, one_hop), dataset.node_features), steps)
    print(f"  E2E step, outer hop from history {history_step * 1e3:.0f} ms; refresh {refresh_s:.2f} s "
          f"every {history_config.gnn.history_refresh_every} steps", flush=True)

    # Two-stage, stage 1: one epoch of pre-training steps (the default runs until its link AUC
    # stops improving: 5-7 epochs on the default data), then the full export.
    pretrain = PretrainConfig(epochs=1)
    relation = find_link_relation(graph, dataset.user_type, dataset.item_type, None)
    message_graph, _ = hold_out_edges(graph, relation, pretrain.validation_fraction, seed=0)
    links = LinkTargets(relation, message_graph.edge_index(relation), pretrain.batch_size // 2)
    torch.manual_seed(0)
    tower = build_graph_tower(dataset, graph, config, edge_objective=True)
    model = LinkPredictionModel(tower, pretrain.link_weight, pretrain.gfae_weight)
    optimizer = torch.optim.Adam(model.parameters(), lr=pretrain.lr)
    link_data = link_batches(links, NeighborSampler(message_graph, fanouts_by_relation(message_graph, fanouts, {})),
                             dataset, train=True, seed=0)
    pairs_batches = itertools.cycle([link_data[i] for i in range(min(count, len(link_data)))])

    def pretrain_step() -> None:
        loss, _ = model(next(pairs_batches))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    pretrain_step_s = median_seconds(pretrain_step, 2, steps)
    pretrain_steps = pretrain.epochs * max(1, int(pretrain.supervision_fraction * links.num_edges) // links.per_batch)
    start = time.perf_counter()
    exported = export_tower(tower, dataset.node_features, graph, pretrain.chunk_size, progress=False)
    export_seconds = time.perf_counter() - start
    print(f"  pre-training step {pretrain_step_s * 1e3:.0f} ms x {pretrain_steps} steps; export {export_seconds:.1f} s "
          f"({sum(e.shape[0] for e in exported.values()):,} embeddings)", flush=True)

    # Two-stage, stage 2: the ranker over the frozen embeddings (seeds only).
    frozen_config = replace(sampled_config, two_stage=True)
    ranker_step, _ = pipeline_step_seconds(dataset, graph, frozen_config, balancer, experiment.sharding,
                                           ranker_batches(NeighborSampler(graph, []), None), steps, frozen=exported)
    train_steps = len(split.train) // batch_size
    e2e_epoch = train_steps * e2e_step
    history_epoch = train_steps * history_step + (train_steps // history_config.gnn.history_refresh_every + 1) * refresh_s
    two_stage_epoch = pretrain_steps * pretrain_step_s + export_seconds + train_steps * ranker_step
    print(f"  ranker step over frozen embeddings {ranker_step * 1e3:.0f} ms; projected epoch: E2E {e2e_epoch:.0f} s, "
          f"E2E with history {history_epoch:.0f} s, two-stage {two_stage_epoch:.0f} s", flush=True)
    return {
        "preset": preset, "graph_edges": graph.num_edges(), "graph_nodes": sum(graph.num_nodes.values()),
        "train_examples": len(split.train), "sampled_edges_per_batch": sampled_edges,
        "e2e_step_s": e2e_step, "e2e_history_step_s": history_step, "history_refresh_s": refresh_s,
        "pretrain_step_s": pretrain_step_s, "pretrain_steps": pretrain_steps,
        "export_s": export_seconds, "ranker_step_s": ranker_step, "train_steps": train_steps,
        "projected_e2e_epoch_s": e2e_epoch, "projected_e2e_history_epoch_s": history_epoch,
        "projected_two_stage_epoch_s": two_stage_epoch,
        "projected_two_stage_pretrain_s": pretrain_steps * pretrain_step_s,
    }


def plot(rows: List[Dict[str, float]], path: Path) -> None:
    """Log-log: projected epoch seconds and the export's seconds against graph edges."""
    edges = [r["graph_edges"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.loglog(edges, [r["projected_e2e_epoch_s"] for r in rows], "o-", label="E2E epoch (projected)")
    ax.loglog(edges, [r["projected_e2e_history_epoch_s"] for r in rows], "o:", label="E2E, outer hop from history")
    ax.loglog(edges, [r["projected_two_stage_epoch_s"] for r in rows], "s-", label="two-stage total (projected)")
    ax.loglog(edges, [r["export_s"] for r in rows], "^--", label="two-stage export (measured)")
    for r in rows:
        ax.annotate(r["preset"], (r["graph_edges"], r["projected_e2e_epoch_s"]), textcoords="offset points", xytext=(4, 6))
    ax.set(xlabel="graph edges", ylabel="seconds", title="Training cost against graph size (2-core CPU)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "default", "large"])
    parser.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    parser.add_argument("--config", type=Path, default=Path("configs/default.yaml"),
                        help="model, balancer, batch size and fanouts (its data preset is replaced by --presets)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override as in `train` (repeatable)")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads; default: what `train` gives its process (the cores minus the "
                             "loader's workers, loader.num_threads when set)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--plot", type=Path, default=None, help="write the PNG here")
    args = parser.parse_args()
    experiment = load_config(args.config, args.overrides)
    torch.set_num_threads(args.threads or intra_op_threads(experiment))
    init_distributed("cpu")  # DMP needs a process group, even for one process
    rows = [measure(p, args.steps, experiment) for p in args.presets]
    header = (f"{'preset':<8} {'edges':>12} {'examples':>10} {'E2E step':>9} {'hist step':>9} {'pre step':>9} "
              f"{'export':>8} {'rank step':>9} {'E2E epoch*':>11} {'hist epoch*':>11} {'2-stage*':>9}")
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        print(f"{r['preset']:<8} {r['graph_edges']:>12,} {r['train_examples']:>10,} {r['e2e_step_s'] * 1e3:>7.0f}ms "
              f"{r['e2e_history_step_s'] * 1e3:>7.0f}ms {r['pretrain_step_s'] * 1e3:>7.0f}ms {r['export_s']:>7.1f}s "
              f"{r['ranker_step_s'] * 1e3:>7.0f}ms {r['projected_e2e_epoch_s']:>10.0f}s "
              f"{r['projected_e2e_history_epoch_s']:>10.0f}s {r['projected_two_stage_epoch_s']:>8.0f}s")
    print("* projected from the measured step times and the epoch's step counts")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "threads": torch.get_num_threads(), "config": str(args.config),
                                         "overrides": args.overrides, "fanouts": experiment.loader.fanouts,
                                         "batch_size": experiment.loader.batch_size}, indent=1))
    if args.plot:
        plot(rows, args.plot)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

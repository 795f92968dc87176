"""Forward and backward of the GNN alone on real batches: the levers on how a layer runs its
relations, each batch under every variant back to back.

    python benchmarks/bench_gnn.py --json gnn.json
    python benchmarks/bench_gnn.py --threads 2 --set 'loader.fanouts=[15,5]'

Builds the training batches of ``--config`` (sampled as in training, so 49k nodes and 347k edges
each on the default data, with their CSR arrays as the loader builds them with
``loader.prebuild_csr``), a
:class:`~torchrec_gnn.modules.gnn.HeteroSAGE` with the config's layers and random (N_t, D)
inputs that require gradients, and times ``forward`` plus the backward of a sum of squares
over the output (with the intra-op threads ``train`` gives its process: 1 on 2 cores beside 2
loader workers; ``--threads``), each batch under three variants back to back (the order
alternating), each one lever on from the one before:

- ``per_relation``: :meth:`HeteroGNN.sum_relations`, each relation's ``CSRSAGEConv`` on its
  own, their (M_t, H) outputs and the root transform added one by one; each relation's
  adjacency and, in the backward, its transpose built in the step;
- ``per_destination``: :meth:`HeteroSAGE.sum_relations` (the model's own),
  :func:`~torchrec_gnn.modules.aggregation.sum_sage_convs`: one product per destination type;
- ``prebuilt_csr``: the same, reading the batch's CSR arrays and transposes
  (:class:`~torchrec_gnn.data.batch.RelationCSR`, built in the loader's workers, so not timed
  here: ``bench_loader.py`` times the workers) instead of building them: the training default.

All give the same outputs up to float rounding (checked before timing). Figures are medians of
the per-round ms per batch and of the per-round ratios of each variant to the one before; the
node tables, heads and optimizer are not in them (``bench_step.py`` times the whole step).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import types
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import torch

from torchrec_gnn.config import load_config
from torchrec_gnn.data.batch import GraphFeatures
from torchrec_gnn.data.registry import load_dataset
from torchrec_gnn.data.split import time_split
from torchrec_gnn.modules.gnn import HeteroGNN
from torchrec_gnn.recipes.batches import batches as training_batches, intra_op_threads, node_degrees


def seconds_per_batch(gnn: HeteroGNN, graph: GraphFeatures, x_dict: Dict[str, torch.Tensor], csr: bool) -> float:
    """Seconds of one forward + backward of ``gnn`` on one batch (reading its CSR arrays or not)."""
    start = time.perf_counter()
    out = gnn(x_dict, graph.edge_index, graph.num_sampled_nodes, graph.num_sampled_edges, csr=graph.csr if csr else None)
    sum(h.square().sum() for h in out.values()).backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/default.yaml"), help="training config")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override as in `train` (repeatable)")
    parser.add_argument("--batches", type=int, default=8, help="batches per round")
    parser.add_argument("--rounds", type=int, default=10, help="rounds over the batches")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads; default: what `train` gives its process (the cores minus the "
                             "loader's workers, loader.num_threads when set: 1 on 2 cores)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures as one JSON object")
    args = parser.parse_args()

    config = load_config(args.config, [*args.overrides, "loader.prebuild_csr=true"])  # batches with their CSR arrays
    args.threads = args.threads or intra_op_threads(config)
    torch.set_num_threads(args.threads)
    if config.model.gnn.conv != "sage":
        parser.error(f"bench_gnn.py compares SAGE's levers; model.gnn.conv is {config.model.gnn.conv!r}")
    dataset = load_dataset(config.data)
    split = time_split(dataset, config.data.history_fraction, config.data.val_fraction, config.data.test_fraction)
    data = training_batches(config, split.graph, dataset, split.train, train=True, degree=node_degrees(config, split))
    batches = [data[i].graph_features for i in range(min(args.batches, len(data)))]
    torch.manual_seed(config.train.seed)
    gnn = HeteroGNN.from_config(split.graph.node_types, split.graph.edge_types, config.model.node_embedding_dim,
                                config.model.gnn, out_node_types=[dataset.user_type, dataset.item_type])
    inputs = [{t: torch.randn(sum(counts), gnn.in_channels, requires_grad=True) for t, counts in g.num_sampled_nodes.items()}
              for g in batches]
    variants: Dict[str, Tuple[Callable, bool]] = {  # how a destination's relations are summed, CSR read or built
        "per_relation": (HeteroGNN.sum_relations, False),
        "per_destination": (type(gnn).sum_relations, False),
        "prebuilt_csr": (type(gnn).sum_relations, True),
    }

    def run(name: str, graph: GraphFeatures, x_dict: Dict[str, torch.Tensor]) -> float:
        method, csr = variants[name]
        gnn.sum_relations = types.MethodType(method, gnn)
        return seconds_per_batch(gnn, graph, x_dict, csr)

    gnn.eval()  # no dropout: every variant must give the same output
    outputs = {}
    for name, (method, csr) in variants.items():
        gnn.sum_relations = types.MethodType(method, gnn)
        with torch.no_grad():
            outputs[name] = gnn(inputs[0], batches[0].edge_index, batches[0].num_sampled_nodes,
                                batches[0].num_sampled_edges, csr=batches[0].csr if csr else None)
    max_diff = max(float((outputs[name][t] - outputs["per_relation"][t]).abs().max())
                   for name in variants for t in outputs[name])
    gnn.train()

    # Each batch runs under every variant back to back (the order alternating), so the machine's
    # drift between rounds hits them alike; a round's figure is its mean over the batches.
    names = list(variants)
    ms: Dict[str, List[float]] = {name: [] for name in names}
    for r in range(args.rounds + 1):  # round 0 warms up
        seconds: Dict[str, float] = {name: 0.0 for name in names}
        for i, (graph, x_dict) in enumerate(zip(batches, inputs)):
            for name in names if (r + i) % 2 == 0 else list(reversed(names)):
                seconds[name] += run(name, graph, x_dict)
        if r:
            for name in names:
                ms[name].append(seconds[name] / len(batches) * 1e3)
    median = {name: statistics.median(values) for name, values in ms.items()}
    edges = statistics.mean(sum(e.shape[1] for e in g.edge_index.values()) for g in batches)
    nodes = statistics.mean(sum(g.num_nodes.values()) for g in batches)
    print(f"{len(batches)} batches: {nodes:,.0f} nodes, {edges:,.0f} edges each; {args.threads} thread(s); "
          f"largest output difference {max_diff:.1e}")
    for name, value in median.items():
        print(f"{name:<16} {value:7.1f} ms per forward + backward (rounds: {', '.join(f'{v:.1f}' for v in ms[name])})")
    ratios: Dict[str, List[float]] = {}
    for before, after in zip(names, names[1:]):
        ratios[f"{after}/{before}"] = sorted(a / b for a, b in zip(ms[after], ms[before]))
    for key, values in ratios.items():
        print(f"{key}: {statistics.median(values):.2f}x (median of the rounds' ratios; range {values[0]:.2f}-{values[-1]:.2f})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "config": str(args.config), "overrides": args.overrides, "threads": args.threads,
            "ms_per_batch": median, "rounds_ms": ms, "ratios": {k: statistics.median(v) for k, v in ratios.items()},
            "round_ratios": ratios, "max_output_difference": max_diff,
            "sampled_nodes_per_batch": nodes, "sampled_edges_per_batch": edges,
        }, indent=1))


if __name__ == "__main__":
    main()

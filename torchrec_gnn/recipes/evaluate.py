"""Evaluate a finished run's exported model in one process, on any split.

    python -m torchrec_gnn eval --run-dir runs/default --split test

Reads what a training run wrote: ``config.yaml`` (data, loader, model), ``graph/`` (the
memory-mapped graph it sampled from) and ``model.pt`` (the gathered, unsharded state dict), and
prints the metrics table; ``--json PATH`` also writes ``{split: {task: {metric: value}}}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
from tqdm import tqdm

from torchrec_gnn.config import load_config
from torchrec_gnn.console import configure_console
from torchrec_gnn.data.registry import load_dataset
from torchrec_gnn.data.split import time_split
from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.models.builder import build_graph_dlrm, tower_node_features
from torchrec_gnn.recipes.train import batches, node_degrees, score_batch
from torchrec_gnn.train.metrics import MultiTaskEvaluator, format_table
from torchrec_gnn.train.sharding import refresh_outer_hop

SPLITS = ("train", "val", "test")


@torch.no_grad()
def evaluate_run(run_dir: Path, split: str = "test", overrides: Sequence[str] = ()) -> Dict[str, Dict[str, float]]:
    """Metrics ``{task: {metric: value}}`` of the run's exported model on ``split``.

    ``overrides`` (``"loader.fanouts=[-1,-1]"``, ...) change the run's saved config for this
    evaluation only, e.g. to score with every neighbour instead of a sample.

    Raises:
        FileNotFoundError: the run directory lacks ``config.yaml``, ``graph/`` or ``model.pt``.
    """
    missing = [name for name in ("config.yaml", "graph", "model.pt") if not (run_dir / name).exists()]
    if missing:
        raise FileNotFoundError(f"{run_dir}: not a finished training run, missing {missing}")
    config = load_config(run_dir / "config.yaml", overrides)
    dataset = load_dataset(config.data)
    # The graph the run trained on, read back from disk: checked in full before any kernel uses it.
    graph = HeteroGraph.load(run_dir / "graph", mmap=True, validate="full")
    time_splits = time_split(
        dataset, config.data.history_fraction, config.data.val_fraction, config.data.test_fraction, graph=graph
    )
    examples, degree = time_splits.split(split), node_degrees(config, time_splits)
    model = build_graph_dlrm(dataset, graph, config.model)
    model.load_state_dict(torch.load(run_dir / "model.pt"))
    model.eval()
    refresh_outer_hop(model, graph, tower_node_features(dataset, graph, degree))  # a history is not saved: rebuilt from the weights
    # The same batches as the training job's evaluation (one process).
    data = batches(config, graph, dataset, examples, train=False, degree=degree)
    evaluator = MultiTaskEvaluator(dataset.tasks)
    for i in tqdm(range(len(data)), desc=f"eval {split}"):
        batch = data[i]
        _, (_, outputs, _) = model(batch)
        score_batch(evaluator, outputs, batch, dataset.user_type)
    return evaluator.compute()


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, float]]:
    """Parse ``argv``, evaluate, print the table; returns the metrics."""
    configure_console()
    parser = argparse.ArgumentParser(prog="torchrec-gnn eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="output directory of a training run")
    parser.add_argument("--split", choices=SPLITS, default="test")
    parser.add_argument("--json", type=Path, default=None, help="also write the metrics here")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override the run's config for this evaluation, e.g. --set 'loader.fanouts=[-1,-1]'")
    args = parser.parse_args(argv)
    metrics = evaluate_run(args.run_dir, args.split, args.overrides)
    print(format_table({args.split: metrics}, title=f"{args.run_dir}: {args.split}"))
    if args.json:
        args.json.write_text(json.dumps({args.split: metrics}, indent=1))
    return metrics

"""Evaluate a finished run's exported model in one process, on any split.

    python -m torchrec_gnn eval --run-dir runs/default --split test

Reads what a training run wrote: ``config.yaml`` (data, loader, model), ``graph/`` (the
memory-mapped graph it sampled from) and ``model.pt`` (the gathered, unsharded state dict), and
prints the metrics table; ``--json PATH`` also writes ``{split: {task: {metric: value}}}`` and
``--predictions PATH`` (.csv or .parquet) every example's predictions next to its labels.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import pandas as pd
import torch
from tqdm import tqdm

from torchrec_gnn.config import load_config
from torchrec_gnn.console import configure_console
from torchrec_gnn.data.dataset import GraphRecDataset, Interactions
from torchrec_gnn.data.loader import GraphBatchDataset
from torchrec_gnn.data.registry import load_dataset
from torchrec_gnn.data.split import time_split
from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.models.builder import build_graph_dlrm, tower_node_features
from torchrec_gnn.recipes.train import batches, node_degrees, score_batch
from torchrec_gnn.train.metrics import MultiTaskEvaluator, format_table
from torchrec_gnn.train.sharding import refresh_outer_hop

SPLITS = ("train", "val", "test")


def load_run(run_dir: Path, split: str, overrides: Sequence[str] = ()) -> Tuple[GraphRecDataset, GraphBatchDataset, torch.nn.Module]:
    """A finished run's data set, the batches of ``split`` (as the training job's evaluation
    builds them, one process, in example order) and its exported model in eval mode.

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
    refresh_outer_hop(model, graph, tower_node_features(dataset, graph, degree))  # a history is not saved: rebuilt
    return dataset, batches(config, graph, dataset, examples, train=False, degree=degree), model


@dataclass
class RunScores:
    """A run's model scored on one split.

    Args:
        dataset (GraphRecDataset): the run's data set (tasks).
        examples (Interactions): the split's examples, in order.
        outputs (Tensor): (N, T) the model's raw outputs (logits; log1p values for regression).
        metrics (Dict[str, Dict[str, float]]): ``{task: {metric: value}}``.
    """

    dataset: GraphRecDataset
    examples: Interactions
    outputs: torch.Tensor
    metrics: Dict[str, Dict[str, float]]

    def predictions(self) -> pd.DataFrame:
        """One row per example: ``user``, ``item``, ``timestamp``, then per task its prediction
        (a probability for a binary task, the value for a regression one, as the metrics read
        them) and ``<task>_label`` (NaN where missing)."""
        frame = pd.DataFrame({"user": self.examples.user.numpy(), "item": self.examples.item.numpy(),
                              "timestamp": self.examples.timestamp.numpy()})
        for t, task in enumerate(self.dataset.tasks):
            scores = self.outputs[:, t].double()
            frame[task.name] = (torch.sigmoid(scores) if task.kind == "binary" else torch.expm1(scores).clamp(min=0.0)).numpy()
            frame[f"{task.name}_label"] = self.examples.labels[:, t].double().numpy()
        return frame


@torch.no_grad()
def score_run(run_dir: Path, split: str = "test", overrides: Sequence[str] = ()) -> RunScores:
    """The run's exported model on ``split``: outputs and metrics in one pass (see
    :func:`load_run` for ``overrides`` and errors)."""
    dataset, data, model = load_run(run_dir, split, overrides)
    evaluator = MultiTaskEvaluator(dataset.tasks)
    outputs = []
    for i in tqdm(range(len(data)), desc=f"eval {split}"):
        batch = data[i]
        _, (_, batch_outputs, _) = model(batch)
        score_batch(evaluator, batch_outputs, batch, dataset.user_type)
        outputs.append(batch_outputs)
    return RunScores(dataset, data.examples, torch.cat(outputs), evaluator.compute())


def evaluate_run(run_dir: Path, split: str = "test", overrides: Sequence[str] = ()) -> Dict[str, Dict[str, float]]:
    """Metrics ``{task: {metric: value}}`` of the run's exported model on ``split``."""
    return score_run(run_dir, split, overrides).metrics


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, float]]:
    """Parse ``argv``, evaluate, print the table; returns the metrics."""
    configure_console()
    parser = argparse.ArgumentParser(prog="torchrec-gnn eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="output directory of a training run")
    parser.add_argument("--split", choices=SPLITS, default="test")
    parser.add_argument("--json", type=Path, default=None, help="also write the metrics here")
    parser.add_argument("--predictions", type=Path, default=None,
                        help="also write every example's predictions and labels here (.csv or .parquet)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override the run's config for this evaluation, e.g. --set 'loader.fanouts=[-1,-1]'")
    args = parser.parse_args(argv)
    if args.predictions is not None and args.predictions.suffix not in (".csv", ".parquet"):
        raise ValueError(f"--predictions {args.predictions}: the file must end in .csv or .parquet")
    scores = score_run(args.run_dir, args.split, args.overrides)
    print(format_table({args.split: scores.metrics}, title=f"{args.run_dir}: {args.split}"))
    if args.json:
        args.json.write_text(json.dumps({args.split: scores.metrics}, indent=1))
    if args.predictions is not None:
        frame = scores.predictions()
        if args.predictions.suffix == ".csv":
            frame.to_csv(args.predictions, index=False)
        else:
            frame.to_parquet(args.predictions)
        print(f"predictions of {len(frame):,} examples: {args.predictions}")
    return scores.metrics

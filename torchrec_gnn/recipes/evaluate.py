"""Score with a finished run, in one process: a split of its data, or rows of a table.

    python -m torchrec_gnn eval --run-dir runs/default --split test [--predictions scores.parquet]
    python -m torchrec_gnn predict --run-dir runs/default --input rows.parquet --output scores.parquet

Reads what a training run wrote: ``config.yaml`` (data, loader, model), ``graph/`` (the
memory-mapped graph it sampled from) and ``model.pt`` (the gathered, unsharded state dict).
``eval`` prints the metrics table; ``--json PATH`` also writes ``{split: {task: {metric: value}}}``
and ``--predictions PATH`` (.csv or .parquet) every example's predictions next to its features
and labels. ``predict`` scores the rows of a table in that same layout (:data:`ROW_COLUMNS`),
sampling their neighbourhoods by the run's rules, as evaluation does.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from torchrec_gnn.config import ExperimentConfig, load_config
from torchrec_gnn.console import configure_console
from torchrec_gnn.data.dataset import GraphRecDataset, Interactions
from torchrec_gnn.data.loader import GraphBatchDataset
from torchrec_gnn.data.registry import load_dataset
from torchrec_gnn.data.split import TimeSplit, time_split
from torchrec_gnn.data.tabular import label_values, numeric_values
from torchrec_gnn.graph.degree import DegreeFeatures
from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.ids import check_ids
from torchrec_gnn.models.builder import build_graph_dlrm, tower_node_features
from torchrec_gnn.recipes.batches import batches, node_degrees
from torchrec_gnn.tables import TABLE_SUFFIXES, check_no_missing_values, read_table, require_columns
from torchrec_gnn.train.evaluation import evaluate_batches
from torchrec_gnn.train.metrics import format_table
from torchrec_gnn.train.sharding import refresh_outer_hop
from torchrec_gnn.typing import NodeType

SPLITS = ("train", "val", "test")
# The columns of a scored row, before the data set's dense and sparse features and its tasks.
ROW_COLUMNS = ("user", "item", "timestamp")


@dataclass
class FinishedRun:
    """A training run read back for scoring.

    Args:
        config (ExperimentConfig): the run's saved config (with any overrides).
        dataset (GraphRecDataset): its data set.
        split (TimeSplit): its time split, over the graph it trained on.
        degree (DegreeFeatures, optional): its degree columns, if it used them.
        model (nn.Module): its exported model, in eval mode.
    """

    config: ExperimentConfig
    dataset: GraphRecDataset
    split: TimeSplit
    degree: Optional[DegreeFeatures]
    model: torch.nn.Module

    @cached_property
    def node_features(self) -> Dict[NodeType, torch.Tensor]:
        """Every node's side features as the tower reads them in a full-graph pass."""
        return tower_node_features(self.dataset, self.split.graph, self.degree)

    def batches(self, examples: Interactions) -> GraphBatchDataset:
        """The batches of ``examples`` as the training job's evaluation builds them (one
        process, in example order, neighbourhoods sampled by the run's rules)."""
        return batches(self.config, self.split.graph, self.dataset, examples, train=False, degree=self.degree)

    def score(self, examples: Interactions, desc: str) -> "RunScores":
        """The model's outputs on ``examples`` and, over their present labels, the metrics."""
        data = self.batches(examples)
        progress = tqdm((data[i] for i in range(len(data))), total=len(data), desc=desc)
        metrics, outputs = evaluate_batches(self.model, progress, self.dataset.tasks, self.dataset.user_type,
                                            keep_outputs=True)
        return RunScores(self.dataset, examples, outputs, metrics)


def load_run(run_dir: Path, overrides: Sequence[str] = ()) -> FinishedRun:
    """A finished run's data set, time split, graph and exported model in eval mode.

    ``overrides`` (``"loader.eval_fanouts=[-1,-1]"``, ...) change the run's saved config for this
    scoring only, e.g. to score with every neighbour instead of a sample.

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
    degree = node_degrees(config, time_splits)
    model = build_graph_dlrm(dataset, graph, config.model)
    model.load_state_dict(torch.load(run_dir / "model.pt"))
    model.eval()
    run = FinishedRun(config, dataset, time_splits, degree, model)
    refresh_outer_hop(model, graph, run.node_features)  # a history is not saved: rebuilt
    return run


@dataclass
class RunScores:
    """A run's model scored on some examples.

    Args:
        dataset (GraphRecDataset): the run's data set (tasks, feature names).
        examples (Interactions): the scored examples, in order.
        outputs (Tensor): (N, T) the model's raw outputs (logits; log1p values for regression).
        metrics (Dict[str, Dict[str, float]]): ``{task: {metric: value}}`` over the present labels.
    """

    dataset: GraphRecDataset
    examples: Interactions
    outputs: torch.Tensor
    metrics: Dict[str, Dict[str, float]]

    def predictions(self) -> pd.DataFrame:
        """One row per example: the columns :func:`rows_from_table` reads (``user``, ``item``,
        ``timestamp``, every dense and sparse feature, ``<task>_label``, NaN where missing),
        and per task its prediction ``<task>`` (a probability for a binary task, the value for a
        regression one, as the metrics read them)."""
        frame = rows_frame(self.examples, self.dataset)
        for t, task in enumerate(self.dataset.tasks):
            scores = self.outputs[:, t].double()
            frame[task.name] = (torch.sigmoid(scores) if task.kind == "binary" else torch.expm1(scores).clamp(min=0.0)).numpy()
        return frame


def score_run(run_dir: Path, split: str = "test", overrides: Sequence[str] = ()) -> RunScores:
    """The run's exported model on ``split``: outputs and metrics in one pass (see
    :func:`load_run` for ``overrides`` and errors)."""
    run = load_run(run_dir, overrides)
    return run.score(run.split.split(split), desc=f"eval {split}")


def evaluate_run(run_dir: Path, split: str = "test", overrides: Sequence[str] = ()) -> Dict[str, Dict[str, float]]:
    """Metrics ``{task: {metric: value}}`` of the run's exported model on ``split``."""
    return score_run(run_dir, split, overrides).metrics


# ------------------------------------------------------------------------------------ row tables
def rows_frame(examples: Interactions, dataset: GraphRecDataset) -> pd.DataFrame:
    """``examples`` as a table: ``user``, ``item``, ``timestamp``, the dense features, the sparse
    features (by name), then ``<task>_label`` per task (NaN where missing)."""
    _check_row_columns(dataset)
    frame = pd.DataFrame({"user": examples.user.numpy(), "item": examples.item.numpy(),
                          "timestamp": examples.timestamp.numpy()})
    for f, name in enumerate(dataset.dense_names):
        frame[name] = examples.dense[:, f].numpy()
    for name in dataset.sparse_cardinality:
        frame[name] = examples.sparse[name].numpy()
    for t, task in enumerate(dataset.tasks):
        frame[f"{task.name}_label"] = examples.labels[:, t].double().numpy()
    return frame


def rows_from_table(frame: pd.DataFrame, file: str, dataset: GraphRecDataset, needs_time: bool) -> Interactions:
    """The rows of a table to score, checked against the data set.

    Columns (extra ones are ignored): ``user`` and ``item`` (node ids of the data set, as
    ``eval --predictions`` writes them), every dense and sparse feature by name, ``timestamp``
    (required when ``needs_time``: the run samples only edges older than each row; else 0 when
    absent),
    and optionally ``<task>_label`` per task (empty = missing; absent = every label missing).

    Raises:
        ValueError: no rows, a missing column, an empty cell in an id, time or feature column,
            a non-integer id, an id outside the data set's range, a non-0/1 binary label;
            each message names ``file``, the column and the value.
    """
    if not len(frame):
        raise ValueError(f"{file}: the table has no rows to score")
    required = ["user", "item", *(["timestamp"] if needs_time else []), *dataset.dense_names, *dataset.sparse_cardinality]
    require_columns(file, frame, required)
    bounds = {"user": dataset.num_nodes[dataset.user_type], "item": dataset.num_nodes[dataset.item_type],
              **dataset.sparse_cardinality}
    ids = {name: _ids(frame[name], f"{file}: column {name!r}", bound) for name, bound in bounds.items()}
    timestamp = (_ids(frame["timestamp"], f"{file}: column 'timestamp'", None) if "timestamp" in frame.columns
                 else np.zeros(len(frame), np.int64))
    dense = np.zeros((len(frame), len(dataset.dense_names)), np.float32)
    for f, name in enumerate(dataset.dense_names):
        where = f"{file}: column {name!r}"
        check_no_missing_values(frame[name], where)
        dense[:, f] = numeric_values(frame[name], where)
    labels = np.full((len(frame), len(dataset.tasks)), np.nan)
    for t, task in enumerate(dataset.tasks):
        if f"{task.name}_label" in frame.columns:
            labels[:, t] = label_values(frame[f"{task.name}_label"], task.kind, f"{file}: column '{task.name}_label'")
    return Interactions.from_arrays(ids["user"], ids["item"], timestamp, labels, dense,
                                    {name: ids[name] for name in dataset.sparse_cardinality})


def _check_row_columns(dataset: GraphRecDataset) -> None:
    """Raise if two columns of a row table (ids, features, labels, predictions) share a name."""
    columns = [*ROW_COLUMNS, *dataset.dense_names, *dataset.sparse_cardinality, *(f"{t.name}_label" for t in dataset.tasks)]
    clash = sorted({c for c in columns if columns.count(c) > 1} | {t.name for t in dataset.tasks if t.name in columns})
    if clash:
        raise ValueError(f"{dataset.name}: the columns of a row table would share the names {clash}")


def _ids(values: pd.Series, where: str, bound: Optional[int]) -> np.ndarray:
    """(N,) int64 of an integer column with no empty cell, each in ``[0, bound)`` when given."""
    check_no_missing_values(values, where)
    array = values.to_numpy()
    if not (pd.api.types.is_integer_dtype(values) or (pd.api.types.is_float_dtype(values) and np.all(array == np.floor(array)))):
        raise ValueError(f"{where}: expected integer ids, found {values.dtype} values such as {values.iloc[0]!r}")
    array = array.astype(np.int64)
    if bound is not None:
        check_ids(where, array, bound)
    return array


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` (.csv or .parquet) through a temporary file: a failed write
    leaves an earlier file as it was."""
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".csv":
        frame.to_csv(tmp, index=False)
    else:
        frame.to_parquet(tmp)
    os.replace(tmp, path)


def _table_path(path: Path, flag: str) -> Path:
    if path.suffix not in TABLE_SUFFIXES:
        raise ValueError(f"{flag} {path}: the file must end in .csv or .parquet")
    return path


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
                        help="override the run's config for this evaluation, e.g. --set 'loader.eval_fanouts=[-1,-1]'")
    args = parser.parse_args(argv)
    if args.predictions is not None:
        _table_path(args.predictions, "--predictions")
    scores = score_run(args.run_dir, args.split, args.overrides)
    print(format_table({args.split: scores.metrics}, title=f"{args.run_dir}: {args.split}"))
    if args.json:
        args.json.write_text(json.dumps({args.split: scores.metrics}, indent=1))
    if args.predictions is not None:
        frame = scores.predictions()
        write_table(frame, args.predictions)
        print(f"predictions of {len(frame):,} examples: {args.predictions}")
    return scores.metrics


def predict_main(argv: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Parse ``argv``, score the input table's rows, write them; returns the scored table."""
    configure_console()
    parser = argparse.ArgumentParser(prog="torchrec-gnn predict", description="Score the rows of a table with a finished run.")
    parser.add_argument("--run-dir", type=Path, required=True, help="output directory of a training run")
    parser.add_argument("--input", type=Path, required=True,
                        help="rows to score (.csv or .parquet): user, item, [timestamp], the data set's features, "
                             "optional <task>_label columns (the layout eval --predictions writes)")
    parser.add_argument("--output", type=Path, required=True, help="the scored rows (.csv or .parquet)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override the run's config for this scoring, e.g. --set 'loader.eval_fanouts=[-1,-1]'")
    args = parser.parse_args(argv)
    for path, flag in ((args.input, "--input"), (args.output, "--output")):
        _table_path(path, flag)
    if not args.input.is_file():
        raise FileNotFoundError(f"--input {args.input}: no such file")
    run = load_run(args.run_dir, args.overrides)
    rows = rows_from_table(read_table(args.input), str(args.input), run.dataset, needs_time=run.config.loader.temporal)
    scores = run.score(rows, desc="predict")
    frame = scores.predictions()
    write_table(frame, args.output)
    labelled = {task: metrics for task, metrics in scores.metrics.items() if metrics.get("count", 0) > 0}
    if labelled:
        print(format_table({"input": labelled}, title=f"{args.input}: rows with labels"))
    print(f"predictions of {len(frame):,} rows: {args.output}")
    return frame

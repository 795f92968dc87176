"""Export a finished run for serving: every user's and item's graph embedding, and the ranker as
a ``torch.export`` program that takes them.

    python -m torchrec_gnn export --run-dir runs/default [--output-dir runs/default/export] [--overwrite]

Writes (into a temporary directory renamed when complete, so a failed export leaves nothing
that looks finished):

* ``node_embeddings.pt``: ``{node_type: (N_t, H)}`` for the user and item types: the trained
  tower run over the run's whole graph by layer-wise full-graph inference (what a sample with
  every neighbour gives, without sampling), or a two-stage run's frozen embeddings; absent for a
  run without a graph;
* ``ranker.pt2``: ``torch.export.save`` of :class:`~torchrec_gnn.models.serving.ServingRanker`:
  ``(dense (B, F_dense) float32, sparse_ids (B, F) int64, user (B, H), item (B, H)) -> (B, T)``
  raw outputs (logits; ``log1p`` values for regression), batch size dynamic;
* ``export.json``: the inputs' feature order, the tasks and how to read their outputs, shapes.

Serving reads a row's embeddings by id, ``embeddings[user_type][user]``, and calls
``torch.export.load("ranker.pt2").module()``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

from torchrec_gnn.console import configure_console
from torchrec_gnn.data.dataset import Interactions
from torchrec_gnn.models.serving import ServingRanker
from torchrec_gnn.modules.frozen_tower import FrozenGraphTower
from torchrec_gnn.recipes.evaluate import FinishedRun, load_run
from torchrec_gnn.train.pretrain import export_tower
from torchrec_gnn.train.run_dir import RunDirectoryError
from torchrec_gnn.typing import NodeType

EXPORT_DIR = "export"
EMBEDDINGS_FILE, PROGRAM_FILE, MANIFEST_FILE = "node_embeddings.pt", "ranker.pt2", "export.json"


def node_embeddings(run: FinishedRun, chunk_size: int = 8192) -> Dict[NodeType, torch.Tensor]:
    """(N_t, H) graph embedding of every user and item of the run's graph ({} without a graph)."""
    tower = run.model.model.graph_tower
    types = (run.dataset.user_type, run.dataset.item_type)
    if tower is None:
        return {}
    if isinstance(tower, FrozenGraphTower):
        return {t: tower.table(t).detach().clone() for t in types}
    embeddings = export_tower(tower, run.node_features, run.split.graph, chunk_size)
    return {t: embeddings[t] for t in types}


def serving_inputs(
    examples: Interactions, ranker: ServingRanker, embeddings: Dict[NodeType, torch.Tensor], user_type: NodeType,
    item_type: NodeType,
) -> tuple:
    """The exported ranker's inputs for ``examples``: dense features, sparse ids in the ranker's
    feature order and, with a graph, each example's user and item embedding."""
    inputs = (examples.dense, torch.stack([examples.sparse[f] for f in ranker.sparse_feature_names], dim=1))
    if ranker.uses_graph:
        inputs += (embeddings[user_type][examples.user], embeddings[item_type][examples.item])
    return inputs


def export_run(run_dir: Path, output_dir: Optional[Path] = None, overwrite: bool = False,
               chunk_size: int = 8192) -> Path:
    """Write the run's serving export (see the module doc); returns its directory.

    Raises:
        FileNotFoundError: ``run_dir`` is not a finished run.
        RunDirectoryError: ``output_dir`` exists and ``overwrite`` is False.
    """
    output_dir = Path(output_dir) if output_dir is not None else run_dir / EXPORT_DIR
    if output_dir.exists() and not overwrite:
        raise RunDirectoryError(f"{output_dir} already exists; --overwrite replaces it")
    run = load_run(run_dir)
    embeddings = node_embeddings(run, chunk_size)
    ranker = ServingRanker(run.model.model).eval()
    with torch.no_grad():
        program = torch.export.export(ranker, ranker.example_inputs(8), dynamic_shapes=ranker.dynamic_shapes())
    dataset = run.dataset
    manifest = {
        "run_dir": str(run_dir),
        "inputs": {
            "dense_features": list(dataset.dense_names),
            "sparse_ids": ranker.sparse_feature_names,
            **({"user": dataset.user_type, "item": dataset.item_type} if ranker.uses_graph else {}),
        },
        "graph_channels": ranker.graph_channels,
        "node_embeddings": {t: list(e.shape) for t, e in embeddings.items()},
        "tasks": [{"name": t.name, "kind": t.kind,
                   "prediction": "sigmoid(output)" if t.kind == "binary" else "expm1(output), clamped at 0"}
                  for t in dataset.tasks],
    }
    tmp = output_dir.with_name(f".{output_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if embeddings:
        torch.save(embeddings, tmp / EMBEDDINGS_FILE)
    torch.export.save(program, tmp / PROGRAM_FILE)
    (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    if output_dir.exists():
        shutil.rmtree(output_dir)
    tmp.rename(output_dir)
    return output_dir


def main(argv: Optional[Sequence[str]] = None) -> Path:
    """Parse ``argv`` and export; returns the export directory."""
    configure_console()
    parser = argparse.ArgumentParser(prog="torchrec-gnn export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="output directory of a training run")
    parser.add_argument("--output-dir", type=Path, default=None, help=f"where to write (default RUN_DIR/{EXPORT_DIR})")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier export in the output directory")
    parser.add_argument("--chunk-size", type=int, default=8192, help="destination nodes per full-graph inference step")
    args = parser.parse_args(argv)
    directory = export_run(args.run_dir, args.output_dir, args.overwrite, args.chunk_size)
    print(f"exported {args.run_dir} for serving: {directory} ({', '.join(sorted(p.name for p in directory.iterdir()))})")
    return directory

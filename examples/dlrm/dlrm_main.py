"""TorchRec's DLRM example with the GNN tower: random data (TorchRec's setting) or synthetic data.

    # one process: random data, 13 dense + 26 sparse features, binary click, random graph
    python examples/dlrm/dlrm_main.py --dataset random --max-steps 20
    # 2 ranks on CPU (gloo; nccl on CUDA), launched like TorchRec's dlrm_main
    torchrun --standalone --nproc_per_node=2 examples/dlrm/dlrm_main.py --dataset random --max-steps 20
    # the built-in synthetic short-video platform: 5 tasks, signal planted in the graph
    python examples/dlrm/dlrm_main.py --dataset synthetic --max-steps 50
    # the same ranker without the GNN tower; TorchRec-style per-feature table sizes
    python examples/dlrm/dlrm_main.py --no-graph --num-embeddings-per-feature 1000
    python examples/dlrm/dlrm_main.py --num-embeddings-per-feature 45833188,36746,...  # 26 values

TorchRec's ``torchrec/github/examples/dlrm/dlrm_main.py`` parses flags, builds a
``RandomRecDataset`` (or Criteo) loader, the DLRM on the meta device, a planner, DMP, a fused
table optimizer and a train pipeline, then loops. This launcher keeps its flags but not its
loop: every flag becomes a config override of ``configs/dlrm_random.yaml`` (random data) or
``configs/default.yaml`` (synthetic data), and :func:`torchrec_gnn.recipes.train.main` runs
the job, the same code as ``python -m torchrec_gnn train``. The equivalent command is printed
first. Labels of the random data are random: expect AUC ~0.5; it measures examples/s and
checks the plumbing (sharding, pipeline, GradNorm, evaluation), not quality.

A run writes to ``--output-dir``: ``config.yaml`` (resolved), ``metrics.jsonl``,
``eval.json`` (``{split: {task: {metric: value}}}``), ``model.pt``, the memory-mapped graph,
checkpoints and PNG plots, and prints the evaluation table.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from torchrec_gnn.recipes import train

REPO = Path(__file__).resolve().parents[2]
BASE_CONFIGS = {"random": REPO / "configs" / "dlrm_random.yaml", "synthetic": REPO / "configs" / "default.yaml"}
RANDOM_ONLY = ("num_embeddings_per_feature", "num_examples")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The launcher's flags (TorchRec dlrm_main names, dashes instead of underscores)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(BASE_CONFIGS), default="random",
                        help="random: TorchRec's random DLRM data + a random graph; synthetic: the built-in platform")
    parser.add_argument("--config", type=str, default=None,
                        help="base YAML config (default: configs/dlrm_random.yaml or configs/default.yaml)")
    parser.add_argument("--batch-size", type=int, default=None, help="examples per batch and rank (loader.batch_size)")
    parser.add_argument("--epochs", type=int, default=None, help="passes over the training split (train.epochs)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop after this many steps, like TorchRec's --limit_train_batches (train.max_steps)")
    parser.add_argument("--num-embeddings-per-feature", type=str, default=None,
                        help="random data: ids per sparse feature, one int or 26 comma-separated ints")
    parser.add_argument("--num-examples", type=int, default=None, help="random data: labelled examples")
    parser.add_argument("--embedding-dim", type=int, default=None, help="sparse table dim D (model.embedding_dim)")
    parser.add_argument("--seed", type=int, default=None, help="seed of data, init, shuffling and sampling")
    parser.add_argument("--output-dir", type=str, default=None, help="default: runs/dlrm_<dataset>")
    parser.add_argument("--no-graph", action="store_true", help="the ranker alone, without the GNN tower")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --output-dir")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="any other config field, e.g. --set loader.num_workers=0 (repeatable)")
    args = parser.parse_args(argv)
    if args.dataset != "random":
        given = [f"--{name.replace('_', '-')}" for name in RANDOM_ONLY if getattr(args, name) is not None]
        if given:
            parser.error(f"{', '.join(given)} only apply to --dataset random")
    if args.num_embeddings_per_feature is not None:
        try:
            sizes = [int(n) for n in args.num_embeddings_per_feature.split(",")]
        except ValueError:
            parser.error(f"--num-embeddings-per-feature: expected ints separated by commas, "
                         f"got {args.num_embeddings_per_feature!r}")
        args.num_embeddings_per_feature = sizes[0] if len(sizes) == 1 else sizes
    return args


def train_argv(args: argparse.Namespace) -> List[str]:
    """The ``python -m torchrec_gnn train`` arguments that run what ``args`` asks for."""
    overrides: Dict[str, object] = {
        "loader.batch_size": args.batch_size,
        "train.epochs": args.epochs,
        "data.random.num_examples": args.num_examples,
        "model.embedding_dim": args.embedding_dim,
        "model.use_graph": "false" if args.no_graph else None,
    }
    sizes = args.num_embeddings_per_feature
    if sizes is not None:  # a YAML list (26 values) or one int for every feature
        overrides["data.random.num_embeddings_per_feature"] = f"[{','.join(map(str, sizes))}]" if isinstance(sizes, list) else sizes
    argv = ["--config", args.config or _shown(BASE_CONFIGS[args.dataset])]
    for key, value in overrides.items():
        if value is not None:
            argv += ["--set", f"{key}={value}"]
    for item in args.overrides:
        argv += ["--set", item]
    argv += ["--output-dir", args.output_dir or f"runs/dlrm_{args.dataset}"]
    if args.max_steps is not None:
        argv += ["--max-steps", str(args.max_steps)]
    if args.seed is not None:
        argv += ["--seed", str(args.seed)]
    if args.resume:
        argv.append("--resume")
    return argv


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (a shorter printed command)."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Parse the flags and run the training job; returns ``{split: {task: {metric: value}}}``."""
    args = train_argv(parse_args(argv))
    if os.environ.get("RANK", "0") == "0":  # torchrun sets RANK; print once
        ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        launcher = f"torchrun --standalone --nproc_per_node={ranks}" if ranks > 1 else "python"
        print(f"equivalent to: {launcher} -m torchrec_gnn train {shlex.join(args)}", flush=True)
    return train.main(args)


if __name__ == "__main__":
    main(sys.argv[1:])

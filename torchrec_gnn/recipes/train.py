"""The ``train`` command: train and evaluate E2E-GRec (or an ablation) from one YAML config.

Single process::

    python -m torchrec_gnn train --config configs/default.yaml --set train.max_steps=50

Sharded over 2 processes (gloo on CPU, nccl on CUDA)::

    torchrun --standalone --nproc_per_node=2 -m torchrec_gnn train --config configs/default.yaml

The job itself is :class:`~torchrec_gnn.recipes.ranker.RankerRecipe` (or, under
``train.protocol: streaming``, :class:`~torchrec_gnn.recipes.stream.StreamingRankerRecipe`);
this module parses the flags, checks the run directory and runs the recipe.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Dict, Optional, Sequence

import torch.distributed as dist

from torchrec_gnn.config import ExperimentConfig, load_config
from torchrec_gnn.console import configure_console
from torchrec_gnn.recipes.ranker import RankerRecipe
from torchrec_gnn.recipes.stream import STREAM_NO_RESUME, StreamingRankerRecipe
from torchrec_gnn.train.checkpoint import CheckpointError
from torchrec_gnn.train.distributed import init_distributed
from torchrec_gnn.train.run_dir import check_run_directory, clear_run

logger = logging.getLogger("torchrec_gnn.train")


def build_parser() -> argparse.ArgumentParser:
    """The ``train`` command's flags; each one is a shortcut for a config field."""
    parser = argparse.ArgumentParser(prog="torchrec-gnn train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=str, default=None, help="YAML config (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field, e.g. --set loader.batch_size=512 (repeatable)")
    parser.add_argument("--max-steps", type=int, default=None, help="train.max_steps")
    parser.add_argument("--output-dir", type=str, default=None, help="train.output_dir")
    parser.add_argument("--checkpoint-dir", type=str, default=None, help="train.checkpoint_dir")
    parser.add_argument("--seed", type=int, default=None, help="train.seed")
    parser.add_argument("--device", type=str, default=None, choices=["auto", "cpu", "cuda"], help="train.device")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the latest complete checkpoint in the checkpoint directory "
                             "(automatic when torchrun restarts the workers, see --max-restarts)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start this run in an output directory that holds another run, deleting that run's files")
    return parser


def resolve_config(args: argparse.Namespace) -> ExperimentConfig:
    """The YAML config with ``--set`` overrides, then the dedicated flags on top."""
    overrides = list(args.overrides)
    flags = {"train.max_steps": args.max_steps, "train.output_dir": args.output_dir,
             "train.checkpoint_dir": args.checkpoint_dir, "train.seed": args.seed, "train.device": args.device}
    overrides += [f"{key}={value}" for key, value in flags.items() if value is not None]
    return load_config(args.config, overrides)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Run the job; returns ``{split: {task: {metric: value}}}`` (also written to ``eval.json``)."""
    configure_console()
    args = build_parser().parse_args(argv)
    config = resolve_config(args)
    if config.fresh_graph:
        config.loader.temporal = True  # each batch sees only the graph's past
    # torchrun --max-restarts N restarts every worker after a failure: the run continues.
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    continues = args.resume or restarted
    recipe_class = StreamingRankerRecipe if config.train.protocol == "streaming" else RankerRecipe
    if recipe_class is StreamingRankerRecipe and args.resume:
        raise CheckpointError(STREAM_NO_RESUME)  # before anything is written
    check_run_directory(config, resume=continues, overwrite=args.overwrite)  # before any write
    recipe = recipe_class(config, init_distributed(config.train.device))
    try:
        if args.overwrite and not continues:
            dist.barrier()  # every rank has checked the directory before rank 0 empties it
            if recipe.ctx.is_main:
                removed = clear_run(config)
                if removed:
                    logger.info("--overwrite: removed the previous run's %s", ", ".join(p.name for p in removed))
        recipe.setup()
        if restarted and recipe.ctx.is_main:
            logger.info("restart %s of this job", os.environ["TORCHELASTIC_RESTART_COUNT"])
        # After a torchrun restart: pick up where the latest complete checkpoint left off (or
        # from scratch if none was written yet).
        results = recipe.run(resume=args.resume or (restarted and recipe.checkpoints().latest() is not None))
    except BaseException:
        recipe.cleanup(wait_for_peers=False)
        raise
    recipe.cleanup()
    return results

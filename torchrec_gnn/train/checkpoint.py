"""Crash-safe distributed checkpoints with ``torch.distributed.checkpoint`` (DCP).

Layout under the checkpoint directory::

    step_00000200/          complete checkpoints only (DCP shards + .metadata + trainer.json)
    step_00000400/
    step_00000600.tmp/      being written; never considered by latest()

Every rank writes its shards into ``step_N.tmp``; after a barrier rank 0 writes
``trainer.json`` (step, epoch, world size) last and renames the directory, so a crash at any
point leaves the previous checkpoint as the latest complete one. The last ``keep`` are kept.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

logger = logging.getLogger(__name__)
TRAINER_FILE = "trainer.json"
REPLICATED_FILE = "replicated.pt"
PREFIX = "step_"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or does not fit the current job."""


class CheckpointManager:
    """Save, find and load checkpoints of a sharded model, its optimizers and trainer state.

    Args:
        root (str or Path): checkpoint directory (shared by all ranks).
        keep (int): complete checkpoints to keep (older ones are deleted). Default 2.

    Example::

        manager = CheckpointManager("runs/x/checkpoints", keep=2)
        manager.save(step, {"model": dmp, "optimizer": optimizer}, {"balancer": balancer}, {"epoch": 1})
        path = manager.latest()
        trainer_state = manager.load(path, {"model": dmp, "optimizer": optimizer}, {"balancer": balancer})
    """

    def __init__(self, root: Union[str, Path], keep: int = 2) -> None:
        if keep < 1:
            raise ValueError(f"CheckpointManager: keep must be >= 1, got {keep}")
        self.root = Path(root)
        self.keep = keep

    def complete(self) -> List[Path]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and not p.name.endswith(".tmp")]
        return sorted((p for p in found if (p / TRAINER_FILE).is_file()), key=lambda p: p.name)

    def latest(self) -> Optional[Path]:
        """The newest complete checkpoint, or None."""
        complete = self.complete()
        return complete[-1] if complete else None

    def save(
        self, step: int, sharded: Dict[str, Any], replicated: Dict[str, Any], trainer_state: Dict[str, Any]
    ) -> Path:
        """Write checkpoint ``step`` (collective: every rank must call it).

        Args:
            step (int): global training step.
            sharded (Dict[str, Any]): objects with ``state_dict()`` whose state is sharded across
                ranks (DMP model, TorchRec optimizer); saved through DCP, resharded on load.
            replicated (Dict[str, Any]): small modules identical on every rank (the loss
                balancer, whose optimizer state is created lazily); saved by rank 0 with
                ``torch.save``.
            trainer_state (Dict[str, Any]): JSON-serialisable loop state (epoch, position, ...).
        """
        final = self.root / f"{PREFIX}{step:08d}"
        tmp = final.with_name(final.name + ".tmp")
        rank = dist.get_rank() if dist.is_initialized() else 0
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier()
        dcp.save({name: obj.state_dict() for name, obj in sharded.items()}, checkpoint_id=str(tmp))
        if rank == 0:
            torch.save({name: obj.state_dict() for name, obj in replicated.items()}, tmp / REPLICATED_FILE)
        # Each rank's own CPU RNG (dropout, GFAE masks), so a resumed run draws the same numbers.
        torch.save(torch.get_rng_state(), tmp / f"rng_rank{rank}.pt")
        _barrier()
        if rank == 0:
            world = dist.get_world_size() if dist.is_initialized() else 1
            (tmp / TRAINER_FILE).write_text(json.dumps({"step": step, "world_size": world, **trainer_state}))
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            for old in self.complete()[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
            logger.info("checkpoint saved: %s", final)
        _barrier()
        return final

    def load(self, path: Union[str, Path], sharded: Dict[str, Any], replicated: Dict[str, Any],
             expect: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """Load ``path`` into ``sharded`` and ``replicated`` in place (collective) and return its
        trainer state.

        Args:
            expect (Mapping, optional): trainer-state entries the checkpoint must agree with
                (e.g. the run's config fingerprint), checked before any weight is loaded; an
                entry the checkpoint does not record (an older version's) is not checked.

        Raises:
            CheckpointError: the directory is missing, incomplete or unreadable, was written by
                a job whose model or optimizer do not match, or disagrees with ``expect``.
        """
        path = Path(path)
        if not (path / TRAINER_FILE).is_file():
            raise CheckpointError(
                f"{path}: not a complete checkpoint ({TRAINER_FILE} missing); complete ones in "
                f"{self.root}: {[p.name for p in self.complete()] or 'none'}"
            )
        try:
            trainer_state = json.loads((path / TRAINER_FILE).read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{path / TRAINER_FILE}: corrupt trainer state ({err})") from err
        wrong = {k: (trainer_state[k], v) for k, v in (expect or {}).items() if k in trainer_state and trainer_state[k] != v}
        if wrong:
            raise CheckpointError(
                f"{path}: written by another run: " + ", ".join(f"{k} {a!r} (this run: {b!r})" for k, (a, b) in wrong.items())
            )
        for obj in sharded.values():
            # TorchRec's KeyedOptimizer creates its (lazy) state with a dummy step, so that DCP
            # has tensors to load into; without it a fresh optimizer silently keeps empty state.
            if hasattr(obj, "init_state"):
                obj.init_state()
        state = {name: obj.state_dict() for name, obj in sharded.items()}
        try:
            dcp.load(state, checkpoint_id=str(path))
            small = torch.load(path / REPLICATED_FILE, weights_only=False)
            for name, obj in sharded.items():
                obj.load_state_dict(state[name])
            for name, obj in replicated.items():
                obj.load_state_dict(small[name])
        except (Exception, CheckpointException) as err:  # DCP's CheckpointException is a BaseException
            raise CheckpointError(f"{path}: cannot load checkpoint into this job ({type(err).__name__}: {err})") from err
        rank = dist.get_rank() if dist.is_initialized() else 0
        rng_file = path / f"rng_rank{rank}.pt"
        if rng_file.is_file() and trainer_state.get("world_size") == (dist.get_world_size() if dist.is_initialized() else 1):
            torch.set_rng_state(torch.load(rng_file))
        return trainer_state


def resume_latest(manager: CheckpointManager, sharded: Dict[str, Any], replicated: Dict[str, Any],
                  fingerprint: str, world_size: int) -> Dict[str, Any]:
    """Load the latest complete checkpoint of ``manager`` written by the run whose config has
    ``fingerprint`` (collective); returns its trainer state (``step``, ``epoch``,
    ``batch_in_epoch``, ...).

    Raises:
        CheckpointError: there is none, it belongs to another run, or it was saved by another
            number of ranks in the middle of an epoch (the per-rank data position cannot be mapped).
    """
    latest = manager.latest()
    if latest is None:
        raise CheckpointError(f"--resume: no complete checkpoint in {manager.root}")
    state = manager.load(latest, sharded, replicated, expect={"config_fingerprint": fingerprint})
    if state["world_size"] != world_size and state["batch_in_epoch"] != 0:
        raise CheckpointError(
            f"{latest}: saved by {state['world_size']} rank(s) in the middle of epoch {state['epoch']}; the "
            f"per-rank data position cannot be mapped to {world_size} rank(s). Resume with "
            f"--nproc_per_node={state['world_size']}, or from a checkpoint at an epoch boundary"
        )
    if not dist.is_initialized() or dist.get_rank() == 0:
        logger.info("resumed from %s (step %d, epoch %d, batch %d)", latest, state["step"], state["epoch"],
                    state["batch_in_epoch"])
    return state


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()

"""Export a sharded model as one ordinary state dict, for single-process evaluation or serving."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Union

import torch
import torch.distributed as dist
from torch import nn
from torchrec.inference.state_dict_transform import state_dict_gather


def export_state_dict(sharded: nn.Module, build_unsharded: Callable[[torch.device], nn.Module], path: Union[str, Path]) -> None:
    """Gather every shard of ``sharded`` into an unsharded copy on rank 0 and ``torch.save`` its
    state dict to ``path`` (collective: every rank must call it).

    Args:
        sharded (nn.Module): the DMP-wrapped model.
        build_unsharded (Callable[[torch.device], nn.Module]): builds the same model unsharded on
            a device; rank 0 builds it on the CPU, the others on ``meta`` (no memory).
        path (str or Path): where rank 0 writes the state dict; load it with
            ``model.load_state_dict(torch.load(path))`` into a model from the same builder.
    """
    rank = dist.get_rank() if dist.is_initialized() else 0
    unsharded = build_unsharded(torch.device("cpu") if rank == 0 else torch.device("meta"))
    state = unsharded.state_dict()
    state_dict_gather(sharded.state_dict(), state)
    if rank == 0:
        torch.save(state, path)
    if dist.is_initialized():
        dist.barrier()

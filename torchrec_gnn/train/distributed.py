"""Process-group setup: torchrun (gloo on CPU, nccl on CUDA) or a one-process group."""

from __future__ import annotations

import atexit
import os
import tempfile
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands.

    Attributes:
        rank (int): global rank.
        world_size (int): number of ranks.
        local_rank (int): rank on this host (selects the GPU).
        device (torch.device): this rank's device.
        backend (str): ``"gloo"`` or ``"nccl"``.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device='cuda' but no CUDA device is visible; use 'cpu' or 'auto'")
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device_preference: str = "auto") -> DistributedContext:
    """Join the process group torchrun set up, or create a one-process group.

    TorchRec's DistributedModelParallel needs a process group even on one process. The backend
    follows the device: nccl for CUDA, gloo for CPU.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        if "RANK" not in os.environ:
            # One process: a file store, so no TCP port can be taken by a concurrent job
            # between choosing it and binding it.
            handle, path = tempfile.mkstemp(prefix="torchrec_gnn_store_")
            os.close(handle)
            atexit.register(lambda: os.path.exists(path) and os.remove(path))
            dist.init_process_group(backend, store=dist.FileStore(path, 1), rank=0, world_size=1)
        else:
            # torchrun keeps one store across --max-restarts attempts; a fresh key prefix per
            # attempt keeps a restarted rank from reading the dead attempt's gloo addresses.
            store, rank, world_size = next(dist.rendezvous("env://"))
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            dist.init_process_group(
                backend, store=dist.PrefixStore(f"torchrec_gnn/attempt_{attempt}", store), rank=rank, world_size=world_size
            )
    return DistributedContext(
        rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=device, backend=backend
    )


def close_distributed(wait_for_peers: bool = True) -> None:
    """Leave the process group at the end of a job: wait until every rank has finished its
    collectives (a barrier), then destroy the group.

    Without the barrier a rank with nothing left to do after the last collective (every rank
    but the one that prints and saves) tears its interpreter down at once, while a gloo worker
    thread may still be letting go of that collective's tensors; freeing a tensor that Python
    knew needs the GIL, and a thread that asks for it during interpreter shutdown is stopped
    inside a destructor, which aborts the process ("terminate called without an active
    exception", SIGABRT). A no-op when no group is initialised.

    Args:
        wait_for_peers (bool): meet the other ranks first. False on the way out of a failure:
            a failed rank must not wait for peers that may never reach the barrier (torchrun
            stops them). Default True.
    """
    if not dist.is_initialized():
        return
    if wait_for_peers and dist.get_world_size() > 1:
        dist.barrier()
    dist.destroy_process_group()

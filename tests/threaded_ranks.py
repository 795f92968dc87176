"""Several ranks in one test process: threads joined by torch's threaded process group."""

import threading
import time
from typing import Callable, List, Optional, TypeVar

import torch
import torch.distributed as dist
from torch.testing._internal.distributed.multi_threaded_pg import (
    ProcessLocalGroup,
    _install_threaded_pg,
    _uninstall_threaded_pg,
)

T = TypeVar("T")


def on_threaded_ranks(world_size: int, fn: Callable[[int], T]) -> List[T]:
    """``fn(rank)`` on ``world_size`` threads joined by torch's in-process threaded process group
    (real collectives, no subprocess); each rank's result, in rank order."""
    results: List[Optional[T]] = [None] * world_size
    errors: List[BaseException] = []
    store = dist.HashStore()

    def worker(rank: int) -> None:
        dist.init_process_group("threaded", rank=rank, world_size=world_size, store=store)
        try:
            results[rank] = fn(rank)
        except BaseException as err:  # noqa: B036 - re-raised in the main thread
            errors.append(err)
            ProcessLocalGroup.exception_handle(err)  # wake the ranks waiting in a collective
        finally:
            dist.destroy_process_group()

    torch._C._distributed_c10d._set_thread_isolation_mode(True)
    _install_threaded_pg()
    try:
        threads = [threading.Thread(target=worker, args=(rank,), daemon=True) for rank in range(world_size)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20  # a rank stuck in a mismatched collective never returns
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in threads), "a rank hangs in a collective"
    finally:
        ProcessLocalGroup.reset()
        _uninstall_threaded_pg()
        torch._C._distributed_c10d._set_thread_isolation_mode(False)
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]

"""close_distributed on 2 gloo ranks: it waits for the peer before destroying the group, except
on the way out of a failure."""

import os
import tempfile
import time
from pathlib import Path

import pytest
import torch.distributed as dist
from torchrec.distributed.test_utils.multi_process import MultiProcessTestBase

from torchrec_gnn.train.distributed import close_distributed

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(120)]

LATE = 2.0  # seconds rank 0 works on before it closes


def _close(rank: int, world_size: int, store_path: str, marker: str, wait_for_peers: bool) -> None:
    dist.init_process_group("gloo", store=dist.FileStore(store_path, world_size), rank=rank, world_size=world_size)
    if rank == 0:  # the rank that still prints and saves after the last collective
        time.sleep(LATE)
        Path(marker).write_text("saved")
        close_distributed(wait_for_peers)
        assert not dist.is_initialized()
        return
    close_distributed(wait_for_peers)
    assert not dist.is_initialized()
    # With the barrier rank 1 leaves only after rank 0 has finished its work; without it at once.
    assert Path(marker).exists() == wait_for_peers, f"wait_for_peers={wait_for_peers}: rank 0's file " \
        f"{'missing' if wait_for_peers else 'already there'} when rank 1 left"


class CloseDistributedTest(MultiProcessTestBase):
    def _run(self, wait_for_peers: bool) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            self._run_multi_process_test(callable=_close, world_size=2, store_path=os.path.join(tmp, "store"),
                                         marker=os.path.join(tmp, "saved"), wait_for_peers=wait_for_peers)

    def test_waits_for_every_rank_before_destroying_the_group(self) -> None:
        self._run(wait_for_peers=True)

    def test_a_failed_rank_leaves_without_waiting(self) -> None:
        self._run(wait_for_peers=False)

    def test_without_a_group_does_nothing(self) -> None:
        assert not dist.is_initialized()
        close_distributed()
        assert not dist.is_initialized()

"""MultiTaskEvaluator on 2 gloo ranks: every rank returns the single-process metrics of all data."""

import json
import os
import sys
from typing import Dict, List

import pytest
import torch
import torch.distributed as dist
from torchrec.distributed.test_utils.multi_process import MultiProcessContext, MultiProcessTestBase

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests/train, for test_metrics in ranks
from test_metrics import (  # noqa: E402
    TASKS,
    assert_metrics_equal,
    make_data,
    torchrec_lifetime_metrics,
    window_batches,
    window_reference,
)

from torchrec_gnn.train.metrics import MultiTaskEvaluator, TrainingWindowMetrics  # noqa: E402

pytestmark = pytest.mark.multiprocess

NUM_USERS = 60


def _shard(data: Dict[str, torch.Tensor], rank: int, empty_rank: int) -> Dict[str, torch.Tensor]:
    """Users 0-19 only on rank 0, users 20-39 only on rank 1, users 40-59 on both (split by row).

    With ``empty_rank`` >= 0 that rank gets no row and the other rank all of them.
    """
    user = data["users"] // 1000  # make_data's ids are 1000 * u + 7
    row = torch.arange(user.numel())
    shared = user >= 40
    keep = torch.where(shared, row % 2 == rank, (user < 20) == (rank == 0))
    if empty_rank >= 0:  # one rank holds nothing, the other everything
        keep[:] = rank != empty_rank
    return {k: v[keep] for k, v in data.items()}


def _evaluate(data: Dict[str, torch.Tensor], batch_sizes: List[int]) -> Dict[str, Dict[str, float]]:
    evaluator = MultiTaskEvaluator(TASKS)
    start = 0
    for i, size in enumerate(batch_sizes):  # uneven batches, the last one takes the rest
        rows = slice(start, None if i == len(batch_sizes) - 1 else start + size)
        evaluator.update(data["outputs"][rows], data["labels"][rows], data["mask"][rows], data["users"][rows])
        start += size
    return evaluator.compute()


def _check_rank(rank: int, world_size: int, empty_rank: int) -> None:
    data = make_data(n=600, seed=11, num_users=NUM_USERS)
    # Both references are computed before the process group exists, so they are single-process.
    expected = _evaluate(data, [600])
    local = _shard(data, rank, empty_rank)
    local_only = _evaluate(local, [local["users"].numel()])
    with MultiProcessContext(rank, world_size, "gloo"):
        metrics = _evaluate(local, [5, 37, 100] if rank == 0 else [64, 64])
        assert_metrics_equal(metrics, expected)
        if empty_rank < 0:  # torchrec.metrics reduced over the ranks: the same NE and calibration
            for task, theirs in torchrec_lifetime_metrics(local, world_size, rank).items():
                for name, value in theirs.items():
                    assert metrics[task][name] == pytest.approx(value, rel=1e-6), (task, name)

        everyone: List[str] = [None] * world_size  # type: ignore[list-item]
        dist.all_gather_object(everyone, json.dumps(metrics, sort_keys=True))
        assert everyone[0] == everyone[1], "ranks returned different metrics"

        if empty_rank < 0:
            # The data really is split: without the gather a rank sees other metrics, and
            # users on both ranks only get their GAUC from the gather.
            assert local_only["click"]["count"] < expected["click"]["count"]
            both = sorted(set(local["users"].tolist()) & set(_shard(data, 1 - rank, -1)["users"].tolist()))
            assert len(both) == 20, both
            assert local_only["click"]["gauc_users"] != expected["click"]["gauc_users"]


def _check_window(rank: int, world_size: int) -> None:
    """Each rank trains on its own batches; the window is each rank's latest 2 batches, reduced."""
    batches = {r: window_batches(seed=20 + r, num_batches=5, batch_size=32) for r in range(world_size)}
    expected = window_reference([b for r in range(world_size) for b in batches[r][-2:]])
    with MultiProcessContext(rank, world_size, "gloo"):
        window = TrainingWindowMetrics(TASKS, batch_size=32, window_size=64 * world_size, world_size=world_size,
                                       rank=rank)
        for outputs, labels in batches[rank]:
            window.update(outputs, labels)
        got = window.compute()
    for task, values in expected.items():
        for name, value in values.items():
            assert got[task][name] == pytest.approx(value, rel=1e-5), (rank, task, name)


class MetricsDistributedTest(MultiProcessTestBase):
    @pytest.mark.timeout(180)
    def test_training_window_is_reduced_over_ranks(self) -> None:
        self._run_multi_process_test(callable=_check_window, world_size=2)

    @pytest.mark.timeout(180)
    def test_ranks_return_global_metrics(self) -> None:
        self._run_multi_process_test(callable=_check_rank, world_size=2, empty_rank=-1)

    @pytest.mark.timeout(180)
    def test_rank_without_examples_still_gathers(self) -> None:
        self._run_multi_process_test(callable=_check_rank, world_size=2, empty_rank=1)

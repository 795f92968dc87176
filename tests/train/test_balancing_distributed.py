"""GradNorm on 2 gloo ranks: task weights and DDP weights stay identical across ranks."""

import os
import tempfile
from typing import List, Tuple, Type

import pytest
import torch
import torch.distributed as dist
from torch import nn, Tensor
from torch.nn.parallel import DistributedDataParallel
from torchrec.distributed.test_utils.multi_process import MultiProcessTestBase

from torchrec_gnn.train.balancing import GradNorm

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(180)]

NUM_TASKS = 3
STEPS = 5


class UnsyncedGradNorm(GradNorm):
    """GradNorm with its all-reduce removed, to show that the test detects desynchronised weights."""

    def _average_across_ranks(self, tensor: Tensor) -> None:
        pass


class MultiTaskModel(nn.Module):
    """A trunk of two Linear layers (the last one is GradNorm's shared layer) and 3 heads."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(8, 1) for _ in range(NUM_TASKS))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        h = self.trunk(x)  # (B, 8)
        return torch.stack([(head(h).squeeze(1) - y[:, i]).pow(2).mean() for i, head in enumerate(self.heads)])


def _train(rank: int, balancer_cls: Type[GradNorm], static_graph: bool = False) -> Tuple[Tensor, Tensor, Tensor, GradNorm]:
    """STEPS steps of step -> combine -> backward -> SGD; returns (weights, flat model params,
    losses, the balancer)."""
    torch.manual_seed(0)
    model = DistributedDataParallel(MultiTaskModel(), static_graph=static_graph)
    balancer = balancer_cls(NUM_TASKS, lr=0.05)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = torch.Generator().manual_seed(100 + rank)  # different data on every rank
    scale = torch.tensor([1.0, 3.0, 0.3]) * (1 + rank)
    all_losses = []
    for step in range(STEPS):
        x = torch.randn(16, 4, generator=data)
        y = torch.randn(16, NUM_TASKS, generator=data) * scale + x[:, :1]
        losses = model(x, y)
        if rank == 1 and step == 2:
            # Task 2 has no labels on rank 1 only: it takes part in the update on rank 0 alone.
            losses = losses * torch.tensor([1.0, 1.0, 0.0])
        balancer.step(losses, model.module.trunk[2].parameters())
        optimizer.zero_grad()
        balancer.combine(losses).backward()
        optimizer.step()
        all_losses.append(losses.detach())
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    return balancer.weights(), params, torch.stack(all_losses), balancer


def _gather(tensor: Tensor) -> List[Tensor]:
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor)
    return gathered


def _check_ranks(rank: int, world_size: int, store_path: str) -> None:
    dist.init_process_group("gloo", store=dist.FileStore(store_path, world_size), rank=rank, world_size=world_size)
    try:
        weights, params, losses, balancer = _train(rank, GradNorm)
        assert torch.isfinite(losses).all(), losses
        all_weights, all_params = _gather(weights), _gather(params)
        assert not torch.equal(_gather(losses[0])[0], _gather(losses[0])[1]), "ranks must see different data"
        assert not torch.allclose(weights, torch.ones(NUM_TASKS), atol=1e-3), "GradNorm did not move"
        assert torch.equal(all_weights[0], all_weights[1]), f"task weights differ: {all_weights}"
        assert torch.equal(all_params[0], all_params[1]), "DDP weights differ across ranks"
        # The whole state is the same on every rank (L_i(0) from the global loss, the optimizer's
        # moments), so rank 0's checkpoint restores every rank exactly.
        state = balancer.state_dict()
        for key in ("initial_losses", "has_initial_loss", "num_steps"):
            assert torch.equal(*_gather(state[key].to(torch.float64))), key
        moments = balancer.optimizer.state_dict()["state"][0]
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(*_gather(moments[key])), key

        # Without the all-reduce each rank follows its own data: the check above would fail.
        weights, params, _, _ = _train(rank, UnsyncedGradNorm)
        all_weights = _gather(weights)
        gap = float((all_weights[0] - all_weights[1]).abs().max())
        assert gap > 1e-3, f"unsynced task weights should differ across ranks, max gap {gap}"
        # DDP still averages the model's gradients, so its weights stay identical.
        assert torch.equal(*_gather(params))

        # autograd.grad before backward desynchronises DDP with static_graph=True (the reason
        # DMP needs DefaultDataParallelWrapper(static_graph=False)): the params check detects it.
        _, params, _, _ = _train(rank, GradNorm, static_graph=True)
        assert not torch.equal(*_gather(params)), "static_graph=True no longer desynchronises DDP"
    finally:
        dist.destroy_process_group()


class GradNormDistributedTest(MultiProcessTestBase):
    def test_gradnorm_keeps_ranks_in_sync(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            self._run_multi_process_test(callable=_check_ranks, world_size=2, store_path=os.path.join(tmp, "store"))

"""The balanced pipeline inside TorchRec's TrainPipelineSparseDist equals a hand-written loop."""

import os
import sys
from typing import List

import pytest
import torch
from torchrec.distributed.embeddingbag import ShardedEmbeddingBagCollection
from torchrec.distributed.test_utils.multi_process import MultiProcessContext, MultiProcessTestBase
from torchrec.optim.optimizers import in_backward_optimizer_filter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/ for conftest in ranks
from conftest import make_batches, tiny_log_dataset  # noqa: E402

from torchrec_gnn.data.split import time_split  # noqa: E402
from torchrec_gnn.models.builder import ModelConfig, build_graph_dlrm  # noqa: E402
from torchrec_gnn.modules.gnn import GNNConfig  # noqa: E402
from torchrec_gnn.train.balancing import GradNorm, UncertaintyWeighting  # noqa: E402
from torchrec_gnn.train.pipeline import BalancedTrainPipeline  # noqa: E402
from torchrec_gnn.train.sharding import (  # noqa: E402
    ShardingConfig, configured_module_lrs, make_optimizer, shard_model, unwrap,
)

CONFIG = ModelConfig(embedding_dim=16, node_embedding_dim=16, gnn=GNNConfig(hidden_channels=16, dropout=0.0))


def _sharded(split, seed: int, balancer):
    torch.manual_seed(seed)
    model = build_graph_dlrm(tiny_log_dataset(), split.graph, CONFIG, device=torch.device("meta"))
    dmp, _ = shard_model(model, torch.device("cpu"), ShardingConfig())
    extra = {f"balancer.{i}": p for i, p in enumerate(balancer.backward_parameters())}
    return dmp, make_optimizer(dmp, dense_lr=1e-2, extra_parameters=extra)


def _pipelined_equals_plain(rank: int, world_size: int, balancer_kind: str) -> None:
    torch.set_num_threads(1)
    with MultiProcessContext(rank, world_size, "gloo"):
        split = time_split(tiny_log_dataset(), history_fraction=0.5)
        batches = make_batches(split, batch_size=64)[:6]
        make_balancer = {"gradnorm": lambda: GradNorm(3), "uncertainty": lambda: UncertaintyWeighting(3)}[balancer_kind]

        balancer = make_balancer()
        dmp, optimizer = _sharded(split, 0, balancer)
        pipeline = BalancedTrainPipeline(dmp, optimizer, balancer, torch.device("cpu"))
        torch.manual_seed(1)
        pipelined: List[torch.Tensor] = []
        weights: List[torch.Tensor] = []
        iterator = iter(batches)
        while True:
            try:
                step = pipeline.progress(iterator)
            except StopIteration:
                break
            pipelined.append(step.losses)
            weights.append(step.weights)
        node_tables = unwrap(dmp).model.graph_tower.node_embeddings
        assert isinstance(node_tables, ShardedEmbeddingBagCollection)
        assert any(m is node_tables for m in pipeline._pipeline._pipelined_modules), "node tables were not pipelined"

        balancer = make_balancer()
        dmp_plain, optimizer_plain = _sharded(split, 0, balancer)
        shared = unwrap(dmp_plain).model.shared_parameters()
        torch.manual_seed(1)
        plain, plain_weights = [], []
        for batch in batches:
            optimizer_plain.zero_grad()
            losses, _ = dmp_plain(batch)
            balancer.step(losses, shared)
            plain_weights.append(balancer.weights())
            balancer.combine(losses).backward()
            optimizer_plain.step()
            plain.append(losses.detach())

        assert len(pipelined) == len(plain) == 6
        torch.testing.assert_close(torch.stack(pipelined), torch.stack(plain), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(torch.stack(weights), torch.stack(plain_weights), atol=1e-6, rtol=1e-6)
        if balancer_kind == "gradnorm":
            assert not torch.allclose(weights[-1], torch.ones(3)), "GradNorm never moved the weights"


def _tower_trains_at_its_own_rate(rank: int, world_size: int) -> None:
    with MultiProcessContext(rank, world_size, "gloo"):
        split = time_split(tiny_log_dataset(), history_fraction=0.5)
        torch.manual_seed(0)
        model = build_graph_dlrm(tiny_log_dataset(), split.graph, CONFIG, device=torch.device("meta"))
        sharding = ShardingConfig(dense_lr=3e-3, tower_lr=1e-4)
        dmp, _ = shard_model(model, torch.device("cpu"), sharding)
        assert configured_module_lrs(dmp, ShardingConfig(tower_lr=None)) == []
        optimizer = make_optimizer(dmp, sharding.dense_lr, module_lrs=configured_module_lrs(dmp, sharding))
        dense = dict(in_backward_optimizer_filter(dmp.named_parameters()))
        tower = {id(p) for p in unwrap(dmp).model.graph_tower.parameters()}
        in_tower = {name for name, p in dense.items() if id(p) in tower}
        assert in_tower and len(in_tower) < len(dense)  # both groups hold dense parameters
        before = {name: p.detach().clone() for name, p in dense.items()}
        for p in dense.values():
            p.grad = torch.ones_like(p)
        optimizer.step()
        # Adam's first step moves each parameter by lr * g / |g| = its group's rate.
        for name, p in dense.items():
            lr = sharding.tower_lr if name in in_tower else sharding.dense_lr
            torch.testing.assert_close(before[name] - p.detach(), torch.full_like(p, lr), rtol=1e-4, atol=1e-8)


class PipelineTest(MultiProcessTestBase):
    @pytest.mark.timeout(300)
    def test_gradnorm_pipeline_equals_plain_loop(self) -> None:
        self._run_multi_process_test(callable=_pipelined_equals_plain, world_size=1, balancer_kind="gradnorm")

    @pytest.mark.timeout(300)
    def test_uncertainty_pipeline_equals_plain_loop(self) -> None:
        self._run_multi_process_test(callable=_pipelined_equals_plain, world_size=1, balancer_kind="uncertainty")

    @pytest.mark.timeout(300)
    def test_tower_trains_at_its_own_rate(self) -> None:
        self._run_multi_process_test(callable=_tower_trains_at_its_own_rate, world_size=1)

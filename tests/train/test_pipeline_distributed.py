"""Two ranks train the real model through DMP and the GradNorm pipeline and stay in sync."""

import os
import sys

import pytest
import torch
import torch.distributed as dist
from torchrec.distributed.test_utils.multi_process import MultiProcessContext, MultiProcessTestBase
from torchrec.optim.optimizers import in_backward_optimizer_filter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/ for conftest in ranks
from conftest import tiny_log_dataset  # noqa: E402

from torchrec_gnn.data.loader import GraphBatchDataset  # noqa: E402
from torchrec_gnn.data.split import time_split  # noqa: E402
from torchrec_gnn.graph.sampler import NeighborSampler  # noqa: E402
from torchrec_gnn.models.builder import ModelConfig, build_graph_dlrm  # noqa: E402
from torchrec_gnn.modules.gnn import GNNConfig  # noqa: E402
from torchrec_gnn.train.balancing import GradNorm  # noqa: E402
from torchrec_gnn.train.pipeline import BalancedTrainPipeline  # noqa: E402
from torchrec_gnn.train.sharding import ShardingConfig, make_optimizer, shard_model  # noqa: E402

EPOCHS = 3


def _same_on_every_rank(tensor: torch.Tensor) -> bool:
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return all(torch.equal(gathered[0], t) for t in gathered[1:])


def _train_two_ranks(rank: int, world_size: int, sharding_type: str) -> None:
    torch.set_num_threads(1)  # two ranks on two cores: more threads only spin against each other
    with MultiProcessContext(rank, world_size, "gloo"):
        dataset = tiny_log_dataset()
        split = time_split(dataset, history_fraction=0.3)
        torch.manual_seed(0)
        config = ModelConfig(embedding_dim=8, node_embedding_dim=8, gnn=GNNConfig(hidden_channels=16))
        model = build_graph_dlrm(dataset, split.graph, config, device=torch.device("meta"))
        dmp, plan = shard_model(model, torch.device("cpu"), ShardingConfig(node_sharding_types=[sharding_type]))
        node_plan = plan.plan["model.graph_tower.node_embeddings"]
        assert {p.sharding_type for p in node_plan.values()} == {sharding_type}
        balancer = GradNorm(len(model.loss_names))
        pipeline = BalancedTrainPipeline(dmp, make_optimizer(dmp, dense_lr=1e-2), balancer, torch.device("cpu"))
        # Each rank reads its own shard of the examples (different data on each rank).
        batches = GraphBatchDataset(
            split.train, NeighborSampler(split.graph, [5, 3]), "user", "item", 32, split.graph.node_types,
            ["user_id", "item_id", "genre"], shuffle=True, drop_last=True, rank=rank, world_size=world_size,
        )
        epochs = []
        for epoch in range(EPOCHS):
            batches.set_epoch(epoch)
            epochs += [batches[i] for i in range(len(batches))]
        iterator = iter(epochs)
        totals = []
        for _ in range(len(epochs)):
            totals.append(pipeline.progress(iterator).losses)
        totals = torch.stack(totals)  # (STEPS, L)

        # Every rank runs every collective before anything is asserted, so a failing check
        # raises on all ranks instead of leaving the others waiting in a collective.
        weights_synced = _same_on_every_rank(balancer.weights())
        dense = dict(in_backward_optimizer_filter(dmp.named_parameters()))
        differing = [name for name, p in dense.items() if not _same_on_every_rank(p.detach())]
        assert bool(torch.isfinite(totals).all()), totals
        first, last = totals[:4, :-1].sum(1).mean(), totals[-4:, :-1].sum(1).mean()
        assert last < first, f"task losses did not fall: {totals[:, :-1].sum(1).tolist()}"
        assert not torch.allclose(balancer.weights(), torch.ones(len(model.loss_names))), "GradNorm never moved"
        assert weights_synced, "GradNorm weights differ across ranks"
        assert len(dense) > 20
        assert not differing, f"dense replicas out of sync: {differing[:5]}"


class PipelineDistributedTest(MultiProcessTestBase):
    @pytest.mark.timeout(300)
    def test_two_ranks_table_wise(self) -> None:
        self._run_multi_process_test(callable=_train_two_ranks, world_size=2, sharding_type="table_wise")

    @pytest.mark.timeout(300)
    def test_two_ranks_row_wise(self) -> None:
        self._run_multi_process_test(callable=_train_two_ranks, world_size=2, sharding_type="row_wise")

"""Two ranks refresh the outer hop's history from column-wise sharded node tables: both hold the
same cache, equal to the one an unsharded model computes from the same weights."""

import os
import sys

import pytest
import torch
import torch.distributed as dist
from torchrec.distributed.test_utils.multi_process import MultiProcessContext, MultiProcessTestBase

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/ for conftest in ranks
from conftest import tiny_log_dataset  # noqa: E402

from torchrec_gnn.data.split import time_split  # noqa: E402
from torchrec_gnn.models.builder import ModelConfig, build_graph_dlrm  # noqa: E402
from torchrec_gnn.modules.gnn import GNNConfig  # noqa: E402
from torchrec_gnn.train.sharding import (  # noqa: E402
    ShardingConfig, copy_into_sharded, refresh_outer_hop, shard_model, unwrap,
)


def _refresh_two_ranks(rank: int, world_size: int) -> None:
    torch.set_num_threads(1)
    with MultiProcessContext(rank, world_size, "gloo"):
        dataset = tiny_log_dataset()
        split = time_split(dataset, history_fraction=0.3)
        config = ModelConfig(embedding_dim=8, node_embedding_dim=8, gnn=GNNConfig(hidden_channels=16, outer_hop="history"))
        torch.manual_seed(0)
        model = build_graph_dlrm(dataset, split.graph, config, device=torch.device("meta"))
        dmp, plan = shard_model(model, torch.device("cpu"), ShardingConfig(node_sharding_types=["column_wise"]))
        assert {p.sharding_type for p in plan.plan["model.graph_tower.node_embeddings"].values()} == {"column_wise"}
        torch.manual_seed(1)
        reference = build_graph_dlrm(dataset, split.graph, config, device=torch.device("cpu"))
        copy_into_sharded(dmp, reference.state_dict())
        assert refresh_outer_hop(dmp, split.graph, dataset.node_features)
        assert refresh_outer_hop(reference, split.graph, dataset.node_features)

        sharded = unwrap(dmp).model.graph_tower.encoder.history
        expected = reference.model.graph_tower.encoder.history
        caches = {t: sharded.cache(t) for t in sharded.num_nodes}
        gathered = {t: [torch.empty_like(c) for _ in range(world_size)] for t, c in caches.items()}
        for t, cache in caches.items():
            dist.all_gather(gathered[t], cache)
        for t, cache in caches.items():
            assert all(torch.equal(g, cache) for g in gathered[t]), f"{t}: ranks hold different caches"
            torch.testing.assert_close(cache, expected.cache(t), atol=1e-5, rtol=1e-5)
            assert cache.abs().sum() > 0


class HistoryDistributedTest(MultiProcessTestBase):
    @pytest.mark.timeout(300)
    def test_two_ranks_refresh_the_same_history(self) -> None:
        self._run_multi_process_test(callable=_refresh_two_ranks, world_size=2)

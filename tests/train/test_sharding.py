import pytest
import torch

from conftest import tiny_log_dataset
from torchrec_gnn.data.split import time_split
from torchrec_gnn.models.builder import ModelConfig, build_graph_dlrm
from torchrec_gnn.train.sharding import ShardingConfig, node_pooling_factors, table_constraints


def test_pooling_factors_follow_the_fanouts() -> None:
    num_nodes = {"user": 1000, "item": 50}
    degrees = {("user", "watches", "item"): 20.0, ("item", "rev_watches", "user"): 3.0}
    factors = node_pooling_factors(num_nodes, degrees, {et: [10, 5] for et in degrees}, {"user": 8, "item": 8})
    # hop 1: users += 8 items * min(10, 20) = 80, items += 8 users * min(10, 3) = 24
    # hop 2: users += 24 * 5 = 120, items += 80 * 3 = 240 -> capped at 50 nodes
    assert factors == {"user": 8 + 80 + 120, "item": 50.0}


def test_constraints_pin_tables_to_fused_kernels_and_valid_types() -> None:
    dataset = tiny_log_dataset()
    split = time_split(dataset, history_fraction=0.5)
    model = build_graph_dlrm(dataset, split.graph, ModelConfig(), device=torch.device("meta"))
    constraints = table_constraints(model, ["column_wise"], "cpu", {"user": 12.0})
    assert constraints["node_user"].sharding_types == ["column_wise"]
    # 12 expected nodes per batch: 12 one-id bags.
    node_user = constraints["node_user"]
    assert node_user.compute_kernels == ["fused"] and node_user.pooling_factors == [1.0] and node_user.batch_sizes == [12]
    assert table_constraints(model, None, "cpu")["node_item"].sharding_types == ["table_wise", "column_wise", "table_column_wise"]
    assert "data_parallel" not in constraints["t_user_id"].sharding_types  # no DENSE kernel on CPU
    with pytest.raises(ValueError, match=r"\['row_wise'\] not possible for node tables on cpu"):
        table_constraints(model, ["row_wise"], "cpu")
    with pytest.raises(ValueError, match="table_optimizer must be one of"):
        ShardingConfig(table_optimizer="adam")

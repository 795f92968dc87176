import dataclasses

import pytest
import torch

from conftest import make_batches, tiny_log_dataset
from torchrec_gnn.models.builder import ModelConfig, build_graph_dlrm
from torchrec_gnn.models.graph_dlrm import RankerConfig
from torchrec_gnn.modules.frozen_tower import FrozenGraphTower
from torchrec_gnn.modules.gnn import GNNConfig

CONFIG = ModelConfig(embedding_dim=8, node_embedding_dim=8, gnn=GNNConfig(hidden_channels=12), two_stage=True,
                     ranker=RankerConfig(dense_arch_hidden_sizes=[16], over_arch_layer_sizes=[32, 16]))


def embeddings(split, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {t: torch.randn(split.graph.num_nodes[t], 12, generator=g) for t in ("user", "item")}


def test_looks_up_each_examples_user_and_item(tiny_split) -> None:
    batch = make_batches(tiny_split, fanouts=[])[0]  # zero hops: the seeds only
    edges = batch.graph_features.edge_index
    assert set(edges) == set() or all(e.numel() == 0 for e in edges.values())
    tables = embeddings(tiny_split)
    tower = FrozenGraphTower(tables, "user", "item")
    out = tower(batch.graph_features)
    users = batch.graph_features.node_ids["user"].values()[batch.graph_features.user_index]
    items = batch.graph_features.node_ids["item"].values()[batch.graph_features.item_index]
    assert torch.equal(out.user, tables["user"][users]) and torch.equal(out.item, tables["item"][items])
    assert out.gfae_loss.item() == 0.0 and list(tower.parameters()) == [] and tower.out_channels == 12


def test_same_batches_with_or_without_neighbours_give_the_same_embeddings(tiny_split) -> None:
    tower = FrozenGraphTower(embeddings(tiny_split), "user", "item")
    seeds_only, sampled = make_batches(tiny_split, fanouts=[]), make_batches(tiny_split, fanouts=[5, 3])
    assert sampled[0].graph_features.num_nodes["user"] > seeds_only[0].graph_features.num_nodes["user"]
    torch.testing.assert_close(tower(seeds_only[0].graph_features).user, tower(sampled[0].graph_features).user)


def test_ranker_trains_around_frozen_embeddings(tiny_split) -> None:
    tables = embeddings(tiny_split)
    torch.manual_seed(0)
    model = build_graph_dlrm(tiny_log_dataset(), tiny_split.graph, CONFIG, frozen_embeddings=tables)
    tower = model.model.graph_tower
    assert isinstance(tower, FrozenGraphTower)
    # Same fusion as end to end: 2 extra interaction features and 2H extra head inputs.
    assert model.model.interaction_features == 3 + 2 and model.model.task_heads.in_features == 16 + 2 * 12
    # GradNorm's shared layer falls back to the over arch (the tower has no weights).
    assert model.model.shared_parameters() == list(model.model.over_arch._mlp[-1].parameters())
    batch = make_batches(tiny_split, fanouts=[])[0]
    losses, _ = model(batch)
    losses[:2].sum().backward()
    assert model.model.input_fusion.user_projection.weight.grad.abs().sum() > 0
    assert torch.equal(tower.table("user"), tables["user"])  # a buffer: never trained


def test_empty_tower_is_filled_after_construction(tiny_split) -> None:
    model = build_graph_dlrm(tiny_log_dataset(), tiny_split.graph, CONFIG, device=torch.device("meta"))
    assert model.model.graph_tower.table("user").is_meta
    tower = FrozenGraphTower({t: torch.zeros(n, 12) for t, n in (("user", 40), ("item", 60))}, "user", "item")
    tables = embeddings(tiny_split)
    tower.load_embeddings(tables)
    assert torch.equal(tower.table("item"), tables["item"])
    with pytest.raises(ValueError, match=r"'user' embeddings have shape \(3, 12\)"):
        tower.load_embeddings({"user": torch.zeros(3, 12), "item": tables["item"]})
    with pytest.raises(ValueError, match="no embeddings for node type 'item'"):
        tower.load_embeddings({"user": tables["user"]})


def test_bad_inputs_fail_clearly() -> None:
    with pytest.raises(ValueError, match=r"no embeddings for node types \['item'\]"):
        FrozenGraphTower({"user": torch.zeros(3, 4)}, "user", "item")
    with pytest.raises(ValueError, match="one H"):
        FrozenGraphTower({"user": torch.zeros(3, 4), "item": torch.zeros(3, 5)}, "user", "item")
    with pytest.raises(ValueError, match="two_stage and warm_start need use_graph=True"):
        dataclasses.replace(CONFIG, use_graph=False)
    with pytest.raises(ValueError, match="choose two_stage .* or warm_start"):
        dataclasses.replace(CONFIG, warm_start=True)

from pathlib import Path

import numpy as np
import pytest
import torch

from torchrec_gnn.data.dataset import GraphRecDataset, Interactions, TaskSpec
from torchrec_gnn.data.loader import LinkTargets, find_link_relation
from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.graph.sampler import NeighborSampler, fanouts_by_relation
from torchrec_gnn.models.builder import ModelConfig, build_graph_tower
from torchrec_gnn.modules.gnn import GNNConfig
from torchrec_gnn.recipes.pretrain import LinkPretrainRecipe
from torchrec_gnn.train.pretrain import (
    EMBEDDINGS_FILE,
    TOWER_FILE,
    PretrainConfig,
    PretrainSetup,
    hold_out_edges,
    link_batches,
    load_pretrained,
    save_result,
)
from torchrec_gnn.typing import EdgeList

USERS, ITEMS, GENRES = 200, 80, 4
WATCHES = ("user", "watches", "item")


def taste_dataset(seed: int = 0) -> GraphRecDataset:
    """Each user watches 12 items of their favourite genre: held-out watches are predictable."""
    g = torch.Generator().manual_seed(seed)
    users = torch.arange(USERS).repeat_interleave(12)
    genre_items = [torch.arange(k, ITEMS, GENRES) for k in range(GENRES)]
    items = torch.cat([genre_items[u % GENRES][torch.randperm(ITEMS // GENRES, generator=g)[:12]] for u in range(USERS)])
    edges = {WATCHES: EdgeList(users, items, time=torch.arange(users.numel())),
             ("item", "in", "genre"): EdgeList(torch.arange(ITEMS), torch.arange(ITEMS) % GENRES)}
    examples = Interactions(user=users[:8], item=items[:8], timestamp=torch.zeros(8, dtype=torch.int64),
                            labels=torch.ones(8, 1), dense=torch.zeros(8, 1))
    return GraphRecDataset("taste", [TaskSpec("click", "binary")], "user", "item",
                           {"user": USERS, "item": ITEMS, "genre": GENRES}, examples, edges, ["d"], {"f": 2})


def taste_graph(dataset: GraphRecDataset) -> HeteroGraph:
    return HeteroGraph.from_edges(dataset.num_nodes, dataset.edges, add_reverse=True)


def pairs_of(graph: HeteroGraph, et, reverse: bool = False) -> set:
    src, dst = graph.edge_index(et).tolist()
    return set(zip(dst, src)) if reverse else set(zip(src, dst))


def test_find_link_relation() -> None:
    graph = taste_graph(taste_dataset())
    assert find_link_relation(graph, "user", "item", None) == WATCHES
    assert find_link_relation(graph, "user", "item", "user__watches__item") == WATCHES
    with pytest.raises(ValueError, match=r"candidates: \['user__watches__item'\]"):
        find_link_relation(graph, "user", "item", "item__in__genre")


def test_hold_out_removes_the_pairs_from_both_directions() -> None:
    graph = taste_graph(taste_dataset())
    message, held = hold_out_edges(graph, WATCHES, 0.3, seed=0)
    held_pairs = set(zip(*held.tolist()))
    assert 0.2 * 12 * USERS < len(held_pairs) < 0.4 * 12 * USERS
    assert pairs_of(message, WATCHES) == pairs_of(graph, WATCHES) - held_pairs
    reverse = ("item", "rev_watches", "user")
    assert pairs_of(message, reverse, reverse=True) == pairs_of(graph, WATCHES) - held_pairs
    assert message.num_edges(("item", "in", "genre")) == graph.num_edges(("item", "in", "genre"))
    assert message.csc(WATCHES).time is not None  # edge attributes survive
    again, held_again = hold_out_edges(graph, WATCHES, 0.3, seed=0)
    assert torch.equal(held, held_again) and not torch.equal(held, hold_out_edges(graph, WATCHES, 0.3, seed=1)[1])


def test_link_batches_hold_each_batch_links_out_of_its_message_passing() -> None:
    dataset = taste_dataset()
    graph = taste_graph(dataset)
    links = LinkTargets(WATCHES, graph.edge_index(WATCHES), per_batch=40)
    data = link_batches(links, NeighborSampler(graph, [-1, -1]), dataset, train=False, seed=0)
    assert len(data) == -(-links.num_edges // 40)  # every edge once, in order, the last batch shorter
    seen = []
    for i in (0, len(data) - 1):
        batch = data[i]
        users, items = batch.graph_features.node_ids["user"].values(), batch.graph_features.node_ids["item"].values()
        label = batch.graph_features.link_label
        link_users, link_items = batch.graph_features.link_index
        pairs = list(zip(users[link_users].tolist(), items[link_items].tolist()))
        positives = {p for p, y in zip(pairs, label.tolist()) if y == 1}
        assert len(positives) == int(label.sum()) == len(label) // 2 and batch.batch_size == 0
        ei = batch.graph_features.edge_index[WATCHES]
        visible = set(zip(users[ei[0]].tolist(), items[ei[1]].tolist()))
        rev = batch.graph_features.edge_index[("item", "rev_watches", "user")]
        visible_rev = set(zip(users[rev[1]].tolist(), items[rev[0]].tolist()))
        assert not positives & visible and not positives & visible_rev
        # With fanout -1 every other watch of these users is still there.
        assert len(visible) > 0
        seen += sorted(positives)
    assert set(seen) <= pairs_of(graph, WATCHES)


def test_pretraining_learns_links_and_exports_full_graph_embeddings(tmp_path: Path) -> None:
    dataset = taste_dataset()
    graph = taste_graph(dataset)
    torch.manual_seed(0)
    config = ModelConfig(node_embedding_dim=8, gnn=GNNConfig(hidden_channels=8, dropout=0.0))
    tower = build_graph_tower(dataset, graph, config, edge_objective=True)
    setup = PretrainSetup(PretrainConfig(epochs=10, patience=3, batch_size=64, lr=0.02),
                          fanouts_by_relation(graph, [5, 5], {}), seed=0, progress=False)
    result = LinkPretrainRecipe(tower, dataset, graph, setup).run()
    report = result.report
    assert report["relation"] == "user__watches__item" and report["steps"] > 50
    assert report["link_auc"] == max(report["link_auc_by_epoch"]) == report["link_auc_by_epoch"][report["kept_epoch"]]
    # Uniform negatives of the same genre are indistinguishable: about 0.875 is the ceiling.
    # A model at chance has AUC 0.5 +- 0.05 on these 72 held-out pairs.
    assert report["link_auc"] > 0.7, report
    assert report["pretrain_seconds"] > 0 and report["export_seconds"] > 0
    assert {t: tuple(e.shape) for t, e in result.embeddings.items()} == {"user": (USERS, 8), "item": (ITEMS, 8)}
    # The export is layer-wise inference of the trained tower over the whole graph.
    tables = {t: tower.node_embeddings.embedding_bags[f"node_{t}"].weight.detach() for t in graph.node_types}
    expected = tower.encoder.gnn.inference(tables, graph, progress=False)
    torch.testing.assert_close(result.embeddings["user"], expected["user"])

    save_result(result, tmp_path)
    loaded = load_pretrained(tmp_path)
    assert torch.equal(loaded["item"], result.embeddings["item"])
    state = load_pretrained(tmp_path, TOWER_FILE)
    assert state.keys() == tower.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in tower.state_dict().items())  # the kept epoch's tower
    (tmp_path / EMBEDDINGS_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"{EMBEDDINGS_FILE}: cannot load the pre-training output"):
        load_pretrained(tmp_path)


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="supervision_fraction must be in"):
        PretrainConfig(supervision_fraction=0.0)
    with pytest.raises(ValueError, match="even number"):
        PretrainConfig(batch_size=7)
    assert np.isclose(PretrainConfig().validation_fraction, 0.03)


def test_edge_loss_falls_where_links_are_predictable() -> None:
    """The masked-edge loss that E2E training adds: on taste data (each user watches one genre)
    training the tower on it alone drives it well below its untrained value on unseen links."""
    dataset = taste_dataset()
    graph = taste_graph(dataset)
    message, held = hold_out_edges(graph, WATCHES, 0.1, seed=0)
    sampler = NeighborSampler(message, [5, 5])
    torch.manual_seed(0)
    config = ModelConfig(node_embedding_dim=8, use_gfae=False, gnn=GNNConfig(hidden_channels=8, dropout=0.0))
    tower = build_graph_tower(dataset, graph, config, edge_objective=True)
    train = link_batches(LinkTargets(WATCHES, message.edge_index(WATCHES), 64), sampler, dataset, train=True, seed=0)
    unseen = [b for b in link_batches(LinkTargets(WATCHES, held, 64), sampler, dataset, train=False, seed=1)]

    def unseen_loss() -> float:
        tower.eval()
        with torch.no_grad():
            return float(torch.stack([tower(b.graph_features).edge_loss for b in unseen]).mean())

    before = unseen_loss()
    optimizer = torch.optim.Adam(tower.parameters(), lr=0.02)
    tower.train()
    for epoch in range(4):
        train.set_epoch(epoch)
        for i in range(len(train)):
            loss = tower(train[i].graph_features).edge_loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    after = unseen_loss()
    assert before > 0.6 and after < 0.75 * before, (before, after)

"""The tower's wiring, against behaviour: the GFAE scores only masked rows against constant
targets and really masks them, and each example gets its own user's and item's rows."""

from typing import Dict, List

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedTensor

from conftest import tiny_log_dataset
from torchrec_gnn.data.batch import GraphBatch
from torchrec_gnn.data.loader import BatchPlan, BatchSchema, GraphBatchBuilder, GraphBatchDataset
from torchrec_gnn.data.split import TimeSplit
from torchrec_gnn.graph.sampler import NeighborSampler
from torchrec_gnn.models.builder import ModelConfig, build_graph_tower
from torchrec_gnn.models.graph_dlrm import RankerConfig
from torchrec_gnn.modules.gfae import GFAE, GFAEConfig
from torchrec_gnn.modules.gnn import GNNConfig
from torchrec_gnn.modules.gnn_tower import node_rows

CONFIG = ModelConfig(embedding_dim=8, node_embedding_dim=8, gnn=GNNConfig(hidden_channels=12, dropout=0.0),
                     gfae=GFAEConfig(mask_rate=0.3), ranker=RankerConfig())


def tower_and_inputs(split, batch):
    torch.manual_seed(0)
    tower = build_graph_tower(tiny_log_dataset(), split.graph, CONFIG)
    num_nodes = batch.graph_features.num_nodes
    x_dict = {t: torch.randn(int(num_nodes[t]), 8, requires_grad=True) for t in split.graph.node_types}
    return tower, x_dict


def spy_masks(tower) -> List[Dict[str, torch.Tensor]]:
    """Record the rows each GFAE.mask call hides (the call itself is unchanged)."""
    calls = []
    original = tower.encoder.gfae.mask

    def mask(*args, **kwargs):
        masked, rows = original(*args, **kwargs)
        calls.append({"inputs": masked, "rows": rows})
        return masked, rows

    tower.encoder.gfae.mask = mask
    return calls


def test_gfae_loss_reads_only_the_masked_rows() -> None:
    torch.manual_seed(0)
    gfae = GFAE(8, 12, {"user": 5}, GFAEConfig())
    h, target = {"user": torch.randn(20, 12)}, {"user": torch.randn(20, 5)}
    rows = {"user": torch.tensor([2, 7, 11])}
    loss = gfae.loss(h, target, rows)
    prediction = gfae.decoders["user"](h["user"][rows["user"]])
    cos = torch.nn.functional.cosine_similarity(prediction, target["user"][rows["user"]], dim=-1)
    torch.testing.assert_close(loss, (1 - cos).pow(2).mean())
    others = torch.ones(20, dtype=torch.bool)
    others[rows["user"]] = False
    changed_h, changed_target = h["user"].clone(), target["user"].clone()
    changed_h[others], changed_target[others] = torch.randn(17, 12), torch.randn(17, 5)
    assert torch.equal(gfae.loss({"user": changed_h}, {"user": changed_target}, rows), loss)  # unmasked rows: no effect
    changed_h[7] += 1.0
    assert not torch.equal(gfae.loss({"user": changed_h}, {"user": changed_target}, rows), loss)


def test_gfae_masks_its_rows_and_its_targets_carry_no_gradient(tiny_split, tiny_batches) -> None:
    """A masked row's input is the mask token alone, so the table row itself reaches the GFAE
    loss only as a target: with a stop-gradient its gradient from that loss is exactly 0."""
    batch = tiny_batches[0]
    tower, x_dict = tower_and_inputs(tiny_split, batch)
    with torch.no_grad():
        for token in tower.encoder.gfae.mask_token.values():
            token.normal_()
    calls = spy_masks(tower)
    tower.train()
    loss = tower.encoder(x_dict, batch.graph_features).gfae_loss
    (call,) = calls
    assert loss > 0 and set(call["rows"]) == {"user", "item"}
    for t, rows in call["rows"].items():
        assert rows.numel() > 0 and bool((rows < batch.graph_features.num_sampled_nodes[t][0]).all())  # seeds only
        token = tower.encoder.gfae.mask_token[t].detach()
        assert torch.equal(call["inputs"][t][rows].detach(), token.expand(rows.numel(), -1))
    loss.backward()
    for t, rows in call["rows"].items():
        assert torch.equal(x_dict[t].grad[rows], torch.zeros_like(x_dict[t].grad[rows])), t
        assert x_dict[t].grad.abs().sum() > 0, t  # the unmasked rows do get gradient


def test_each_example_gets_its_own_rows_wherever_it_sits_in_the_batch(tiny_split) -> None:
    """Eval mode, every neighbour: a node's embedding depends on its neighbourhood only, so an
    example's user and item embeddings must not change when the batch lists it elsewhere."""
    train = tiny_split.train

    def one_batch(examples):
        sampler = NeighborSampler(tiny_split.graph, [-1, -1])
        return GraphBatchDataset(
            examples,
            GraphBatchBuilder(
                sampler,
                BatchSchema("user", "item", tiny_split.graph.node_types, ["user_id", "item_id", "genre"]),
            ),
            BatchPlan(len(examples)),
        )[0]

    batch, flipped = one_batch(train), one_batch(train.subset(torch.arange(len(train)).flip(0)))
    assert not torch.equal(batch.graph_features.user_index, flipped.graph_features.user_index.flip(0))  # other rows
    torch.manual_seed(0)
    tower = build_graph_tower(tiny_log_dataset(), tiny_split.graph, CONFIG).eval()
    with torch.no_grad():
        out, out_flipped = tower(batch.graph_features), tower(flipped.graph_features)
    rows = batch.sparse_features["user_id"].values()
    flipped_rows = flipped.sparse_features["user_id"].values()
    assert torch.equal(rows, flipped_rows.flip(0))
    torch.testing.assert_close(out.user, out_flipped.user.flip(0))
    torch.testing.assert_close(out.item, out_flipped.item.flip(0))
    assert not torch.allclose(out.user[0], out.user[1])  # not vacuous: examples differ


def test_join_appends_the_graph_embeddings_to_pooled_features(tiny_split, tiny_batches) -> None:
    """The generic route: the tower's two embeddings become two more features of an EBC's
    output, each readable by key, the pooled ones unchanged; a clash or a size mismatch is refused."""
    from torchrec.modules.embedding_configs import EmbeddingBagConfig
    from torchrec.modules.embedding_modules import EmbeddingBagCollection
    from torchrec.sparse.jagged_tensor import KeyedTensor

    batch = tiny_batches[0]
    tower, _ = tower_and_inputs(tiny_split, batch)
    graph = tower.eval()(batch.graph_features)
    ebc = EmbeddingBagCollection(tables=[
        EmbeddingBagConfig(name=f"t_{f}", num_embeddings=n, embedding_dim=d, feature_names=[f])
        for (f, n), d in zip(tiny_log_dataset().sparse_cardinality.items(), (4, 8, 6))
    ])
    pooled = ebc(batch.sparse_features)
    joined = graph.join(pooled)
    assert joined.keys() == pooled.keys() + ["graph_user", "graph_item"]
    assert joined.length_per_key() == [4, 8, 6, 12, 12]
    for key in pooled.keys():
        assert torch.equal(joined[key], pooled[key])
    assert torch.equal(joined["graph_user"], graph.user) and torch.equal(joined["graph_item"], graph.item)
    assert graph.join(joined, prefix="hop").keys()[-2:] == ["hop_user", "hop_item"]
    # With a projection, each embedding first goes to the features' width.
    from torchrec_gnn.modules.fusion import InputFusionArch
    projection = InputFusionArch(12, 8)
    projected = graph.join(pooled, projection=projection)
    assert projected.length_per_key() == [4, 8, 6, 8, 8]
    assert torch.equal(projected["graph_user"], projection.user_projection(graph.user))
    assert torch.equal(projected["graph_item"], projection.item_projection(graph.item))
    with pytest.raises(ValueError, match=r"already have keys \['graph_user', 'graph_item'\]; pick another prefix"):
        graph.join(joined)
    short = KeyedTensor(keys=["a"], length_per_key=[3], values=torch.zeros(batch.batch_size - 1, 3))
    with pytest.raises(ValueError, match=rf"do not match {batch.batch_size} examples"):
        graph.join(short)


def test_aux_losses_follow_the_towers_names(tiny_split, tiny_batches) -> None:
    """A ranker appends exactly the auxiliary losses its tower computes, feature loss first."""
    from dataclasses import replace

    batch = tiny_batches[0]
    for use_gfae, edges, names in ((True, False, ["gfae"]), (True, True, ["gfae", "edge"]), (False, True, ["edge"])):
        config = replace(CONFIG, use_gfae=use_gfae, gfae=replace(CONFIG.gfae, edge_objective=edges))
        tower = build_graph_tower(tiny_log_dataset(), tiny_split.graph, config)
        assert tower.aux_loss_names == names
        graph = tower(batch.graph_features)
        expected = {"gfae": graph.gfae_loss, "edge": graph.edge_loss}
        assert torch.equal(graph.aux_losses(names), torch.stack([expected[n] for n in names]))
    assert graph.aux_losses([]).shape == (0,)


def test_both_towers_implement_the_interface(tiny_split) -> None:
    """A ranker takes either tower through GraphTowerInterface; an incomplete tower cannot be built."""
    from torchrec_gnn.modules.frozen_tower import FrozenGraphTower
    from torchrec_gnn.modules.gnn_tower import GraphTowerInterface

    tower = build_graph_tower(tiny_log_dataset(), tiny_split.graph, CONFIG)
    frozen = FrozenGraphTower({"user": torch.zeros(4, 6), "item": torch.zeros(5, 6)}, "user", "item")
    assert isinstance(tower, GraphTowerInterface) and isinstance(frozen, GraphTowerInterface)
    assert (frozen.out_channels, frozen.aux_loss_names, frozen.shared_parameters()) == (6, [], [])

    class NoEmbeddings(GraphTowerInterface):
        def forward(self, batch):
            return None

    with pytest.raises(TypeError, match="abstract"):
        NoEmbeddings()


def test_side_features_join_the_id_rows_and_are_the_gfae_targets(tiny_split) -> None:
    """Items with dense side features: their GNN input is row + projection(features), their
    GFAE target is the features; users (no features) keep their rows and reconstruct them."""
    from dataclasses import replace

    dataset = tiny_log_dataset()
    features = {"item": torch.randn(dataset.num_nodes["item"], 3, generator=torch.Generator().manual_seed(1))}
    dataset = replace(dataset, node_features=features)
    torch.manual_seed(0)
    tower = build_graph_tower(dataset, tiny_split.graph, CONFIG)
    assert tower.encoder.gfae.target_channels == {"user": 8, "item": 3}
    batch = GraphBatchDataset(
        tiny_split.train,
        GraphBatchBuilder(
            NeighborSampler(tiny_split.graph, [5, 3]),
            BatchSchema("user", "item", tiny_split.graph.node_types, ["user_id", "item_id", "genre"]),
            node_features=features,
        ),
        BatchPlan(64),
    )[0]
    x_dict = {t: torch.randn(int(batch.graph_features.num_nodes[t]), 8) for t in tiny_split.graph.node_types}
    inputs = tower.encoder.input_features(x_dict, batch.graph_features.node_features)
    projection = tower.encoder.feature_projection["item"]
    torch.testing.assert_close(inputs["item"], x_dict["item"] + projection(batch.graph_features.node_features["item"]))
    assert torch.equal(inputs["user"], x_dict["user"]) and set(tower.encoder.feature_projection) == {"item"}
    # In training the item decoder reconstructs the 3 features (a (M, 3) target; an 8-wide one would not fit).
    targets = []
    real_loss = tower.encoder.gfae.loss
    tower.encoder.gfae.loss = lambda h, target, mask: (targets.append(target), real_loss(h, target, mask))[1]
    tower.train()
    assert tower.encoder(x_dict, batch.graph_features).gfae_loss > 0
    (target,) = targets
    assert torch.equal(target["item"], batch.graph_features.node_features["item"])
    assert torch.equal(target["user"], x_dict["user"])


def test_gfae_masks_its_share_of_the_seeds_or_of_every_row(tiny_split, tiny_batches) -> None:
    """With trimming only the seeds' final embeddings exist, so max(1, round(rate * seeds)) of
    them are masked; without, the share is of every sampled row."""
    from dataclasses import replace

    batch = tiny_batches[0]
    for trim in (True, False):
        torch.manual_seed(0)
        config = replace(CONFIG, gnn=replace(CONFIG.gnn, trim=trim))
        tower = build_graph_tower(tiny_log_dataset(), tiny_split.graph, config).train()
        calls = spy_masks(tower)
        x_dict = {t: torch.randn(int(batch.graph_features.num_nodes[t]), 8) for t in tiny_split.graph.node_types}
        tower.encoder(x_dict, batch.graph_features)
        for t, rows in calls[0]["rows"].items():
            pool = batch.graph_features.num_sampled_nodes[t][0] if trim else int(batch.graph_features.num_nodes[t])
            assert rows.numel() == max(1, round(0.3 * pool)) and int(rows.max()) < pool, (trim, t)


def test_keyed_defaults_to_the_graph_prefix(tiny_split: TimeSplit, tiny_batches: List[GraphBatch]) -> None:
    graph = tower_and_inputs(tiny_split, tiny_batches[0])[0].eval()(tiny_batches[0].graph_features)
    keyed = graph.keyed()
    assert keyed.keys() == ["graph_user", "graph_item"]
    assert torch.equal(keyed["graph_user"], graph.user) and torch.equal(keyed["graph_item"], graph.item)


def test_encoder_and_tower_refuse_mismatched_parts_naming_them(tiny_split: TimeSplit) -> None:
    from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
    from torchrec.modules.embedding_modules import EmbeddingBagCollection

    from torchrec_gnn.modules.gnn import HeteroGNN
    from torchrec_gnn.modules.gnn_tower import GNNTower, GraphEncoder

    graph = tiny_split.graph
    gnn = HeteroGNN.from_config(graph.node_types, graph.edge_types, 8, CONFIG.gnn, out_node_types=["user", "item"])
    with pytest.raises(ValueError, match=r"GraphEncoder: node type 'buyer' is not one of the GNN's \['user'"):
        GraphEncoder(gnn, "buyer", "item")
    with pytest.raises(ValueError, match=r"GraphEncoder: GFAE targets \['genre'\] are not GNN outputs \['user', 'item'\]; "
                                         r"reconstruct only output node types"):
        GraphEncoder(gnn, "user", "item", GFAE(8, 12, {"user": 8, "genre": 8}, GFAEConfig()))
    encoder = GraphEncoder(gnn, "user", "item", GFAE(8, 12, {"user": 8, "item": 8}, GFAEConfig()))

    def tables(pooling: Dict[str, PoolingType], dims: Dict[str, int]) -> EmbeddingBagCollection:
        return EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name=f"node_{t}", num_embeddings=n, embedding_dim=dims.get(t, 8), feature_names=[t],
                               pooling=pooling.get(t, PoolingType.SUM))
            for t, n in graph.num_nodes.items() if t != "genre" or "genre" in dims or "genre" in pooling
        ])

    with pytest.raises(ValueError, match=r"GNNTower: node types \['genre'\] have no table in the EmbeddingBagCollection "
                                         r"\(its feature names: \['item', 'user'\]\); add one table per node type"):
        GNNTower(tables({}, {}), encoder)
    with pytest.raises(ValueError, match=r"GNNTower: node tables \['node_genre'\] must use sum pooling"):
        GNNTower(tables({"genre": PoolingType.MEAN}, {}), encoder)
    with pytest.raises(ValueError, match=r"GNNTower: node tables have embedding dims \[4, 8\] but the GNN expects "
                                         r"in_channels=8"):
        GNNTower(tables({}, {"genre": 4}), encoder)
    assert GNNTower(tables({}, {"genre": 8}), encoder).node_types == list(graph.node_types)


def test_an_untrimmed_tower_reads_batches_without_per_hop_counts(tiny_split: TimeSplit,
                                                                 tiny_batches: List[GraphBatch]) -> None:
    """Per-hop counts only let the GNN trim; without trimming a batch may lack them (the batch's
    defaults) and every sampled row is still encoded, giving the same embeddings."""
    from dataclasses import replace

    batch = tiny_batches[0]
    torch.manual_seed(0)
    config = replace(CONFIG, gnn=replace(CONFIG.gnn, trim=False))
    tower = build_graph_tower(tiny_log_dataset(), tiny_split.graph, config).eval()
    with torch.no_grad():
        graph = batch.graph_features
        counted, uncounted = tower(graph), tower(replace(graph, num_sampled_nodes={}, num_sampled_edges={}))
    torch.testing.assert_close(uncounted.user, counted.user)
    torch.testing.assert_close(uncounted.item, counted.item)


def test_a_tower_with_a_history_matches_full_graph_inference(tiny_split: TimeSplit) -> None:
    """Outer hop from a fresh history: on one-hop batches with every neighbour, the tower gives
    each example the full-graph embedding of its user and item."""
    from conftest import make_batches
    from torchrec_gnn.models.builder import node_table_name

    torch.manual_seed(0)
    tower = build_graph_tower(tiny_log_dataset(), tiny_split.graph, CONFIG, history=True).eval()
    tables = {t: tower.node_embeddings.embedding_bags[node_table_name(t)].weight.detach() for t in tower.node_types}
    tower.encoder.history.load(tower.encoder.history_rows(tables, {}, tiny_split.graph))
    full = tower.encoder.full_graph(tables, {}, tiny_split.graph)
    batch = make_batches(tiny_split, fanouts=[-1])[0]
    with torch.no_grad():
        out = tower(batch.graph_features)
    graph = batch.graph_features
    torch.testing.assert_close(out.user, full["user"][graph.global_ids("user", graph.user_index)])
    torch.testing.assert_close(out.item, full["item"][graph.global_ids("item", graph.item_index)])
    plain = build_graph_tower(tiny_log_dataset(), tiny_split.graph, CONFIG).encoder
    with pytest.raises(ValueError, match=r"^GraphEncoder.history_rows: this encoder has no history$"):
        plain.history_rows(tables, {}, tiny_split.graph)


def test_links_are_scored_only_by_an_edge_decoder(tiny_split: TimeSplit, tiny_link_batches: List[GraphBatch]) -> None:
    """With an edge decoder every link (even a single one) gets a logit and the edge loss is their
    BCE; without one, links are ignored: no logit, zero loss."""
    from dataclasses import replace

    import torch.nn.functional as F

    graph = tiny_link_batches[0].graph_features
    torch.manual_seed(0)
    plain = build_graph_tower(tiny_log_dataset(), tiny_split.graph, CONFIG, edge_objective=False).eval()
    out = plain(graph)
    assert graph.link_label.numel() > 0 and out.link_logits.shape == (0,) and out.edge_loss.item() == 0.0
    scorer = build_graph_tower(tiny_log_dataset(), tiny_split.graph, CONFIG, edge_objective=True).eval()
    one_link = replace(graph, link_index=graph.link_index[:, :1], link_label=graph.link_label[:1])
    for links in (graph, one_link):
        out = scorer(links)
        assert out.link_logits.shape == links.link_label.shape
        torch.testing.assert_close(out.edge_loss, F.binary_cross_entropy_with_logits(out.link_logits, links.link_label))
        assert out.edge_loss.item() > 0


def test_node_rows_cut_each_table_to_its_nodes_and_pad_only_the_gradient() -> None:
    values = torch.randn(5, 12, requires_grad=True)  # stride 5, three tables of width 4
    pooled = KeyedTensor(keys=["item", "user", "tag"], length_per_key=[4, 4, 4], values=values)
    rows = node_rows(pooled, {"user": 5, "item": 2, "tag": 3})  # in another order than the tables
    assert {t: tuple(x.shape) for t, x in rows.items()} == {"item": (2, 4), "user": (5, 4), "tag": (3, 4)}
    torch.testing.assert_close(rows["user"], values[:5, 4:8])
    (rows["item"].sin().sum() + rows["user"].cos().sum()).backward()  # "tag" unused: no gradient of its own
    expected = torch.zeros(5, 12)
    expected[:2, :4] = values[:2, :4].detach().cos()
    expected[:, 4:8] = -values[:, 4:8].detach().sin()
    torch.testing.assert_close(values.grad, expected)


def test_frozen_node_tables_get_no_gradient_and_the_gnn_still_trains(tiny_split, tiny_batches) -> None:
    """``freeze_node_tables``: the same embeddings, no gradient into the tables, the GNN's as before."""
    from dataclasses import replace

    batch = tiny_batches[0]
    grads = {}
    for frozen in (False, True):
        torch.manual_seed(0)
        tower = build_graph_tower(tiny_log_dataset(), tiny_split.graph, CONFIG, freeze_node_tables=frozen).eval()
        out = tower(batch.graph_features)
        (out.user.sum() + out.item.square().sum()).backward()
        tables = [p.grad for p in tower.node_embeddings.parameters()]
        gnn = {n: p.grad for n, p in tower.encoder.gnn.named_parameters() if p.grad is not None}
        grads[frozen] = (out.user.detach(), tables, gnn)
    (user, tables, gnn), (frozen_user, frozen_tables, frozen_gnn) = grads[False], grads[True]
    torch.testing.assert_close(frozen_user, user)
    assert all(g is not None and g.abs().sum() > 0 for g in tables)
    assert all(g is None for g in frozen_tables)
    assert frozen_gnn.keys() == gnn.keys() and len(gnn) > 4
    for name, g in gnn.items():
        torch.testing.assert_close(frozen_gnn[name], g, msg=name)
    with pytest.raises(ValueError, match="freeze_node_tables .* needs warm_start=True"):
        replace(CONFIG, freeze_node_tables=True)

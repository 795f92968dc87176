import dataclasses

import pytest
import torch

from conftest import tiny_log_dataset
from torchrec_gnn.models.builder import ModelConfig, build_graph_dlrm
from torchrec_gnn.models.graph_dlrm import GraphDLRMTrain, RankerConfig
from torchrec_gnn.modules.gfae import GFAEConfig
from torchrec_gnn.modules.gnn import GNNConfig

CONFIG = ModelConfig(embedding_dim=8, node_embedding_dim=8, gnn=GNNConfig(hidden_channels=12),
                     ranker=RankerConfig(dense_arch_hidden_sizes=[16], over_arch_layer_sizes=[32, 16]))


def build(split, **changes) -> GraphDLRMTrain:
    torch.manual_seed(0)
    ranker = dataclasses.replace(CONFIG.ranker, **{k: v for k, v in changes.items() if hasattr(CONFIG.ranker, k)})
    model_changes = {k: v for k, v in changes.items() if not hasattr(CONFIG.ranker, k)}
    return build_graph_dlrm(tiny_log_dataset(), split.graph, dataclasses.replace(CONFIG, ranker=ranker, **model_changes))


def test_forward_contract(tiny_split, tiny_batches) -> None:
    model = build(tiny_split)
    batch = tiny_batches[0]
    losses, (detached, outputs, labels) = model(batch)
    assert losses.shape == (3,) and model.loss_names == ["click", "stay", "gfae"]
    assert outputs.shape == (batch.batch_size, 2)
    assert torch.equal(torch.isnan(labels), ~batch.label_mask) and bool((~batch.label_mask).any())
    assert torch.equal(labels[batch.label_mask], batch.labels[batch.label_mask])
    assert not detached.requires_grad and bool(torch.isfinite(losses).all())


@pytest.mark.parametrize("task", [0, 1, 2])
def test_every_loss_reaches_the_gnn_and_the_sampled_node_rows(tiny_split, tiny_batches, task) -> None:
    model = build(tiny_split)
    batch = tiny_batches[0]
    losses, _ = model(batch)
    losses[task].backward()
    tower = model.model.graph_tower
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tower.shared_parameters())
    for node_type in ("user", "item"):
        weight = tower.node_embeddings.embedding_bags[f"node_{node_type}"].weight
        rows_with_grad = set(weight.grad.abs().sum(1).nonzero().flatten().tolist())
        sampled = set(batch.graph_features.node_ids[node_type].values().tolist())
        assert rows_with_grad and rows_with_grad <= sampled


def test_fusion_levels_change_the_documented_shapes(tiny_split, tiny_batches) -> None:
    full = build(tiny_split)
    no_input = build(tiny_split, input_fusion=False)
    no_prehead = build(tiny_split, prehead_fusion="none")
    no_graph = build(tiny_split, use_graph=False)
    f = 3  # sparse features of the tiny dataset
    assert [m.model.interaction_features for m in (full, no_input, no_prehead, no_graph)] == [f + 2, f, f + 2, f]
    heads_in = [m.model.task_heads.in_features for m in (full, no_input, no_prehead, no_graph)]
    assert heads_in == [16 + 2 * 12, 16 + 2 * 12, 16, 16]
    assert no_graph.model.graph_tower is None and no_graph.loss_names == ["click", "stay"]  # no tower losses
    gated = build(tiny_split, prehead_fusion="gated")
    assert gated(tiny_batches[0])[0].shape == (3,)


def test_dcn_interaction(tiny_split, tiny_batches) -> None:
    model = build(tiny_split, interaction="dcn")
    losses, _ = model(tiny_batches[0])
    assert bool(torch.isfinite(losses).all())


def test_projection_interaction(tiny_split, tiny_batches) -> None:
    model = build(tiny_split, interaction="projection", projection_branch1_layer_sizes=[24, 16],
                  projection_branch2_layer_sizes=[24])
    losses, _ = model(tiny_batches[0])
    assert bool(torch.isfinite(losses).all())
    assert model.model.over_arch._mlp[0]._linear.in_features == 8 + 2 * 3  # D + F1 * F2 (16 / 8, 24 / 8)
    with pytest.raises(ValueError, match=r"projection branches must end in a multiple of D = 8, got \[20\]"):
        build(tiny_split, interaction="projection", projection_branch1_layer_sizes=[20])


def _stock_model(kind: str):
    """A TorchRec DLRM of ``kind`` over the tiny data's sparse features (D = 8, 4 dense inputs)."""
    from torchrec.models.dlrm import DLRM, DLRM_DCN, DLRM_Projection
    from torchrec.modules.embedding_configs import EmbeddingBagConfig
    from torchrec.modules.embedding_modules import EmbeddingBagCollection

    dataset = tiny_log_dataset()
    ebc = EmbeddingBagCollection(tables=[
        EmbeddingBagConfig(name=f"t_{f}", num_embeddings=n, embedding_dim=8, feature_names=[f])
        for f, n in dataset.sparse_cardinality.items()
    ])
    common = dict(embedding_bag_collection=ebc, dense_in_features=len(dataset.dense_names),
                  dense_arch_layer_sizes=[12, 8], over_arch_layer_sizes=[16, 1])
    if kind == "dcn":
        return DLRM_DCN(**common, dcn_num_layers=3, dcn_low_rank_dim=5)
    if kind == "projection":
        return DLRM_Projection(**common, interaction_branch1_layer_sizes=[24, 16], interaction_branch2_layer_sizes=[32])
    return DLRM(**common)


@pytest.mark.parametrize("kind", ["dot", "dcn", "projection"])
def test_from_dlrm_keeps_the_interaction(tiny_split, tiny_batches, kind) -> None:
    from torchrec.models.dlrm import InteractionArch, InteractionDCNArch, InteractionProjectionArch

    from torchrec_gnn.models.graph_dlrm import GraphDLRM

    stock = _stock_model(kind)
    tower = build(tiny_split).model.graph_tower
    model = GraphDLRM.from_dlrm(stock, tiny_log_dataset().tasks, tower, CONFIG.ranker)
    assert model.dense_arch is stock.dense_arch  # reused with its weights
    assert model.config.dense_arch_hidden_sizes == [12]
    expected = {"dot": InteractionArch, "dcn": InteractionDCNArch, "projection": InteractionProjectionArch}[kind]
    assert type(model.inter_arch) is expected
    features = model.interaction_features  # the F sparse features + 2 graph features
    if kind == "dcn":  # same number of cross layers and low rank, sized for the grown input
        kernels = [p for n, p in model.inter_arch.crossnet.named_parameters() if n.startswith("W_kernels")]
        assert len(kernels) == 3 and kernels[0].shape == ((features + 1) * 8, 5)
    if kind == "projection":  # same branch sizes, inputs grown by the graph features
        sizes = [[p.shape for p in b.parameters() if p.dim() == 2]
                 for b in (model.inter_arch.interaction_branch1, model.inter_arch.interaction_branch2)]
        assert sizes == [[(24, (features + 1) * 8), (16, 24)], [(32, (features + 1) * 8)]]
    batch = tiny_batches[0]
    outputs, _ = model(batch.dense_features, batch.sparse_features, batch.graph_features)
    assert outputs.shape == (tiny_batches[0].batch_size, 2) and bool(torch.isfinite(outputs).all())
    # It trains: the task losses fall over a few passes on the same batches.
    train = GraphDLRMTrain(model)
    optimizer = torch.optim.Adam(train.parameters(), lr=1e-2)
    totals = []
    for _ in range(4):
        for batch in tiny_batches[:4]:
            losses, _ = train(batch)
            optimizer.zero_grad()
            losses.sum().backward()
            optimizer.step()
            totals.append(float(losses[:2].detach().sum()))
    assert sum(totals[-4:]) < 0.95 * sum(totals[:4]), totals


def test_from_dlrm_refuses_other_models() -> None:
    from torchrec_gnn.models.graph_dlrm import GraphDLRM

    with pytest.raises(TypeError, match=r"Linear is not a torchrec.models.dlrm DLRM, DLRM_DCN or DLRM_Projection"
                                        r".*GraphEmbeddings.join"):
        GraphDLRM.from_dlrm(torch.nn.Linear(2, 2), tiny_log_dataset().tasks, None)


def test_no_dense_features_read_a_constant_input(tiny_split, tiny_batches) -> None:
    """ID-only data (no dense feature): the dense slot is one learned vector, and it trains."""
    dataset = dataclasses.replace(tiny_log_dataset(), dense_names=[])
    torch.manual_seed(0)
    model = build_graph_dlrm(dataset, tiny_split.graph, CONFIG)
    batch = dataclasses.replace(tiny_batches[0], dense_features=tiny_batches[0].dense_features[:, :0])
    dense = model.model.dense_arch(torch.ones(batch.batch_size, 1))
    assert torch.equal(dense, dense[:1].expand_as(dense))  # the same vector for every example
    losses, (_, outputs, _) = model(batch)
    assert outputs.shape == (batch.batch_size, 2) and bool(torch.isfinite(outputs).all())
    losses.sum().backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.model.dense_arch.parameters())


def test_deterministic_for_a_seed(tiny_split, tiny_batches) -> None:
    runs = []
    for _ in range(2):
        model = build(tiny_split)
        torch.manual_seed(1)
        runs.append(model(tiny_batches[1])[0])
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)


def test_eval_mode_has_no_gfae_loss(tiny_split, tiny_batches) -> None:
    model = build(tiny_split).eval()
    assert model(tiny_batches[0])[0][-1].item() == 0.0


def test_node_tables_must_cover_the_graph(tiny_split) -> None:
    tower = build(tiny_split).model.graph_tower
    tower.check_num_nodes(tiny_split.graph.num_nodes)
    with pytest.raises(ValueError, match=r"'user': \"table 'node_user' has 40 rows, the graph 41 nodes\""):
        tower.check_num_nodes({**tiny_split.graph.num_nodes, "user": 41})


@pytest.mark.parametrize("node_init", ["torchrec", "fan_in"])
def test_node_tables_start_at_the_configured_scale(tiny_split, node_init: str) -> None:
    tables = build(tiny_split, node_init=node_init).model.graph_tower.node_embeddings
    for config in tables.embedding_bag_configs():
        bound = 8**-0.5 if node_init == "fan_in" else config.num_embeddings**-0.5  # TorchRec's default
        weight = tables.embedding_bags[config.name].weight
        assert float(weight.abs().max()) <= bound
        if weight.numel() >= 100:  # uniform on the whole interval, not a corner of it
            assert float(weight.abs().max()) > 0.8 * bound


def test_unknown_node_init_is_refused() -> None:
    with pytest.raises(ValueError, match=r"node_init must be one of \('torchrec', 'fan_in'\), got 'normal'"):
        dataclasses.replace(CONFIG, node_init="normal")


EDGE = GFAEConfig(edge_objective=True)


def test_edge_objective_adds_its_own_loss(tiny_split, tiny_link_batches, tiny_batches) -> None:
    model = build(tiny_split, gfae=EDGE)
    assert model.loss_names == ["click", "stay", "gfae", "edge"]
    losses, _ = model(tiny_link_batches[0])
    assert losses.shape == (4,) and losses[-1] > 0
    # The scaled dot product of an untrained tower scores links near chance: BCE near log 2.
    assert 0.3 < losses[-1].item() < 1.5
    assert model(tiny_batches[0])[0][-1].item() == 0.0  # a batch without links (evaluation)
    assert build(tiny_split, gfae=GFAEConfig(edge_objective=True, edge_decoder="mlp"))(tiny_link_batches[0])[0].shape == (4,)


def test_edge_loss_reaches_the_gnn_and_only_the_sampled_node_rows(tiny_split, tiny_link_batches) -> None:
    model = build(tiny_split, gfae=EDGE, use_gfae=False)
    batch = tiny_link_batches[0]
    losses, _ = model(batch)
    losses[-1].backward()
    tower = model.model.graph_tower
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in tower.shared_parameters())
    for node_type in ("user", "item"):
        weight = tower.node_embeddings.embedding_bags[f"node_{node_type}"].weight
        rows_with_grad = set(weight.grad.abs().sum(1).nonzero().flatten().tolist())
        assert rows_with_grad and rows_with_grad <= set(batch.graph_features.node_ids[node_type].values().tolist())
    # The ranker's own parameters get nothing from the edge loss.
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.model.task_heads.parameters())

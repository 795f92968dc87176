import pytest
import torch

from torchrec_gnn.modules.gfae import GFAE, GFAEConfig
from torchrec_gnn.modules.gnn import GNNConfig, HeteroGNN

EDGE_TYPES = [("user", "watches", "item"), ("item", "rev_watches", "user")]


def test_mask_replaces_a_fixed_count_of_candidate_rows() -> None:
    gfae = GFAE(4, 8, {"user": 4}, GFAEConfig(mask_rate=0.25))
    with torch.no_grad():
        gfae.mask_token["user"].fill_(7.0)
    x = {"user": torch.zeros(10, 4), "item": torch.ones(3, 4)}
    masked, rows = gfae.mask(x, {"user": 8}, torch.Generator().manual_seed(0))
    assert rows["user"].numel() == 2 and bool((rows["user"] < 8).all())
    assert torch.equal(masked["user"][rows["user"]], torch.full((2, 4), 7.0))
    untouched = torch.ones(10, dtype=torch.bool)
    untouched[rows["user"]] = False
    assert torch.equal(masked["user"][untouched], torch.zeros(8, 4))
    assert masked["item"] is x["item"] and "item" not in rows
    _, rows_small = gfae.mask(x, {"user": 1})
    assert rows_small["user"].numel() == 1  # at least one row, so the decoder always trains


def test_scaled_cosine_and_mse_losses() -> None:
    gfae = GFAE(2, 2, {"user": 2}, GFAEConfig(loss="sce", gamma=2.0))
    gfae.decoders["user"] = torch.nn.Identity()
    h = {"user": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}
    target = {"user": torch.tensor([[1.0, 0.0], [1.0, 0.0]])}
    # row 0: cos = 1 -> 0; row 1: cos = 0 -> 1; mean of (1 - cos)^2 = 0.5
    assert gfae.loss(h, target, {"user": torch.tensor([0, 1])}).item() == pytest.approx(0.5)
    gfae.config = GFAEConfig(loss="mse")
    assert gfae.loss(h, target, {"user": torch.tensor([1])}).item() == pytest.approx(1.0)


def test_loss_falls_when_features_are_predictable_from_neighbours() -> None:
    """Each user's feature is the mean of its items' features: masking it, the GNN can recover it."""
    torch.manual_seed(0)
    n_user, n_item, d = 64, 48, 6
    item_x = torch.randn(n_item, d)
    src = torch.randint(0, n_item, (n_user * 4,))
    dst = torch.arange(n_user).repeat_interleave(4)
    user_x = torch.zeros(n_user, d).index_add_(0, dst, item_x[src]) / 4
    edges = {EDGE_TYPES[1]: torch.stack([src, dst]), EDGE_TYPES[0]: torch.stack([dst, src])}
    gnn = HeteroGNN.from_config(["user", "item"], EDGE_TYPES, d, GNNConfig(hidden_channels=32, num_layers=1, dropout=0.0, trim=False))
    gfae = GFAE(d, 32, {"user": d}, GFAEConfig(mask_rate=0.5))
    optimizer = torch.optim.Adam([*gnn.parameters(), *gfae.parameters()], lr=1e-2)
    x = {"user": user_x, "item": item_x}
    losses = []
    for step in range(150):
        masked, rows = gfae.mask(x, {"user": n_user}, torch.Generator().manual_seed(step))
        loss = gfae.loss(gnn(masked, edges), {"user": user_x}, rows)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.3 * first, (first, last)


def test_config_errors_and_repr() -> None:
    with pytest.raises(ValueError, match=r"mask_rate must be in \(0, 1\), got 1.5"):
        GFAEConfig(mask_rate=1.5)
    with pytest.raises(ValueError, match="loss must be one of"):
        GFAEConfig(loss="l1")
    gfae = GFAE(4, 8, {"user": 3}, GFAEConfig())
    assert repr(gfae) == "GFAE(4 -> 8, targets={'user': 3}, mask_rate=0.3, loss=sce, edge_decoder=None)"
    with_edges = GFAE(4, 8, {}, GFAEConfig(edge_objective=True))
    assert not with_edges.reconstructs_features and repr(with_edges.edge_decoder) == "EdgeDecoder(channels=8, kind='dot')"
    with pytest.raises(ValueError, match="edge_decoder must be one of"):
        GFAEConfig(edge_decoder="cosine")


def test_losses_by_formula_over_every_masked_node_of_every_type() -> None:
    """Non-degenerate rows, where the two losses and their variants all differ."""
    gfae = GFAE(2, 2, {"user": 2, "item": 2}, GFAEConfig(loss="sce", gamma=3.0))
    gfae.decoders["user"] = gfae.decoders["item"] = torch.nn.Identity()
    h = {"user": torch.tensor([[3.0, 4.0], [1.0, 2.0]]), "item": torch.tensor([[0.0, 2.0]])}
    target = {"user": torch.tensor([[4.0, 3.0], [2.0, 4.0]]), "item": torch.tensor([[1.0, 1.0]])}
    mask = {"user": torch.tensor([0, 1]), "item": torch.tensor([0])}
    cos_item = 2.0 / (2.0 * 2.0**0.5)
    sce = [(1 - 24 / 25) ** 3, 0.0, (1 - cos_item) ** 3]  # user 0, user 1 (parallel), item 0
    assert gfae.loss(h, target, mask).item() == pytest.approx(sum(sce) / 3, rel=1e-5)
    gfae.config = GFAEConfig(loss="mse")
    mse = [(1 + 1) / 2, (1 + 4) / 2, (1 + 1) / 2]
    assert gfae.loss(h, target, mask).item() == pytest.approx(sum(mse) / 3, rel=1e-6)
    # Nothing masked: a zero loss that still belongs to the graph (backward works).
    empty = gfae.loss({"user": h["user"].clone().requires_grad_()}, target, {"user": torch.tensor([], dtype=torch.long)})
    assert empty.item() == 0.0 and empty.requires_grad


def test_config_boundaries() -> None:
    GFAEConfig(gamma=1.0, edge_links_per_batch=1, edge_neg_ratio=0.5, mask_rate=0.01)  # each edge of its range
    for kwargs, match in [
        ({"mask_rate": 0.0}, r"mask_rate must be in \(0, 1\), got 0.0"),
        ({"mask_rate": 1.0}, r"mask_rate must be in \(0, 1\), got 1.0"),
        ({"gamma": 0.5}, "gamma must be >= 1, got 0.5"),
        ({"edge_links_per_batch": 0}, "edge_links_per_batch must be positive, got 0"),
        ({"edge_neg_ratio": 0.0}, "edge_neg_ratio must be positive, got 0.0"),
    ]:
        with pytest.raises(ValueError, match=match):
            GFAEConfig(**kwargs)


def test_mask_skips_absent_types_and_empty_candidates_and_follows_its_generator() -> None:
    gfae = GFAE(3, 4, {"item": 3, "user": 3}, GFAEConfig(mask_rate=0.5))
    x = {"user": torch.arange(18, dtype=torch.float32).view(6, 3)}
    masked, rows = gfae.mask(x, {"user": 6}, torch.Generator().manual_seed(3))  # "item" absent: "user" still masked
    assert set(rows) == {"user"} and rows["user"].numel() == 3
    again, rows_again = gfae.mask(x, {"user": 6}, torch.Generator().manual_seed(3))
    assert torch.equal(rows_again["user"], rows["user"]) and torch.equal(again["user"], masked["user"])
    unmasked, none = gfae.mask(x, {})  # no candidate: nothing masked, inputs unchanged
    assert none["user"].numel() == 0 and torch.equal(unmasked["user"], x["user"])
    assert masked["user"].dtype == x["user"].dtype


def test_decoders_are_nonlinear_and_reset() -> None:
    torch.manual_seed(0)
    gfae = GFAE(4, 8, {"user": 3}, GFAEConfig(decoder_hidden=16, edge_objective=True, edge_decoder="mlp"))
    decoder = gfae.decoders["user"]
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    zero = decoder(torch.zeros(1, 8))
    assert not torch.allclose(decoder(a + b), decoder(a) + decoder(b) - zero, atol=1e-4)  # an MLP, not a linear map
    assert decoder(a).shape == (5, 3)
    with torch.no_grad():
        gfae.mask_token["user"].fill_(1.0)
        weights = [p.clone() for p in decoder.parameters()]
    gfae.reset_parameters()
    assert torch.equal(gfae.mask_token["user"], torch.zeros(4))
    assert not torch.equal(next(decoder.parameters()), weights[0])


def test_edge_decoders_score_pairs() -> None:
    from torchrec_gnn.modules.gfae import EdgeDecoder

    torch.manual_seed(0)
    u, v = torch.randn(6, 8), torch.randn(6, 8)
    torch.testing.assert_close(EdgeDecoder(8, "dot")(u, v), (u * v).sum(-1) / 8**0.5)
    mlp = EdgeDecoder(8, "mlp", hidden=5)
    assert mlp(u, v).shape == (6,) and mlp.mlp[0].out_features == 5
    w1, b1, slope, w2, b2 = (p.detach() for p in mlp.parameters())
    hidden = (u * v) @ w1.T + b1
    torch.testing.assert_close(mlp(u, v), (torch.where(hidden > 0, hidden, slope * hidden) @ w2.T + b2).squeeze(-1))
    before = mlp.mlp[0].weight.clone()
    mlp.reset_parameters()
    assert not torch.equal(mlp.mlp[0].weight, before)
    assert EdgeDecoder.loss(torch.zeros(0), torch.zeros(0)).item() == 0.0
    assert EdgeDecoder.loss(torch.zeros(2), torch.tensor([1.0, 0.0])).item() == pytest.approx(0.6931, abs=1e-4)
    with pytest.raises(ValueError, match=r"EdgeDecoder: kind must be one of .*got 'cosine'"):
        EdgeDecoder(8, "cosine")
    assert GFAE(4, 8, {}, GFAEConfig(edge_objective=True, decoder_hidden=7, edge_decoder="mlp")).edge_decoder.mlp[0].out_features == 7


def test_mask_takes_one_row_when_the_rate_rounds_to_zero() -> None:
    """0.1 * 4 rounds to 0: exactly one row is still masked (not more), so the decoder trains."""
    gfae = GFAE(2, 4, {"user": 2}, GFAEConfig(mask_rate=0.1))
    for seed in range(3):
        _, rows = gfae.mask({"user": torch.zeros(4, 2)}, {"user": 4}, torch.Generator().manual_seed(seed))
        assert rows["user"].numel() == 1 and 0 <= int(rows["user"]) < 4


def test_mask_keeps_the_inputs_dtype_and_device() -> None:
    """Half-precision inputs stay half precision, and the mask lives on the inputs' device (the
    meta device stands in for an accelerator: a CPU tensor mixed in would fail or show)."""
    gfae = GFAE(3, 4, {"user": 3}, GFAEConfig(mask_rate=0.5)).to(torch.bfloat16)
    x = {"user": torch.arange(18, dtype=torch.bfloat16).view(6, 3)}
    masked, rows = gfae.mask(x, {"user": 6}, torch.Generator().manual_seed(0))
    assert masked["user"].dtype == torch.bfloat16
    assert torch.equal(masked["user"][rows["user"]], torch.zeros(3, 3, dtype=torch.bfloat16))
    on_meta = GFAE(3, 4, {"user": 3}, GFAEConfig(mask_rate=0.5)).to("meta")
    masked, rows = on_meta.mask({"user": torch.zeros(6, 3, device="meta")}, {"user": 6}, torch.Generator().manual_seed(0))
    assert rows["user"].device.type == "meta" and rows["user"].shape == (3,)
    assert masked["user"].device.type == "meta" and masked["user"].shape == (6, 3)


def test_loss_skips_a_type_with_nothing_masked_and_counts_the_others() -> None:
    gfae = GFAE(2, 2, {"user": 2, "item": 2}, GFAEConfig(loss="mse"))
    gfae.decoders["user"] = gfae.decoders["item"] = torch.nn.Identity()
    h = {"user": torch.tensor([[1.0, 0.0]]), "item": torch.tensor([[3.0, 1.0]])}
    target = {"user": torch.tensor([[0.0, 0.0]]), "item": torch.tensor([[1.0, 1.0]])}
    mask = {"user": torch.tensor([], dtype=torch.long), "item": torch.tensor([0])}  # empty type first
    assert gfae.loss(h, target, mask).item() == pytest.approx(2.0)  # item only: (4 + 0) / 2


def test_scaled_cosine_error_is_scale_free() -> None:
    """Shrinking predictions or targets (even to norms below 1) leaves the error unchanged."""
    gfae = GFAE(2, 2, {"user": 2}, GFAEConfig(loss="sce", gamma=2.0))
    gfae.decoders["user"] = torch.nn.Identity()
    h, target = torch.tensor([[3.0, 4.0], [0.0, 2.0]]), torch.tensor([[4.0, 3.0], [1.0, 1.0]])
    rows = {"user": torch.tensor([0, 1])}
    expected = ((1 - 24 / 25) ** 2 + (1 - 2**-0.5) ** 2) / 2
    for scale_h, scale_target in [(1.0, 1.0), (1e-2, 1.0), (1.0, 1e-3), (1e-2, 1e-2)]:
        loss = gfae.loss({"user": h * scale_h}, {"user": target * scale_target}, rows)
        assert loss.item() == pytest.approx(expected, rel=1e-4), (scale_h, scale_target)


def test_edge_decoder_defaults_to_a_scaled_dot_product_and_a_64_wide_mlp() -> None:
    from torchrec_gnn.modules.gfae import EdgeDecoder

    u, v = torch.tensor([[1.0, 2.0, 0.0, 1.0]]), torch.tensor([[2.0, 1.0, 5.0, 0.0]])
    default = EdgeDecoder(4)
    assert default.kind == "dot" and default.mlp is None
    torch.testing.assert_close(default(u, v), torch.tensor([4.0 / 2.0]))
    assert EdgeDecoder(4, "mlp").mlp[0].out_features == 64

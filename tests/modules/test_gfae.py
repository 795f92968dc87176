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
    gnn = HeteroGNN(["user", "item"], EDGE_TYPES, d, GNNConfig(hidden_channels=32, num_layers=1, dropout=0.0, trim=False))
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

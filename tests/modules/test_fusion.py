import torch

from torchrec_gnn.modules.fusion import ConcatFusionArch, GatedFusionArch, InputFusionArch


def test_input_fusion_adds_two_features() -> None:
    fusion = InputFusionArch(graph_channels=6, embedding_dim=4)
    out = fusion(torch.randn(3, 6), torch.randn(3, 6))
    assert out.shape == (3, 2, 4)
    assert repr(fusion) == "InputFusionArch(6 -> 2 x 4)"


def test_concat_and_gated_prehead_fusion() -> None:
    r, u, i = torch.randn(5, 10), torch.randn(5, 6), torch.randn(5, 6)
    concat = ConcatFusionArch(6, 10)
    assert concat.out_channels == 22
    assert torch.equal(concat(r, u, i), torch.cat([r, u, i], dim=1))
    gated = GatedFusionArch(6, 10)
    out = gated(r, u, i)
    assert out.shape == (5, 22) and torch.equal(out[:, :10], r)
    # The gate is a sigmoid: graph channels are scaled into (0, 1) times their value.
    ratio = out[:, 10:] / torch.cat([u, i], dim=1)
    assert bool(((ratio > 0) & (ratio < 1)).all())
    assert repr(concat) == "ConcatFusionArch(10 + 2 x 6 -> 22)"


def test_gate_starts_near_one_half() -> None:
    """A fresh gate passes about half of every graph channel (its documented start), so the
    heads first see the graph at a known, moderate scale."""
    torch.manual_seed(0)
    fusion = GatedFusionArch(graph_channels=12, representation_channels=16)
    representation, user, item = torch.randn(256, 16), torch.randn(256, 12), torch.randn(256, 12)
    out = fusion(representation, user, item).detach()
    gate = out[:, 16:] / torch.cat([user, item], dim=1)
    assert 0.35 < float(gate.min()) and float(gate.max()) < 0.65
    assert torch.equal(fusion.gate.bias, torch.zeros(24))

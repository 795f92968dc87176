import pytest
import torch

from torchrec_gnn.modules.utils import IntegerMaskDropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_drops_a_share_p_and_keeps_the_mean(p: float) -> None:
    torch.manual_seed(0)
    x = torch.rand(1001, 999) + 0.5  # odd element count: the last 64-bit draw is only partly used
    y = IntegerMaskDropout(p)(x)
    dropped = y == 0
    assert abs(dropped.float().mean().item() - p) < 0.003  # 1M Bernoulli(p) draws: std < 5e-4
    # p is rounded to a multiple of 2**-16, and the scale with it
    torch.testing.assert_close(y[~dropped], x[~dropped] / (1 - p), rtol=1e-4, atol=0)
    assert abs(y.mean().item() / x.mean().item() - 1) < 0.01
    rows, cols = dropped.float().mean(1), dropped.float().mean(0)  # no lane or row left out
    assert rows.min() > p - 0.07 and rows.max() < p + 0.07 and cols.min() > p - 0.07 and cols.max() < p + 0.07


def test_dropout_is_seeded_differentiable_and_off_in_eval() -> None:
    dropout = IntegerMaskDropout(0.3)
    x = torch.randn(64, 16, requires_grad=True)
    torch.manual_seed(1)
    first = dropout(x)
    torch.manual_seed(1)
    assert torch.equal(dropout(x), first)
    assert not torch.equal(dropout(x), first)  # the next draw differs
    first.sum().backward()
    torch.testing.assert_close(x.grad, (first != 0).float() / 0.7, rtol=1e-4, atol=0)
    dropout.eval()
    assert dropout(x) is x
    assert torch.equal(IntegerMaskDropout(1.0)(x), torch.zeros_like(x))
    assert torch.equal(IntegerMaskDropout(0.0)(x), x)

import copy
import io
import math
from typing import List, Tuple

import pytest
import torch
from torch import nn

from torchrec_gnn.train.balancing import (
    BalancerConfig,
    FixedWeights,
    GradNorm,
    UncertaintyWeighting,
    build_balancer,
)

# Two tasks on a shared layer W (1, 2): L_i = c_i * (W . x_i)^2, so dL_i/dW = 2 c_i (W . x_i) x_i
# and ||dL_i/dW|| = 2 c_i |W . x_i| ||x_i||.
X = [(1.0, 2.0), (3.0, -1.0)]
C = [0.5, 2.0]


def two_task_losses(w_layer: Tuple[float, float]) -> Tuple[nn.Parameter, torch.Tensor]:
    shared = nn.Parameter(torch.tensor([w_layer], dtype=torch.float64))
    losses = torch.stack([c * (shared @ torch.tensor(x, dtype=torch.float64)).pow(2).sum() for c, x in zip(C, X)])
    return shared, losses


def hand_gradnorm_step(
    weights: List[float], w_layer: Tuple[float, float], initial: List[float], alpha: float, lr: float
) -> Tuple[List[float], List[float], List[float], float]:
    """One GradNorm update with SGD written out by hand: (new weights, G, r, L_grad)."""
    dots = [w_layer[0] * x[0] + w_layer[1] * x[1] for x in X]
    values = [c * d * d for c, d in zip(C, dots)]
    norms = [2 * c * abs(d) * math.hypot(*x) for c, d, x in zip(C, dots, X)]
    g = [w * n for w, n in zip(weights, norms)]
    g_bar = sum(g) / 2
    ratios = [v / v0 for v, v0 in zip(values, initial)]
    r = [q / (sum(ratios) / 2) for q in ratios]
    targets = [g_bar * ri**alpha for ri in r]
    grad_loss = sum(abs(gi - ti) for gi, ti in zip(g, targets))
    # d|G_i - target_i| / dw_i = sign(G_i - target_i) * ||dL_i/dW||  (target is a constant)
    dw = [math.copysign(1.0, gi - ti) * n for gi, ti, n in zip(g, targets, norms)]
    stepped = [max(w - lr * d, 1e-4) for w, d in zip(weights, dw)]
    return [2 * s / sum(stepped) for s in stepped], g, r, grad_loss


def test_gradnorm_matches_hand_computed_two_task_example() -> None:
    alpha, lr = 1.5, 0.1
    balancer = GradNorm(2, alpha=alpha, lr=lr, optimizer_cls=torch.optim.SGD).double()
    weights = [1.0, 1.0]
    initial: List[float] = []
    for w_layer in [(0.3, -0.2), (0.1, 0.4), (-0.5, 0.2)]:
        shared, losses = two_task_losses(w_layer)
        initial = initial or losses.tolist()  # L_i(0): the losses of the first step
        logs = balancer.step(losses, [shared])
        weights, g, r, grad_loss = hand_gradnorm_step(weights, w_layer, initial, alpha, lr)
        assert balancer.weights().tolist() == pytest.approx(weights, abs=1e-6)
        assert [logs["grad_norm_0"], logs["grad_norm_1"]] == pytest.approx(g, abs=1e-6)
        assert [logs["inverse_rate_0"], logs["inverse_rate_1"]] == pytest.approx(r, abs=1e-6)
        assert logs["grad_loss"] == pytest.approx(grad_loss, abs=1e-6)
        assert logs["active_losses"] == 2
    assert weights[0] != pytest.approx(1.0, abs=1e-2)  # the example really moved the weights
    # The main backward sees the updated weights, detached.
    total = balancer.combine(losses)
    total.backward()
    assert balancer.loss_weights.grad is None
    assert float(total.detach()) == pytest.approx(sum(w * v for w, v in zip(weights, losses.tolist())))


def test_gradnorm_default_adam_first_step_moves_each_weight_by_lr() -> None:
    # Adam's first step is lr * g / (|g| + eps) = lr * sign(g).
    balancer = GradNorm(2, alpha=1.5, lr=0.025).double()
    shared, losses = two_task_losses((0.3, -0.2))
    balancer.step(losses, [shared])
    norms = [2 * c * abs(0.3 * x[0] - 0.2 * x[1]) * math.hypot(*x) for c, x in zip(C, X)]
    signs = [math.copysign(1.0, n - sum(norms) / 2) for n in norms]
    stepped = [1 - 0.025 * s for s in signs]
    assert balancer.weights().tolist() == pytest.approx([2 * s / sum(stepped) for s in stepped], abs=1e-6)


def test_weights_stay_positive_and_sum_to_num_losses() -> None:
    torch.manual_seed(0)
    layer, heads = nn.Linear(3, 4), nn.ModuleList(nn.Linear(4, 1) for _ in range(4))
    balancer = GradNorm(4, alpha=3.0, lr=0.5)
    for _ in range(60):
        h = layer(torch.randn(8, 3)).tanh()
        scales = torch.rand(4) * 10 ** torch.randint(-3, 3, (4,))
        losses = torch.stack([head(h).pow(2).mean() for head in heads]) * scales
        balancer.step(losses, layer.parameters())
        w = balancer.weights()
        assert torch.isfinite(w).all() and (w > 0).all()
        assert float(w.sum()) == pytest.approx(4.0, abs=1e-5)


def test_weight_of_the_slower_task_grows() -> None:
    # L_i = c_i(t) + W . x: both gradients are x (equal norms), the values are c_i(t) since
    # W . x = 0. Task 0 falls fast, task 1 slowly, so r_1 > r_0 and w_1 must rise.
    shared = nn.Parameter(torch.tensor([[2.0, -1.0]]))
    x = torch.tensor([1.0, 2.0])
    balancer = GradNorm(2)
    history = []
    for t in range(20):
        losses = torch.stack([0.5**t + (shared @ x).sum(), 0.95**t + (shared @ x).sum()])
        balancer.step(losses, [shared])
        history.append(balancer.weights())
    assert all(b[1] > a[1] for a, b in zip(history, history[1:]))
    assert float(history[-1][1]) > 1.3 > 0.7 > float(history[-1][0])


def test_update_every_keeps_weights_between_updates() -> None:
    torch.manual_seed(1)
    layer, heads = nn.Linear(3, 4), nn.ModuleList(nn.Linear(4, 1) for _ in range(2))
    balancer = GradNorm(2, update_every=3, lr=0.1)
    history = []
    for t in range(8):
        h = layer(torch.randn(8, 3))
        losses = torch.stack([heads[0](h).pow(2).mean(), heads[1](h).pow(2).mean() * 0.8**t])
        logs = balancer.step(losses, layer.parameters())
        assert ("grad_loss" in logs) == (t % 3 == 0)
        history.append(balancer.weights())
    for t in range(1, 8):
        changed = not torch.equal(history[t], history[t - 1])
        assert changed == (t % 3 == 0), t
    assert int(balancer.num_steps) == 8


def test_losses_without_gradient_do_not_crash_or_produce_nan() -> None:
    shared = nn.Parameter(torch.tensor([[0.5, -1.0]]))
    other = nn.Parameter(torch.tensor(2.0))
    x = torch.tensor([1.0, 3.0])
    balancer = GradNorm(4)
    for t in range(5):
        task = (shared @ x).pow(2).sum() * 0.9**t
        missing_labels = torch.zeros(())  # a task without labels: constant 0, no graph
        disconnected = other.pow(2)  # requires grad but never reaches the shared layer
        late = torch.tensor(float("nan")) if t < 2 else (shared @ x).abs().sum()  # NaN at first
        logs = balancer.step(torch.stack([task, missing_labels, disconnected, late]), [shared])
        assert all(math.isfinite(v) for v in logs.values()), logs
        assert logs["grad_norm_1"] == logs["grad_norm_2"] == logs["inverse_rate_1"] == 0.0
        assert logs["active_losses"] == (1 if t < 2 else 2)
        assert float(balancer.weights().sum()) == pytest.approx(4.0, abs=1e-5)
    # L_i(0) of the late loss is its first finite value (t = 2, |0.5 - 3| = 2.5), not the NaN.
    assert bool(balancer.has_initial_loss[3]) and float(balancer.initial_losses[3]) == pytest.approx(2.5)
    assert not balancer.has_initial_loss[1]
    # No loss with a graph at all (e.g. every task without labels): weights unchanged.
    before = balancer.weights()
    logs = balancer.step(torch.zeros(4), [shared])
    assert logs["active_losses"] == 0
    assert torch.allclose(balancer.weights(), before, rtol=0, atol=1e-6)


def test_fixed_weights_combine() -> None:
    balancer = FixedWeights(3, weights=[1.0, 0.5, 0.1])
    losses = torch.tensor([0.7, 0.2, 1.3], requires_grad=True)
    total = balancer.combine(losses)
    assert float(total.detach()) == pytest.approx(0.7 + 0.1 + 0.13)
    total.backward()
    assert losses.grad.tolist() == pytest.approx([1.0, 0.5, 0.1])
    assert balancer.step(losses) == pytest.approx({"weight_0": 1.0, "weight_1": 0.5, "weight_2": 0.1})
    assert FixedWeights(2).weights().tolist() == [1.0, 1.0]
    assert list(balancer.parameters()) == [] and balancer.state_dict() == {}


def test_uncertainty_weighting_combine_and_gradients() -> None:
    balancer = UncertaintyWeighting(2)
    with torch.no_grad():
        balancer.log_vars.copy_(torch.tensor([0.0, math.log(2.0)]))
    losses = torch.tensor([0.8, 3.0], requires_grad=True)
    total = balancer.combine(losses)
    # exp(-s_i) * L_i + s_i
    assert float(total.detach()) == pytest.approx(0.8 + 0.0 + 3.0 / 2 + math.log(2.0))
    assert balancer.weights().tolist() == pytest.approx([1.0, 0.5])
    total.backward()
    # d/ds_i = 1 - exp(-s_i) * L_i ; d/dL_i = exp(-s_i)
    assert balancer.log_vars.grad.tolist() == pytest.approx([1 - 0.8, 1 - 1.5])
    assert losses.grad.tolist() == pytest.approx([1.0, 0.5])
    assert [p is balancer.log_vars for p in balancer.parameters()] == [True]
    balancer.sync_gradients()  # single process: unchanged
    assert balancer.log_vars.grad.tolist() == pytest.approx([0.2, -0.5])


def _run(balancer: GradNorm, layer: nn.Linear, heads: nn.ModuleList, seed: int, steps: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for t in range(steps):
        h = layer(torch.randn(8, 3, generator=g)).tanh()
        losses = torch.stack([head(h).pow(2).mean() * 0.7 ** (t * i) for i, head in enumerate(heads)])
        balancer.step(losses, layer.parameters())


def test_state_dict_round_trip_resumes_identically() -> None:
    torch.manual_seed(2)
    layer, heads = nn.Linear(3, 4), nn.ModuleList(nn.Linear(4, 1) for _ in range(3))
    original = GradNorm(3, lr=0.05, update_every=2)
    _run(original, layer, heads, seed=0, steps=5)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    assert set(original.state_dict()) == {
        "loss_weights", "initial_losses", "has_initial_loss", "num_steps", "_extra_state"
    }
    resumed = GradNorm(3, lr=0.05, update_every=2)
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    assert torch.equal(resumed.weights(), original.weights())
    _run(original, layer, heads, seed=1, steps=4)
    _run(resumed, layer, heads, seed=1, steps=4)
    assert torch.equal(resumed.weights(), original.weights())
    assert torch.equal(resumed.initial_losses, original.initial_losses)
    assert int(resumed.num_steps) == int(original.num_steps) == 9
    adam, adam_resumed = original.optimizer.state_dict(), resumed.optimizer.state_dict()
    assert torch.equal(adam["state"][0]["exp_avg_sq"], adam_resumed["state"][0]["exp_avg_sq"])
    # A fresh balancer (no Adam state, new L_i(0)) would not have resumed identically.
    fresh = GradNorm(3, lr=0.05, update_every=2)
    fresh.load_state_dict({**copy.deepcopy(original.state_dict()), "_extra_state": GradNorm(3).get_extra_state()})
    _run(fresh, layer, heads, seed=2, steps=3)
    _run(original, layer, heads, seed=2, steps=3)
    assert not torch.equal(fresh.weights(), original.weights())


def test_factory_and_config() -> None:
    gradnorm = build_balancer("gradnorm", 3, alpha=0.5, lr=0.01, update_every=4)
    assert isinstance(gradnorm, GradNorm) and (gradnorm.alpha, gradnorm.lr, gradnorm.update_every) == (0.5, 0.01, 4)
    assert isinstance(build_balancer("uncertainty", 3), UncertaintyWeighting)
    fixed = BalancerConfig(kind="fixed", weights=[1.0, 2.0]).build(2)
    assert fixed.weights().tolist() == [1.0, 2.0]
    default = BalancerConfig().build(5)  # the config's default updates every 4 steps, the class's every step
    assert isinstance(default, GradNorm) and (default.alpha, default.lr, default.update_every) == (1.5, 0.025, 4)


def test_reprs() -> None:
    assert repr(GradNorm(3)) == "GradNorm(num_losses=3, alpha=1.5, lr=0.025, update_every=1, optimizer=Adam)"
    assert repr(FixedWeights(2, [1.0, 0.5])) == "FixedWeights(num_losses=2, weights=[1.0, 0.5])"
    assert repr(UncertaintyWeighting(4)) == "UncertaintyWeighting(num_losses=4)"


def test_invalid_inputs_raise_clear_errors() -> None:
    balancer = GradNorm(3)
    shared = nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match=r"GradNorm: expected losses of shape \(3,\).*got \(2,\)"):
        balancer.step(shared * 2, [shared])
    with pytest.raises(ValueError, match=r"UncertaintyWeighting: expected losses of shape \(2,\).*got \(2, 1\)"):
        UncertaintyWeighting(2).combine(torch.ones(2, 1))
    with pytest.raises(ValueError, match="GradNorm: step\\(\\) needs shared_parameters"):
        balancer.step(torch.ones(3))
    with pytest.raises(ValueError, match=r"must require grad, got frozen tensors of shapes \[\(2,\)\]"):
        balancer.step(torch.ones(3), [torch.ones(2)])
    with pytest.raises(ValueError, match="GradNorm: alpha must be >= 0, got -0.5"):
        GradNorm(3, alpha=-0.5)
    with pytest.raises(ValueError, match="lr must be > 0, got 0.0; update_every must be an int >= 1, got 0"):
        GradNorm(3, lr=0.0, update_every=0)
    with pytest.raises(ValueError, match="GradNorm: num_losses must be an int >= 1, got 0"):
        GradNorm(0)
    with pytest.raises(ValueError, match=r"FixedWeights: expected 3 weights \(one per loss\), got 2"):
        FixedWeights(3, weights=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"FixedWeights: weights must be finite and >= 0, got \[1.0, -1.0\]"):
        FixedWeights(2, weights=[1.0, -1.0])
    with pytest.raises(
        ValueError, match=r"unknown kind 'gradnrom'; valid kinds: \['fixed', 'gradnorm', 'uncertainty'\]"
    ):
        build_balancer("gradnrom", 3)
    with pytest.raises(ValueError, match=r"kind 'uncertainty' got unknown argument\(s\) \['alpha'\]; valid: \[\]"):
        build_balancer("uncertainty", 3, alpha=1.0)
    # A config lists every problem at once.
    with pytest.raises(ValueError, match=r"BalancerConfig: 3 problem\(s\): kind must be one of .*got 'grad'; "
                       r"weights is only used by kind='fixed'.*; alpha must be >= 0, got -1"):
        BalancerConfig(kind="grad", weights=[1.0], alpha=-1)


def test_boundary_values_are_accepted_and_bools_refused() -> None:
    """The edges of each valid range work (alpha 0 = equal-rate targets, one loss, a zero fixed
    weight); a bool is not an int for counts."""
    shared, losses = two_task_losses((0.3, -0.2))
    balancer = GradNorm(2, alpha=0.0, update_every=1)
    balancer.step(losses, [shared])
    assert torch.isfinite(balancer.weights()).all()
    single = GradNorm(1)
    single.step(losses[:1], [shared])
    assert torch.equal(single.weights(), torch.ones(1))  # one loss: its weight is the whole budget
    fixed = FixedWeights(2, weights=[1.0, 0.0])
    assert float(fixed.combine(torch.tensor([3.0, 5.0]))) == 3.0
    with pytest.raises(ValueError, match="update_every must be an int >= 1, got True"):
        GradNorm(2, update_every=True)
    with pytest.raises(ValueError, match="num_losses must be an int >= 1, got True"):
        GradNorm(True)


def test_gradient_norms_sum_over_every_shared_tensor() -> None:
    """The shared layer split into two tensors gives the same update as one: ||dL_i/dW|| is over
    all of W's entries."""
    balancers = [GradNorm(2, alpha=1.5, lr=0.05, optimizer_cls=torch.optim.SGD).double() for _ in range(2)]
    for w_layer in [(0.4, -0.3), (0.1, 0.7), (-0.5, 0.2)]:
        shared, losses = two_task_losses(w_layer)
        balancers[0].step(losses, [shared])
        w0 = nn.Parameter(torch.tensor([w_layer[0]], dtype=torch.float64))
        w1 = nn.Parameter(torch.tensor([w_layer[1]], dtype=torch.float64))
        split = torch.stack([c * (w0 * x[0] + w1 * x[1]).pow(2).sum() for c, x in zip(C, X)])
        balancers[1].step(split, [w0, w1])
    torch.testing.assert_close(balancers[1].weights(), balancers[0].weights())
    assert not torch.allclose(balancers[0].weights(), torch.ones(2, dtype=torch.float64))


def test_a_single_active_loss_is_its_own_target_and_unused_shared_tensors_are_allowed() -> None:
    """With one loss reaching the shared layer, its gradient norm is the mean norm and its rate
    the mean rate: the target is its own norm, L_grad is 0 and the weights stay. A shared tensor
    that no loss reaches adds nothing (and is no error)."""
    shared, _ = two_task_losses((0.3, -0.2))
    unused = nn.Parameter(torch.ones(3, dtype=torch.float64))
    for step in range(2):
        balancer = GradNorm(2, alpha=1.5, lr=0.1, optimizer_cls=torch.optim.SGD).double()
        losses = torch.stack([C[0] * (shared @ torch.tensor(X[0], dtype=torch.float64)).pow(2).sum(),
                              torch.tensor(0.5, dtype=torch.float64)])  # the second loss has no gradient
        logs = balancer.step(losses, [shared, unused] if step else [shared])
        assert logs["active_losses"] == 1 and logs["grad_loss"] == pytest.approx(0.0, abs=1e-12)
        assert balancer.weights().tolist() == pytest.approx([1.0, 1.0])

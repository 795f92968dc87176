import math

import pytest
import torch

from torchrec_gnn.data.dataset import TaskSpec
from torchrec_gnn.modules.heads import TaskHeadsArch, initial_output_bias, task_losses

TASKS = [TaskSpec("click", "binary"), TaskSpec("stay", "regression")]


def test_heads_shape_and_repr() -> None:
    heads = TaskHeadsArch(8, TASKS, [4])
    assert heads(torch.randn(3, 8)).shape == (3, 2)
    assert repr(heads) == "TaskHeadsArch(8 -> [4] -> 1, tasks=[click:binary, stay:regression])"


def test_masked_losses_match_hand_computation() -> None:
    outputs = torch.tensor([[0.0, 1.0], [2.0, 0.0], [-1.0, 3.0]])
    labels = torch.tensor([[1.0, math.e - 1], [0.0, 0.0], [1.0, 999.0]])
    mask = torch.tensor([[True, True], [True, True], [False, False]])
    losses = task_losses(outputs, labels, mask, TASKS)
    bce = (math.log(2) + (2 + math.log1p(math.exp(-2)))) / 2  # -log(sigmoid(0)), -log(1 - sigmoid(2))
    mse = ((1.0 - 1.0) ** 2 + (0.0 - 0.0) ** 2) / 2  # predictions vs log1p(labels)
    assert losses.tolist() == pytest.approx([bce, mse], rel=1e-5)


def test_task_without_labels_gets_zero_and_bad_loss_name() -> None:
    losses = task_losses(torch.randn(2, 2), torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.bool), TASKS)
    assert losses.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="regression_loss must be one of"):
        task_losses(torch.randn(2, 2), torch.zeros(2, 2), torch.ones(2, 2, dtype=torch.bool), TASKS, "l1")



def test_initial_output_bias_matches_hand_computation() -> None:
    nan = float("nan")
    labels = torch.tensor([[1.0, math.e - 1], [0.0, math.exp(3) - 1], [1.0, nan], [-5.0, 0.0]])
    mask = torch.tensor([[True, True], [True, True], [True, False], [False, True]])
    bias = initial_output_bias(labels, mask, TASKS)
    # click: p = 2/3 over the 3 present labels -> logit = log(2); stay: mean(1, 3, 0) = 4/3.
    assert bias.shape == (2,) and bias.dtype == torch.float32
    assert bias.tolist() == pytest.approx([math.log(2), 4 / 3], rel=1e-6)
    # It is the constant output that minimises task_losses (masked NaN zeroed: task_losses would propagate it).
    finite = torch.nan_to_num(labels)
    best = task_losses(bias.expand(4, 2), finite, mask, TASKS)
    for shift in (-0.05, 0.05):
        assert (task_losses((bias + shift).expand(4, 2), finite, mask, TASKS) > best).all()


def test_initial_output_bias_no_label_task_gets_zero_and_rate_is_clamped() -> None:
    labels = torch.tensor([[1.0, 2.0], [1.0, 3.0]])
    mask = torch.tensor([[True, False], [True, False]])
    bias = initial_output_bias(labels, mask, TASKS)
    assert bias[1].item() == 0.0
    assert bias[0].item() == pytest.approx(math.log((1 - 1e-6) / 1e-6), rel=1e-4)  # finite, not inf


def test_initial_output_bias_rejects_bad_labels() -> None:
    mask = torch.ones(3, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"task 'stay' has 2 NaN"):
        initial_output_bias(torch.tensor([[1.0, float("nan")], [0.0, float("nan")], [1.0, 1.0]]), mask, TASKS)
    with pytest.raises(ValueError, match=r"task 'click' has 1 NaN"):
        initial_output_bias(torch.tensor([[float("nan"), 1.0], [0.0, 1.0], [1.0, 1.0]]), mask, TASKS)
    with pytest.raises(ValueError, match=r"regression task 'stay' has 1 negative"):
        initial_output_bias(torch.tensor([[1.0, -1.0], [0.0, 1.0], [1.0, 1.0]]), mask, TASKS)
    with pytest.raises(ValueError, match=r"must both be \(N, 2\)"):
        initial_output_bias(torch.zeros(3, 3), torch.ones(3, 3, dtype=torch.bool), TASKS)


def test_init_output_bias_sets_only_the_bias_in_place() -> None:
    heads = TaskHeadsArch(8, TASKS, [])
    final = [head[-1] for head in heads.heads]
    params = [(f.weight, f.bias) for f in final]
    weights = [f.weight.detach().clone() for f in final]
    bias = torch.tensor([-1.25, 3.5])
    heads.init_output_bias(bias)
    assert torch.equal(heads(torch.zeros(5, 8)), bias.expand(5, 2))  # zero representation -> exactly the bias
    for f, (w, b), w0 in zip(final, params, weights):
        assert f.weight is w and f.bias is b and f.bias.requires_grad  # same parameters, still trainable
        assert torch.equal(f.weight, w0)  # weight untouched
    with pytest.raises(ValueError, match=r"bias must be a \(2,\) tensor"):
        heads.init_output_bias(torch.zeros(3))
    with pytest.raises(ValueError, match=r"bias must be a \(2,\) tensor"):
        heads.init_output_bias(torch.zeros(2, 1))


@pytest.mark.parametrize("layer_sizes,tolerance", [([], 1e-3), ([16], 3e-2)])
def test_initialised_heads_are_no_worse_than_the_constant_predictor(layer_sizes: list, tolerance: float) -> None:
    torch.manual_seed(0)
    n = 512
    labels = torch.stack([(torch.rand(n) < 0.2).float(), torch.expm1(3.0 + 0.5 * torch.randn(n))], dim=1)
    mask = torch.rand(n, 2) < 0.8
    representation = 1e-3 * torch.randn(n, 32)
    bias = initial_output_bias(labels, mask, TASKS)
    constant = task_losses(bias.expand(n, 2), labels, mask, TASKS)

    default = TaskHeadsArch(32, TASKS, layer_sizes)
    initialised = TaskHeadsArch(32, TASKS, layer_sizes)
    initialised.load_state_dict(default.state_dict())
    initialised.init_output_bias(bias)
    with torch.no_grad():
        default_loss = task_losses(default(representation), labels, mask, TASKS)
        init_loss = task_losses(initialised(representation), labels, mask, TASKS)

    assert (init_loss <= constant + tolerance).all(), (init_loss, constant)
    # The default head predicts ~0 for log1p(label) ~ 3: far worse, so this test can fail.
    assert default_loss[1] > 2 * init_loss[1], (default_loss, init_loss)

import math

import pytest
import torch

from torchrec_gnn.data.dataset import TaskSpec
from torchrec_gnn.modules.heads import TaskHeadsArch, task_losses

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

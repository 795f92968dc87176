"""Multi-task heads and their masked losses."""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.profiler import record_function
from torchrec.modules.mlp import MLP

from torchrec_gnn.data.dataset import TaskSpec

REGRESSION_LOSSES = ("mse_log1p", "huber_log1p")


class TaskHeadsArch(nn.Module):
    """One small MLP per task on a shared representation.

    Binary tasks output a logit; regression tasks output a prediction of ``log1p(label)``.

    Args:
        in_features (int): R, width of the shared representation.
        tasks (Sequence[TaskSpec]): the T tasks, in label-column order.
        layer_sizes (List[int]): hidden sizes of each head (may be empty). Default [].

    Example::

        heads = TaskHeadsArch(128, [TaskSpec("click", "binary"), TaskSpec("stay", "regression")], [32])
        outputs = heads(torch.rand(4, 128))   # (4, 2)
    """

    def __init__(self, in_features: int, tasks: Sequence[TaskSpec], layer_sizes: List[int] = ()) -> None:
        super().__init__()
        self.in_features = in_features
        self.tasks = list(tasks)
        self.layer_sizes = list(layer_sizes)
        last = self.layer_sizes[-1] if self.layer_sizes else in_features
        self.heads = nn.ModuleList(
            nn.Sequential(
                MLP(in_features, self.layer_sizes) if self.layer_sizes else nn.Identity(), nn.Linear(last, 1)
            )
            for _ in self.tasks
        )

    def forward(self, representation: torch.Tensor) -> torch.Tensor:
        """
        Args:
            representation (Tensor): (B, R).

        Returns:
            Tensor: (B, T) one output per task.
        """
        with record_function("## task_heads ##"):
            return torch.cat([head(representation) for head in self.heads], dim=1)

    def __repr__(self) -> str:
        names = ", ".join(f"{t.name}:{t.kind}" for t in self.tasks)
        return f"{self.__class__.__name__}({self.in_features} -> {self.layer_sizes} -> 1, tasks=[{names}])"


def task_losses(
    outputs: torch.Tensor,
    labels: torch.Tensor,
    label_mask: torch.Tensor,
    tasks: Sequence[TaskSpec],
    regression_loss: str = "mse_log1p",
) -> torch.Tensor:
    """Per-task mean loss over the examples whose label is present.

    Binary tasks: BCE with logits. Regression tasks: MSE (or Huber) between the output and
    ``log1p(label)`` (labels must be >= 0). A task with no label in the batch gets 0.

    Args:
        outputs (Tensor): (B, T) head outputs.
        labels (Tensor): (B, T) labels (any value where masked).
        label_mask (Tensor): (B, T) bool, True where the label is present.
        tasks (Sequence[TaskSpec]): the T tasks.
        regression_loss (str): ``"mse_log1p"`` (default) or ``"huber_log1p"``.

    Returns:
        Tensor: (T,) losses.
    """
    if regression_loss not in REGRESSION_LOSSES:
        raise ValueError(f"task_losses: regression_loss must be one of {REGRESSION_LOSSES}, got {regression_loss!r}")
    mask = label_mask.to(outputs.dtype)
    per_task = []
    for t, task in enumerate(tasks):
        if task.kind == "binary":
            error = F.binary_cross_entropy_with_logits(outputs[:, t], labels[:, t], reduction="none")
        else:
            target = torch.log1p(labels[:, t].clamp(min=0.0))
            if regression_loss == "mse_log1p":
                error = (outputs[:, t] - target).pow(2)
            else:
                error = F.huber_loss(outputs[:, t], target, reduction="none")
        per_task.append((error * mask[:, t]).sum() / mask[:, t].sum().clamp(min=1.0))
    return torch.stack(per_task)

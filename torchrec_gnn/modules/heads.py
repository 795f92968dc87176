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
BINARY_RATE_EPS = 1e-6


class TaskHeadsArch(nn.Module):
    """One small MLP per task on a shared representation.

    Binary tasks output a logit; regression tasks output a prediction of ``log1p(label)``.
    Each head ends in ``nn.Linear(last, 1)`` with default init, so a fresh regression head
    predicts about 0 whatever the label scale. Call ``init_output_bias(initial_output_bias(...))``
    on the training labels to start every head from the label statistics (the best constant
    output of its loss), so an under-trained head is never worse than the constant predictor.

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

    @torch.no_grad()
    def init_output_bias(self, bias: torch.Tensor) -> None:
        """Set the bias of each head's final Linear to ``bias[t]``, in place.

        Only the bias changes: the final weight keeps its init so gradients still reach the
        representation. The values are ``copy_``-ed into the existing parameters (which may
        already be wrapped by DDP or held by an optimizer); no parameter is replaced.

        Args:
            bias (Tensor): (T,) one output per task, e.g. from ``initial_output_bias``.
        """
        if not isinstance(bias, torch.Tensor) or bias.shape != (len(self.tasks),):
            got = tuple(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__
            raise ValueError(
                f"TaskHeadsArch.init_output_bias: bias must be a ({len(self.tasks)},) tensor, one value per task, "
                f"got {got}"
            )
        if not torch.isfinite(bias).all():
            raise ValueError(f"TaskHeadsArch.init_output_bias: bias must be finite, got {bias.tolist()}")
        for t, head in enumerate(self.heads):
            final = head[-1]
            final.bias.copy_(bias[t].reshape(1).to(device=final.bias.device, dtype=final.bias.dtype))

    def __repr__(self) -> str:
        names = ", ".join(f"{t.name}:{t.kind}" for t in self.tasks)
        return f"{self.__class__.__name__}({self.in_features} -> {self.layer_sizes} -> 1, tasks=[{names}])"


def initial_output_bias(
    labels: torch.Tensor, label_mask: torch.Tensor, tasks: Sequence[TaskSpec]
) -> torch.Tensor:
    """Per task, the constant output that minimises that task's loss over the present labels.

    Regression tasks: the mean of ``log1p(label)`` (labels must be >= 0; the MSE minimiser in log1p space,
    and a good start for Huber). Binary tasks: ``logit(p)`` of the positive rate ``p`` (the mean
    label), with ``p`` clamped to ``[1e-6, 1 - 1e-6]``. A task with no present label gets 0.
    Feed the result to ``TaskHeadsArch.init_output_bias``.

    Args:
        labels (Tensor): (N, T) training labels (any value where masked).
        label_mask (Tensor): (N, T) bool, True where the label is present.
        tasks (Sequence[TaskSpec]): the T tasks, in label-column order.

    Returns:
        Tensor: (T,) on the device of ``labels``, in its dtype if floating point (else the default dtype).

    Raises:
        ValueError: on mismatched shapes, a NaN present label, or a negative present regression label.
    """
    num_tasks = len(tasks)
    if labels.dim() != 2 or labels.shape[1] != num_tasks or label_mask.shape != labels.shape:
        raise ValueError(
            f"initial_output_bias: labels and label_mask must both be (N, {num_tasks}), "
            f"got {tuple(labels.shape)} and {tuple(label_mask.shape)}"
        )
    if label_mask.dtype != torch.bool:
        raise ValueError(f"initial_output_bias: label_mask must be bool, got {label_mask.dtype}")
    dtype = labels.dtype if labels.is_floating_point() else torch.get_default_dtype()
    bias = torch.zeros(num_tasks, dtype=torch.float64, device=labels.device)
    for t, task in enumerate(tasks):
        present = labels[:, t][label_mask[:, t]].to(torch.float64)
        num_nan = int(torch.isnan(present).sum())
        if num_nan:
            raise ValueError(
                f"initial_output_bias: task {task.name!r} has {num_nan} NaN label(s) where label_mask is True"
            )
        if present.numel() == 0:
            continue
        if task.kind == "binary":
            rate = present.mean().clamp(BINARY_RATE_EPS, 1.0 - BINARY_RATE_EPS)
            bias[t] = torch.logit(rate)
        else:
            num_negative = int((present < 0).sum())
            if num_negative:
                raise ValueError(
                    f"initial_output_bias: regression task {task.name!r} has {num_negative} negative label(s) "
                    f"where label_mask is True (min {present.min().item()}); labels must be >= 0"
                )
            bias[t] = torch.log1p(present).mean()
    return bias.to(dtype)


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

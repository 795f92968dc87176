"""A loss-balanced train pipeline: TorchRec's TrainPipelineSparseDist plus a LossBalancer.

Composition, not a subclass: TorchRec's pipeline still owns batching, the early input
distribution of the sharded tables, backward and optimizer steps; this class only supplies its
``custom_model_fwd`` (forward -> balancer update -> weighted total) and an optimizer step that
first settles the balancer's own parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.autograd.profiler import record_function
from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

from torchrec_gnn.data.batch import GraphBatch
from torchrec_gnn.train.balancing import LossBalancer
from torchrec_gnn.train.sharding import unwrap


@dataclass
class StepOutput:
    """What one training step reports (all detached).

    Attributes:
        losses (Tensor): (L,) per-loss values: T tasks, then GFAE.
        weights (Tensor): (L,) the balancer's weights used for this step's total.
        total (Tensor): () the weighted total that was backpropagated.
        outputs (Tensor): (B, T) task outputs.
        labels (Tensor): (B, T) labels.
        balancer_logs (Dict[str, float]): the balancer's own figures (grad norms, ...).
    """

    losses: torch.Tensor
    weights: torch.Tensor
    total: torch.Tensor
    outputs: torch.Tensor
    labels: torch.Tensor
    balancer_logs: Dict[str, float]


class _SyncingOptimizer:
    """The model's optimizer, with the balancer's gradients averaged across ranks first."""

    def __init__(self, optimizer: torch.optim.Optimizer, balancer: LossBalancer) -> None:
        self.optimizer = optimizer
        self.balancer = balancer

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.balancer.sync_gradients()
        self.optimizer.step()


class BalancedTrainPipeline:
    """Train a model whose forward returns one loss per task (+ GFAE) with a loss balancer,
    inside TorchRec's ``TrainPipelineSparseDist``.

    Each ``progress`` call: forward on batch i (its sharded lookups' input distribution already
    started during step i-1), ``balancer.step(losses, shared_parameters)`` (GradNorm's
    gradient norms), backward of ``balancer.combine(losses)``, optimizer step; meanwhile batch
    i+1's input distribution and batch i+2's copy run ahead.

    Args:
        model (nn.Module): the (DMP-wrapped) training model; ``model(batch)`` returns
            ``(losses (L,), (detached losses, outputs, labels))`` like :class:`GraphDLRMTrain`.
        optimizer (torch.optim.Optimizer): the model's optimizer (e.g. TorchRec's
            ``CombinedOptimizer`` of fused table and dense optimizers). It must also hold
            ``balancer.backward_parameters()`` (see :func:`~torchrec_gnn.train.sharding.make_optimizer`).
        balancer (LossBalancer): GradNorm, fixed weights or uncertainty weighting.
        device (torch.device): where batches go.
        shared_parameters (Sequence[nn.Parameter], optional): GradNorm's shared layer; default
            ``model.model.shared_parameters()`` (the GNN's last layer, never a fused table).

    Example::

        pipeline = BalancedTrainPipeline(dmp, optimizer, GradNorm(3), torch.device("cpu"))
        batches = iter(dataloader)
        while True:
            try:
                step = pipeline.progress(batches)
            except StopIteration:
                break
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        balancer: LossBalancer,
        device: torch.device,
        shared_parameters: Optional[Sequence[nn.Parameter]] = None,
    ) -> None:
        self.model = model
        self.balancer = balancer
        self.shared_parameters: List[nn.Parameter] = list(
            shared_parameters if shared_parameters is not None else unwrap(model).model.shared_parameters()
        )
        self.optimizer = _SyncingOptimizer(optimizer, balancer)
        self._last_logs: Dict[str, float] = {}
        self._weights = balancer.weights()
        self._pipeline = TrainPipelineSparseDist(
            model, self.optimizer, device, custom_model_fwd=self._forward  # type: ignore[arg-type]
        )

    def _forward(self, batch: Optional[GraphBatch]) -> Tuple[torch.Tensor, Tuple[torch.Tensor, ...]]:
        losses, (detached, outputs, labels) = self.model(batch)
        if self.model.training:
            with record_function("## loss_balancer ##"):
                self._last_logs = self.balancer.step(losses, self.shared_parameters)
            self._weights = self.balancer.weights()  # the weights this step's total uses
            total = self.balancer.combine(losses)
        else:
            total = losses.sum()
        return total, (detached, outputs, labels, total.detach())

    def detach(self) -> nn.Module:
        """The model with its original (unpipelined) forwards, e.g. for evaluation."""
        return self._pipeline.detach()

    def attach(self, model: nn.Module) -> None:
        """Resume pipelining ``model`` after :meth:`detach`."""
        self._pipeline.attach(model)

    def progress(self, dataloader_iter: Iterator[GraphBatch]) -> StepOutput:
        """Run one step; raises ``StopIteration`` when the iterator is exhausted."""
        detached, outputs, labels, total = self._pipeline.progress(dataloader_iter)
        return StepOutput(
            losses=detached,
            weights=self._weights,
            total=total,
            outputs=outputs,
            labels=labels,
            balancer_logs=dict(self._last_logs),
        )

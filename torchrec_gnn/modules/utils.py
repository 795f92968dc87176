"""Small tensor helpers shared by the modules."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def connected_zero(tensor: Tensor) -> Tensor:
    """A 0-d zero computed from ``tensor``: the value of a loss that has nothing to score in this
    batch. Unlike ``torch.zeros(())`` it keeps every parameter that produced ``tensor`` in the
    autograd graph (with zero gradient), so DistributedDataParallel sees the same parameters
    used on every rank and step."""
    return tensor.sum() * 0.0


class IntegerMaskDropout(nn.Dropout):
    """``nn.Dropout`` whose keep mask on CPU comes from 16-bit random integers.

    torch's CPU dropout draws a float Bernoulli per element, which cost as much as the GNN's
    sparse aggregation (``benchmarks/bench_step.py --profile``: 8 ms of a training step). Here
    one 64-bit draw gives four 16-bit integers, uniform on ``[-2**15, 2**15)``, and an element is
    dropped when its integer is among the lowest ``round(p * 2**16)``: the same mask at a
    fraction of the cost, with ``p`` rounded to a multiple of ``2**-16``. Other devices (and
    ``p = 1``) use torch's fused dropout.
    """

    _LEVELS = 2**16

    def forward(self, x: Tensor) -> Tensor:
        """
        Args:
            x (Tensor): any shape.

        Returns:
            Tensor: ``x``'s shape; in training mode each element zeroed with probability ``p``,
            the others scaled by ``1 / (1 - p)``.
        """
        drop = round(self.p * self._LEVELS)
        if not self.training or drop == 0 or drop == self._LEVELS or x.device.type != "cpu":
            return super().forward(x)
        words = torch.empty(-(-x.numel() // 4), dtype=torch.int64).random_(-(2**63), None)
        draws = words.view(torch.int16)[: x.numel()].view(x.shape)
        keep = draws >= drop - self._LEVELS // 2
        return x * keep.to(x.dtype).mul_(self._LEVELS / (self._LEVELS - drop))

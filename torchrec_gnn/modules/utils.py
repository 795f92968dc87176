"""Small tensor helpers shared by the modules."""

from __future__ import annotations

from torch import Tensor


def connected_zero(tensor: Tensor) -> Tensor:
    """A 0-d zero computed from ``tensor``: the value of a loss that has nothing to score in this
    batch. Unlike ``torch.zeros(())`` it keeps every parameter that produced ``tensor`` in the
    autograd graph (with zero gradient), so DistributedDataParallel sees the same parameters
    used on every rank and step."""
    return tensor.sum() * 0.0

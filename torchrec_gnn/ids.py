"""Id validation at the boundary: ids go straight into embedding tables and numba kernels,
which trust them, so every entry point checks them first and names what was wrong."""

from __future__ import annotations

from typing import Union

import numpy as np
import torch


def first_out_of_range(ids: np.ndarray, count: int) -> int:
    """Position of the first id of ``ids`` (N,) outside ``[0, count)``, -1 if none (one min/max
    pass when all are in range, as they almost always are)."""
    if ids.size == 0 or (int(ids.min()) >= 0 and int(ids.max()) < count):
        return -1
    return int(np.argmax((ids < 0) | (ids >= count)))


def check_ids(where: str, ids: Union[torch.Tensor, np.ndarray], count: int) -> None:
    """Raise naming ``where`` unless ``ids`` (N,) are integers in ``[0, count)``: a ``TypeError``
    for another dtype, a ``ValueError`` with the first id outside and its position (ids go
    straight into tables and numba kernels, which trust them)."""
    array = ids.numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{where}: ids must be integers, got dtype {array.dtype}")
    pos = first_out_of_range(array, count)
    if pos >= 0:
        raise ValueError(f"{where}: id {int(array[pos])} at position {pos} is outside [0, {count})")

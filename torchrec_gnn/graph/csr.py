"""A sampled relation's edges as CSR index arrays (PyG's ``adj_t`` layout) and their transposes.

The (N_dst, N_src) matrix of a relation's ``edge_index`` ``[source; destination]`` has one row
per destination: ``crow`` (N_dst + 1) says where each destination's edges start and ``col``
(E) lists their sources. The sampler emits edges grouped by destination, so ``col`` is
``edge_index[0]`` itself and ``crow`` a count and a cumulative sum. The transpose, (N_src,
N_dst), is what a mean aggregation's backward multiplies by; a counting sort builds it in two
passes over the edges (the sources are integers below N_src), no comparison sort.

Both are built where the data is (the loader's workers, :class:`torchrec_gnn.data.batch.RelationCSR`)
or, for edges that come without them, in the model (:meth:`torchrec_gnn.modules.gnn.HeteroSAGE.adjacency`).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from numba import njit


@njit(cache=True, nogil=True)
def _transpose_kernel(crow: np.ndarray, col: np.ndarray, num_cols: int) -> Tuple[np.ndarray, np.ndarray]:
    """Counting sort of a CSR matrix's entries by column: the transpose's ``(crow, col)``, each
    of its rows listing the original rows in ascending order. Trusts ``0 <= col < num_cols``."""
    crow_t = np.zeros(num_cols + 1, dtype=np.int64)
    for c in col:
        crow_t[c + 1] += 1
    for c in range(num_cols):
        crow_t[c + 1] += crow_t[c]
    fill = crow_t[:-1].copy()
    col_t = np.empty(col.shape[0], dtype=np.int64)
    for r in range(crow.shape[0] - 1):
        for k in range(crow[r], crow[r + 1]):
            c = col[k]
            col_t[fill[c]] = r
            fill[c] += 1
    return crow_t, col_t


def destination_pointers(edge_index: torch.Tensor, num_src: int, num_dst: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The CSR index arrays of a relation's (N_dst, N_src) matrix.

    Args:
        edge_index (Tensor): (2, E) int64 local ``[source; destination]``, best grouped by
            destination (as the sampler emits them; others are sorted here, stably).
        num_src (int): N_src, the source rows the sources index.
        num_dst (int): N_dst, the destination rows.

    Returns:
        Tuple[Tensor, Tensor]: ``crow`` (N_dst + 1,) and ``col`` (E,), the sources in
        destination order (``edge_index[0]`` itself when it was grouped).

    Raises:
        ValueError: an id outside ``[0, N_src)`` or ``[0, N_dst)`` (the sparse kernels that read
            these arrays do not check them).
    """
    row, col = edge_index
    if col.numel() > 1 and bool((col[1:] < col[:-1]).any()):
        order = torch.argsort(col, stable=True)
        row, col = row[order], col[order]
    if row.numel():  # one pass over the sources; the sorted destinations' range is their first and last
        src_lo, src_hi = (int(v) for v in torch.aminmax(row))
        dst_lo, dst_hi = int(col[0]), int(col[-1])
        if src_lo < 0 or src_hi >= num_src or dst_lo < 0 or dst_hi >= num_dst:
            raise ValueError(f"edge_index has ids outside {num_src} sources x {num_dst} destinations "
                             f"(sources {src_lo}..{src_hi}, destinations {dst_lo}..{dst_hi})")
    crow = torch.zeros(num_dst + 1, dtype=torch.int64, device=col.device)
    crow[1:] = torch.bincount(col, minlength=num_dst).cumsum(0)
    return crow, row


def transpose_pointers(crow: torch.Tensor, col: torch.Tensor, num_cols: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The CSR index arrays of the transpose of the matrix ``(crow, col)`` with ``num_cols``
    columns: ``crow_t`` (num_cols + 1,) and ``col_t`` (E,), each column's rows in ascending
    order. A counting sort on CPU (``col`` must lie in ``[0, num_cols)`` and hold ``crow[-1]``
    entries: checked by :func:`destination_pointers`), :func:`transpose_by_sort` elsewhere."""
    if col.device.type != "cpu":
        return transpose_by_sort(crow, col, num_cols)
    crow_t, col_t = _transpose_kernel(crow.numpy(), col.numpy(), num_cols)
    return torch.from_numpy(crow_t), torch.from_numpy(col_t)


def transpose_by_sort(crow: torch.Tensor, col: torch.Tensor, num_cols: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`transpose_pointers` by torch's stable sort, on any device."""
    rows = torch.repeat_interleave(torch.arange(crow.numel() - 1, device=col.device), crow.diff())
    crow_t = torch.zeros(num_cols + 1, dtype=torch.int64, device=col.device)
    crow_t[1:] = torch.bincount(col, minlength=num_cols).cumsum(0)
    return crow_t, rows[torch.argsort(col, stable=True)]

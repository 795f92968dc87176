"""Mean aggregation over a CSR adjacency whose backward does not sort (GraphSAGE's aggregation).

PyG's ``SAGEConv`` given a torch CSR ``adj_t`` averages by ``torch.sparse.mm(adj_t, x, "mean")``.
On CPU that op's backward transposes ``adj_t`` by sorting every edge by source, and the sort is
most of its cost (``benchmarks/bench_step.py --profile``: 30.7 ms of a 118 ms training step went
to it, 13.6 ms of that in ``aten::sort``). The transpose needs no comparison sort: the sources are
integers below N_src, so a counting sort builds it in two passes over the edges
(:func:`~torchrec_gnn.graph.csr.transpose_pointers`).
:func:`sparse_mean` is that aggregation, and :class:`CSRSAGEConv` is ``SAGEConv`` using it.

:func:`sum_sage_convs` sums several such convs into one destination type (a heterogeneous
layer's relations) with one matrix product for all of them and the root transform.

A :class:`CSRAdjacency` is the matrix together with its transpose, when that was built ahead
(the loader's workers build both for each sampled batch, ``GraphBatchBuilder(csr=True)``): the
backward then multiplies by it and builds nothing.

Notation: N_dst destination rows, N_src source rows, E edges, D channels, H output channels.
"""

from __future__ import annotations

import functools
import warnings
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import SAGEConv
from torch_geometric.typing import Adj, OptPairTensor, Size

from torchrec_gnn.graph.csr import transpose_pointers


def csr_ones(crow: torch.Tensor, col: torch.Tensor, size: Tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """A CSR matrix of ones of ``size`` over the index arrays ``crow`` (size[0] + 1,) and ``col``
    (E,) (:mod:`torchrec_gnn.graph.csr`); torch's invariant checks are off (a row's columns are
    neither sorted nor distinct), so the arrays must be in range."""
    ones = torch.ones(col.numel(), dtype=dtype, device=col.device)
    with warnings.catch_warnings():  # torch's one-time notice that CSR tensors are in beta
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
        return torch.sparse_csr_tensor(crow, col, ones, size=size, check_invariants=False)


def transpose_csr(adj: torch.Tensor) -> torch.Tensor:
    """The transpose of a (N_dst, N_src) CSR matrix of ones: a (N_src, N_dst) CSR matrix of ones
    (:func:`~torchrec_gnn.graph.csr.transpose_pointers`: a counting sort on CPU; ``adj``'s column
    indices must lie in ``[0, N_src)``, as :func:`~torchrec_gnn.graph.csr.destination_pointers` checks)."""
    num_rows, num_cols = adj.shape
    crow_t, col_t = transpose_pointers(adj.crow_indices(), adj.col_indices(), num_cols)
    return csr_ones(crow_t.to(adj.device), col_t.to(adj.device), (num_cols, num_rows), adj.dtype)


def _sum_rows(adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``adj @ x`` for a CSR ``adj``: torch's native CSR kernel on CPU (MKL's, which ``@`` calls
    there, analyses every new matrix first and ran 2-4x slower on a fresh sample), ``@`` elsewhere."""
    return torch.sparse.mm(adj, x, "sum") if adj.device.type == "cpu" else adj @ x


class CSRAdjacency(NamedTuple):
    """A (N_dst, N_src) CSR matrix of ones (PyG's ``adj_t``) with its (N_src, N_dst) transpose,
    built ahead so that :func:`sparse_mean`'s backward reads it instead of building it (the
    loader's workers build both, :class:`~torchrec_gnn.data.batch.RelationCSR`)."""

    adj_t: torch.Tensor
    transpose: torch.Tensor


Adjacency = Union[torch.Tensor, CSRAdjacency]  # a CSR adj_t, with or without its transpose


def _matrix(adj: Adjacency) -> torch.Tensor:
    """The (N_dst, N_src) CSR matrix of ``adj``."""
    return adj.adj_t if isinstance(adj, CSRAdjacency) else adj


class _SparseMean(torch.autograd.Function):
    """``out = (adj @ x) / deg`` and ``grad_x = adj^T @ (grad_out / deg)``, deg = the row
    counts of ``adj`` (at least 1: a row without entries averages to zero); ``adj^T`` is
    ``transpose`` when given, else built by counting sort."""

    @staticmethod
    def forward(ctx, adj: torch.Tensor, transpose: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        degree = adj.crow_indices().diff().clamp(min=1).unsqueeze(1).to(x.dtype)
        ctx.adj, ctx.transpose = adj, transpose  # no gradient flows to either, so they are kept as they are
        ctx.save_for_backward(degree)
        return _sum_rows(adj, x) / degree

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> Tuple[None, None, Optional[torch.Tensor]]:
        (degree,) = ctx.saved_tensors
        if not ctx.needs_input_grad[2]:
            return None, None, None
        transpose = ctx.transpose if ctx.transpose is not None else transpose_csr(ctx.adj)
        return None, None, _sum_rows(transpose, grad_out / degree)


def sparse_mean(adj: Adjacency, x: torch.Tensor) -> torch.Tensor:
    """Mean of each destination's source rows: ``torch.sparse.mm(adj, x, "mean")`` with a
    backward by the given transpose or a counting-sort one (no gradient to ``adj``).

    Args:
        adj (Tensor or CSRAdjacency): (N_dst, N_src) CSR matrix of ones (PyG's ``adj_t``), alone
            or with its transpose; repeated entries count as often as they appear.
        x (Tensor): (N_src, D) source features.

    Returns:
        Tensor: (N_dst, D); zero for a destination without sources.
    """
    if isinstance(adj, CSRAdjacency):
        return _SparseMean.apply(adj.adj_t, adj.transpose, x)
    return _SparseMean.apply(adj, None, x)


def _is_csr(adj: Adj) -> bool:
    return isinstance(adj, CSRAdjacency) or (isinstance(adj, torch.Tensor) and adj.layout == torch.sparse_csr)


class CSRSAGEConv(SAGEConv):
    """PyG's ``SAGEConv`` (same parameters and state dict) that, given a torch CSR ``adj_t`` (or
    a :class:`CSRAdjacency`) and mean aggregation, averages by :func:`sparse_mean`, and projects
    before averaging where that is cheaper (``mean(x) W = mean(x W)``: the same output, as DGL's
    ``SAGEConv`` chooses its order); any other input takes ``SAGEConv``'s path."""

    def forward(self, x: Union[torch.Tensor, OptPairTensor], edge_index: Union[Adj, CSRAdjacency],
                size: Size = None) -> torch.Tensor:
        """
        Args:
            x (Tensor or Tuple[Tensor, Tensor]): (N_src, D) source and (N_dst, D) destination
                features (one tensor when they are the same nodes).
            edge_index (Tensor or CSRAdjacency): (N_dst, N_src) CSR ``adj_t`` (with its
                transpose), or whatever ``SAGEConv`` takes.
            size (Tuple[int, int], optional): as in ``SAGEConv``.

        Returns:
            Tensor: (N_dst, H).
        """
        if not self.averages_csr(edge_index):
            return super().forward(x, _matrix(edge_index), size)
        x_src, x_dst = (x, x) if isinstance(x, torch.Tensor) else x
        if self.project_first_is_cheaper(edge_index, x_src.shape[1]):
            out = sparse_mean(edge_index, F.linear(x_src, self.lin_l.weight))
            if self.lin_l.bias is not None:
                out = out + self.lin_l.bias
        else:
            out = self.lin_l(sparse_mean(edge_index, x_src))
        if self.root_weight and x_dst is not None:
            out = out + self.lin_r(x_dst)
        return F.normalize(out, p=2.0, dim=-1) if self.normalize else out

    def averages_csr(self, edge_index: Union[Adj, CSRAdjacency]) -> bool:
        """Whether this conv averages ``edge_index`` by :func:`sparse_mean` (a CSR ``adj_t``,
        mean aggregation, no projection of the sources before it)."""
        return _is_csr(edge_index) and self.aggr == "mean" and not self.project

    def project_first_is_cheaper(self, adj_t: Adjacency, in_channels: int) -> bool:
        """Multiply-adds of projecting the N_src sources and averaging H channels over the E
        edges, against averaging D channels and projecting the N_dst destinations."""
        matrix = _matrix(adj_t)
        num_dst, num_src = matrix.shape
        edges = matrix.col_indices().numel()
        out_channels = self.lin_l.weight.shape[0]
        project_first = num_src * in_channels * out_channels + edges * out_channels
        return project_first < num_dst * in_channels * out_channels + edges * in_channels

    def message_and_aggregate(self, adj_t: Adj, x: OptPairTensor) -> torch.Tensor:
        if _is_csr(adj_t) and self.aggr == "mean":
            return sparse_mean(adj_t, x[0])
        return super().message_and_aggregate(adj_t, x)


def sum_sage_convs(x_dst: torch.Tensor, root: Optional[nn.Linear],
                   convs: Sequence[Tuple[SAGEConv, torch.Tensor, Union[Adj, CSRAdjacency]]]) -> torch.Tensor:
    """``root(x_dst) + sum_r conv_r((x_src_r, x_dst), adj_r)``: every relation's conv into one
    destination type plus its root transform, with the convs' own parameters, in one matrix
    product: ``[x_dst | mean_1 | ... | mean_k] @ [W_root | W_1 | ... | W_k]^T`` instead of k + 1
    products, k (N_dst, H) outputs and k additions (the same sum up to float rounding).

    A :class:`CSRSAGEConv` that averages a CSR ``adj_t`` joins the product with its sources'
    mean; one for which projecting first is cheaper (:meth:`CSRSAGEConv.forward`) adds its
    projected mean; any other conv adds its own output.

    Args:
        x_dst (Tensor): (N_dst, D) destination features.
        root (nn.Linear, optional): the destination type's root transform, D -> H.
        convs (Sequence[Tuple[SAGEConv, Tensor, Adj]]): per relation its conv, (N_src_r, D)
            source features and adjacency (a (N_dst, N_src_r) CSR ``adj_t``, a
            :class:`CSRAdjacency` or an edge_index).

    Returns:
        Tensor: (N_dst, H).
    """
    inputs: List[torch.Tensor] = [] if root is None else [x_dst]
    weights: List[torch.Tensor] = [] if root is None else [root.weight]
    biases = [] if root is None or root.bias is None else [root.bias]
    outputs: List[torch.Tensor] = []
    for conv, x_src, adj in convs:
        fusable = isinstance(conv, CSRSAGEConv) and conv.averages_csr(adj) and not conv.normalize
        if not fusable:
            outputs.append(conv((x_src, x_dst), adj))
            continue
        if conv.project_first_is_cheaper(adj, x_src.shape[1]):
            outputs.append(sparse_mean(adj, F.linear(x_src, conv.lin_l.weight)))
        else:
            inputs.append(sparse_mean(adj, x_src))
            weights.append(conv.lin_l.weight)
        if conv.lin_l.bias is not None:
            biases.append(conv.lin_l.bias)
        if conv.root_weight:
            inputs.append(x_dst)
            weights.append(conv.lin_r.weight)
    bias = functools.reduce(torch.add, biases) if biases else None
    if inputs:
        outputs.insert(0, F.linear(torch.cat(inputs, dim=1), torch.cat(weights, dim=1), bias))
    elif bias is not None:
        outputs.append(bias.expand(x_dst.shape[0], -1))
    if not outputs:
        raise ValueError("sum_sage_convs: nothing to sum (no root transform and no convs)")
    return functools.reduce(torch.add, outputs)

import warnings

import pytest
import torch
from torch_geometric.nn import SAGEConv

from torchrec_gnn.modules.aggregation import CSRAdjacency, CSRSAGEConv, sparse_mean, sum_sage_convs, transpose_csr


def csr_of_ones(row: torch.Tensor, col: torch.Tensor, shape) -> torch.Tensor:
    """(rows, cols) CSR matrix with a one at every (row, col) pair, pairs sorted by row."""
    order = torch.argsort(row, stable=True)
    crow = torch.zeros(shape[0] + 1, dtype=torch.int64)
    crow[1:] = torch.bincount(row, minlength=shape[0]).cumsum(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, col[order], torch.ones(row.numel(), dtype=torch.float64),
                                       size=shape, check_invariants=False)


def random_adjacency(seed: int = 0) -> torch.Tensor:
    """(9, 7) with repeated pairs, rows 6..8 and column 6 without entries."""
    g = torch.Generator().manual_seed(seed)
    return csr_of_ones(torch.randint(0, 6, (40,), generator=g), torch.randint(0, 6, (40,), generator=g), (9, 7))


def test_transpose_csr_is_the_transposed_matrix() -> None:
    """(The index arrays' order: tests/graph/test_csr.py.)"""
    adjacency = random_adjacency()
    transposed = transpose_csr(adjacency)
    assert transposed.layout == torch.sparse_csr and transposed.shape == (7, 9) and transposed.dtype == torch.float64
    torch.testing.assert_close(transposed.to_dense(), adjacency.to_dense().t())  # repeats count twice
    empty = csr_of_ones(torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64), (3, 4))
    assert transpose_csr(empty).shape == (4, 3) and transpose_csr(empty).col_indices().numel() == 0


def test_sparse_mean_matches_torch_and_its_gradient_is_exact() -> None:
    adjacency = random_adjacency(1)
    x = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    out = sparse_mean(adjacency, x)
    torch.testing.assert_close(out, torch.sparse.mm(adjacency, x, "mean"))
    assert bool((out[6:] == 0).all())  # no sources: a zero mean
    assert torch.autograd.gradcheck(lambda x: sparse_mean(adjacency, x), (x,))
    grad = torch.randn(9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    (ours,) = torch.autograd.grad(sparse_mean(adjacency, x), x, grad)
    (reference,) = torch.autograd.grad(torch.sparse.mm(adjacency, x, "mean"), x, grad)
    torch.testing.assert_close(ours, reference)


def test_sparse_mean_reads_a_given_transpose() -> None:
    adjacency = random_adjacency(1)
    given = CSRAdjacency(adjacency, transpose_csr(adjacency))
    x = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    grad = torch.randn(9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    out = sparse_mean(given, x)
    torch.testing.assert_close(out, sparse_mean(adjacency, x))
    (ours,) = torch.autograd.grad(out, x, grad)
    torch.testing.assert_close(ours, torch.autograd.grad(sparse_mean(adjacency, x), x, grad)[0])
    # The backward multiplies by the transpose it is given (here twice the true one), builds none.
    doubled = CSRAdjacency(adjacency, transpose_csr(adjacency) * 2)
    torch.testing.assert_close(torch.autograd.grad(sparse_mean(doubled, x), x, grad)[0], 2 * ours)


@pytest.mark.parametrize("num_sources", [7, 2])  # averaging first, projecting first
def test_csr_sage_conv_reads_a_matrix_with_its_transpose_as_the_matrix_alone(num_sources: int) -> None:
    torch.manual_seed(0)
    conv = CSRSAGEConv((3, 3), 4, root_weight=True).double()
    g = torch.Generator().manual_seed(4)
    adjacency = csr_of_ones(torch.randint(0, 9, (30,), generator=g), torch.randint(0, num_sources, (30,), generator=g),
                            (9, num_sources))
    assert conv.project_first_is_cheaper(adjacency, 3) == (num_sources == 2)
    x_src = torch.randn(num_sources, 3, dtype=torch.float64, generator=g)
    x_dst = torch.randn(9, 3, dtype=torch.float64, generator=g)

    def run(edges):
        conv.zero_grad()
        src = x_src.clone().requires_grad_()
        out = conv((src, x_dst), edges)
        (out * torch.arange(out.numel()).view_as(out).sin()).sum().backward()
        return out, src.grad, conv.lin_l.weight.grad.clone()

    for given, alone in zip(run(CSRAdjacency(adjacency, transpose_csr(adjacency))), run(adjacency)):
        torch.testing.assert_close(given, alone)


def test_csr_sage_conv_is_sage_conv_on_every_input() -> None:
    torch.manual_seed(0)
    ours = CSRSAGEConv((3, 3), 4, root_weight=False).double()
    pyg = SAGEConv((3, 3), 4, root_weight=False).double()
    pyg.load_state_dict(ours.state_dict())  # the same parameters under the same names
    adjacency = random_adjacency(4)
    x = (torch.randn(7, 3, dtype=torch.float64), torch.randn(9, 3, dtype=torch.float64))
    torch.testing.assert_close(ours(x, adjacency), pyg(x, adjacency))
    edge_index = torch.stack([adjacency.col_indices(), torch.repeat_interleave(torch.arange(9), adjacency.crow_indices().diff())])
    torch.testing.assert_close(ours(x, edge_index), pyg(x, edge_index))  # an edge list takes SAGEConv's path


@pytest.mark.parametrize("root_weight,normalize", [(False, False), (True, True)])
def test_csr_sage_conv_projecting_first_gives_sage_conv_output_and_gradients(root_weight: bool, normalize: bool) -> None:
    """3 sources and 20 destinations: projecting the sources first is cheaper, and the same."""
    torch.manual_seed(0)
    ours = CSRSAGEConv((3, 3), 4, root_weight=root_weight, normalize=normalize).double()
    pyg = SAGEConv((3, 3), 4, root_weight=root_weight, normalize=normalize).double()
    pyg.load_state_dict(ours.state_dict())
    g = torch.Generator().manual_seed(6)
    adjacency = csr_of_ones(torch.randint(0, 15, (12,), generator=g), torch.randint(0, 3, (12,), generator=g), (20, 3))
    assert ours.project_first_is_cheaper(adjacency, 3)
    assert not ours.project_first_is_cheaper(random_adjacency(), 3)  # 7 sources, 9 destinations, 40 edges

    def run(conv):
        x_src = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7)).requires_grad_()
        x_dst = torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
        out = conv((x_src, x_dst), adjacency)
        (out * torch.arange(out.numel()).view_as(out).cos()).sum().backward()
        return out, x_src.grad, conv.lin_l.weight.grad, conv.lin_l.bias.grad

    for ours_, reference in zip(run(ours), run(pyg)):
        torch.testing.assert_close(ours_, reference)


@pytest.mark.parametrize("aggr", ["max", "sum"])
def test_csr_sage_conv_leaves_other_aggregations_to_pyg(aggr: str) -> None:
    ours = CSRSAGEConv((3, 3), 4, aggr=aggr).double()
    pyg = SAGEConv((3, 3), 4, aggr=aggr).double()
    pyg.load_state_dict(ours.state_dict())
    adjacency = random_adjacency(5)
    x = (torch.randn(7, 3, dtype=torch.float64), torch.randn(9, 3, dtype=torch.float64))
    torch.testing.assert_close(ours(x, adjacency), pyg(x, adjacency))


@pytest.mark.parametrize("with_root", [True, False])
def test_sum_sage_convs_is_the_root_plus_each_convs_output(with_root: bool) -> None:
    """One destination type (9 rows) receiving four relations: one averaged then projected
    inside the shared product, one projected first (2 sources), one with its own root weight
    and one max-aggregating conv that adds its own output; outputs and every gradient equal the
    root transform plus the convs run one by one."""
    torch.manual_seed(0)
    root = torch.nn.Linear(3, 4, bias=False).double() if with_root else None
    convs = [CSRSAGEConv((3, 3), 4, root_weight=False).double(), CSRSAGEConv((3, 3), 4, root_weight=False).double(),
             CSRSAGEConv((3, 3), 4, root_weight=True).double(), CSRSAGEConv((3, 3), 4, aggr="max").double()]
    g = torch.Generator().manual_seed(9)
    few_sources = csr_of_ones(torch.randint(0, 9, (10,), generator=g), torch.randint(0, 2, (10,), generator=g), (9, 2))
    adjacencies = [random_adjacency(1), few_sources, random_adjacency(2), random_adjacency(3)]
    assert convs[1].project_first_is_cheaper(few_sources, 3) and not convs[0].project_first_is_cheaper(adjacencies[0], 3)
    sources = [torch.randn(a.shape[1], 3, dtype=torch.float64, generator=g) for a in adjacencies]
    x_dst = torch.randn(9, 3, dtype=torch.float64, generator=g)

    def run(fused: bool):
        parameters = [p for m in [root, *convs] if m is not None for p in m.parameters()]
        for p in parameters:
            p.grad = None
        xs = [x.clone().requires_grad_() for x in sources]
        dst = x_dst.clone().requires_grad_()
        if fused:
            out = sum_sage_convs(dst, root, list(zip(convs, xs, adjacencies)))
        else:
            out = sum(conv((x, dst), a) for conv, x, a in zip(convs, xs, adjacencies))
            out = out if root is None else out + root(dst)
        (out * torch.arange(out.numel()).view_as(out).sin()).sum().backward()
        return [out, dst.grad, *(x.grad for x in xs), *(p.grad for p in parameters)]

    for fused, reference in zip(run(True), run(False)):
        torch.testing.assert_close(fused, reference)


def test_sum_sage_convs_needs_something_to_sum() -> None:
    with pytest.raises(ValueError, match="nothing to sum"):
        sum_sage_convs(torch.zeros(2, 3), None, [])

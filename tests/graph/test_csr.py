import pytest
import torch

from torchrec_gnn.graph.csr import destination_pointers, transpose_by_sort, transpose_pointers


def random_edges(seed: int, num_src: int = 7, num_dst: int = 9, num_edges: int = 40) -> torch.Tensor:
    """(2, E) edges with repeated pairs; destinations 6..8 and source 6 have none."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, num_src - 1, (num_edges,), generator=g),
                        torch.randint(0, num_dst - 3, (num_edges,), generator=g)])


def dense(crow: torch.Tensor, col: torch.Tensor, shape) -> torch.Tensor:
    """The (rows, cols) count matrix of CSR index arrays."""
    out = torch.zeros(shape, dtype=torch.int64)
    rows = torch.repeat_interleave(torch.arange(shape[0]), crow.diff())
    out.index_put_((rows, col), torch.ones_like(col), accumulate=True)
    return out


def test_destination_pointers_keep_grouped_edges_and_sort_the_others_stably() -> None:
    edges = random_edges(0)
    expected = torch.zeros(9, 7, dtype=torch.int64).index_put_((edges[1], edges[0]), torch.ones(40, dtype=torch.int64),
                                                               accumulate=True)
    order = torch.argsort(edges[1], stable=True)
    grouped = edges[:, order]
    crow, col = destination_pointers(grouped, 7, 9)
    assert crow.shape == (10,) and col.data_ptr() == grouped[0].data_ptr()  # the sources as they are: no copy
    assert torch.equal(dense(crow, col, (9, 7)), expected) and int(crow[9] - crow[6]) == 0
    crow_u, col_u = destination_pointers(edges, 7, 9)  # not grouped: sorted here, in edge order per destination
    assert torch.equal(crow_u, crow) and torch.equal(col_u, col)


@pytest.mark.parametrize("num_src, num_dst, message", [
    (5, 9, r"edge_index has ids outside 5 sources x 9 destinations \(sources 0\.\.5, destinations 0\.\.5\)"),
    (7, 4, r"outside 7 sources x 4 destinations \(sources 0\.\.5, destinations 0\.\.5\)"),
])
def test_destination_pointers_name_ids_out_of_range(num_src: int, num_dst: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        destination_pointers(random_edges(1), num_src, num_dst)


@pytest.mark.parametrize("transpose", [transpose_pointers, transpose_by_sort])
def test_transpose_counts_every_entry_and_lists_rows_in_order(transpose) -> None:
    crow, col = destination_pointers(random_edges(2), 7, 9)
    crow_t, col_t = transpose(crow, col, 7)
    assert crow_t.shape == (8,) and col_t.shape == (40,)
    assert torch.equal(dense(crow_t, col_t, (7, 9)), dense(crow, col, (9, 7)).t())  # repeats count twice
    for r in range(7):
        assert bool((col_t[crow_t[r] : crow_t[r + 1]].diff() >= 0).all())
    assert int(crow_t[7] - crow_t[6]) == 0
    # A prefix of the rows (the first hops of a sample) is a matrix of its own.
    crow_p, col_p = transpose(crow[:4], col[: int(crow[3])], 7)
    assert torch.equal(dense(crow_p, col_p, (7, 3)), dense(crow, col, (9, 7))[:3].t())
    empty_t = transpose(torch.zeros(4, dtype=torch.int64), torch.empty(0, dtype=torch.int64), 5)
    assert torch.equal(empty_t[0], torch.zeros(6, dtype=torch.int64)) and empty_t[1].numel() == 0

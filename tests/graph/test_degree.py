"""Degree features: counts against a brute-force count over the raw edges, the time cut-off,
column order and errors."""

import numpy as np
import pytest
import torch

from conftest import tiny_log_dataset
from torchrec_gnn.graph.degree import DegreeFeatures, degree_channels, log_degree, relations_into
from torchrec_gnn.graph.hetero_graph import HeteroGraph

WATCHES = ("user", "watches", "item")


@pytest.fixture(scope="module")
def graph() -> HeteroGraph:
    ds = tiny_log_dataset()
    return HeteroGraph.from_edges(ds.num_nodes, ds.edges, add_reverse=True)


def test_degree_counts_every_in_edge_and_only_older_ones_with_a_time(graph) -> None:
    ds = tiny_log_dataset()
    watches = ds.edges[WATCHES]
    csc = graph.csc(WATCHES)
    nodes = np.arange(graph.num_nodes["item"], dtype=np.int64)
    pairs = {}
    for u, i, t in zip(watches.src.tolist(), watches.dst.tolist(), watches.time.tolist()):
        pairs[(u, i)] = min(t, pairs.get((u, i), t))  # the graph keeps each pair once, at its earliest time
    expected_all = np.bincount([i for _, i in pairs], minlength=nodes.size)
    assert np.array_equal(csc.degree(), expected_all)
    assert np.array_equal(csc.degree(nodes), expected_all)
    for cut in (0, 2_500, 5_000, 10_001):
        expected = np.bincount([i for (_, i), t in pairs.items() if t < cut], minlength=nodes.size)
        assert np.array_equal(csc.degree(nodes, np.full(nodes.size, cut)), expected), cut
    times = np.random.default_rng(0).integers(0, 10_000, nodes.size)  # one cut-off per node
    expected = [sum(1 for (_, i), t in pairs.items() if i == n and t < times[n]) for n in nodes]
    assert np.array_equal(csc.degree(nodes, times), expected)


def test_degree_rejects_ids_out_of_range(graph) -> None:
    with pytest.raises(ValueError, match=r"node id 60 outside \[0, 60\)"):
        graph.csc(WATCHES).degree(np.array([0, 60]))
    with pytest.raises(ValueError, match=r"before has shape \(1,\), expected \(2,\)"):
        graph.csc(WATCHES).degree(np.array([0, 1]), np.array([5]))


def test_columns_are_scaled_log1p_counts_per_relation_in_graph_order(graph) -> None:
    assert relations_into(graph, "item") == [et for et in graph.edge_types if et[2] == "item"]
    assert degree_channels(graph) == {t: len(relations_into(graph, t)) for t in graph.node_types}
    degrees = DegreeFeatures.fit(graph, before=5_000)
    for et in graph.edge_types:  # scaled by the largest degree as the graph stood at the reference time
        reference = log_degree(graph, et, np.arange(graph.num_nodes[et[2]]), 5_000)
        assert degrees.scale[et] == pytest.approx(float(reference.max()), abs=1e-6)
        assert degrees(graph, et[2], before=5_000).max() == pytest.approx(1.0)
    nodes = torch.tensor([3, 0, 3, 59])
    columns = degrees(graph, "item", nodes, before=4_000)
    assert columns.shape == (4, len(relations_into(graph, "item"))) and columns.dtype == torch.float32
    for column, et in enumerate(relations_into(graph, "item")):
        csc = graph.csc(et)
        counts = csc.degree(nodes.numpy(), np.full(4, 4_000)) if csc.time is not None else csc.degree(nodes.numpy())
        expected = torch.log1p(torch.from_numpy(counts).float()) / degrees.scale[et]
        assert torch.allclose(columns[:, column], expected), et
    # Without a time every edge counts; the full table appends to existing side features.
    full = degrees(graph, "item")
    assert torch.equal(full[nodes], degrees(graph, "item", nodes))
    side = {"item": torch.randn(60, 2)}
    table = degrees.append(side, graph)
    assert torch.equal(table["item"], torch.cat([side["item"], full], dim=1))
    assert torch.equal(table["genre"], degrees(graph, "genre"))  # a type without side features

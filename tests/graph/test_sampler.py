"""Property tests of NeighborSampler (PyG-style): small random hetero graphs and literal ones."""

import pickle
import re
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest
import torch

from torchrec_gnn.graph import _kernels, sampler as sampler_module
from torchrec_gnn.graph.hetero_graph import CSC, HeteroGraph
from torchrec_gnn.graph.sampler import NeighborSampler, SampledSubgraph
from torchrec_gnn.typing import EdgeList

WATCHES = ("user", "watches", "video")
REV_WATCHES = ("video", "rev_watches", "user")


# ---------------------------------------------------------------------- graphs
def literal_graph() -> HeteroGraph:
    """The graph drawn in SampledSubgraph's docstring: users 5, 9, 1 watch videos 7, 3, 4."""
    src, dst = torch.tensor([5, 9, 1, 9]), torch.tensor([7, 7, 3, 4])
    return HeteroGraph.from_edges({"user": 10, "video": 8}, {WATCHES: (src, dst)}, add_reverse=True)


def random_graph(seed: int = 0, timed: bool = False, weighted: bool = False, t0: int = 0) -> HeteroGraph:
    """3 connected node types + 1 type in no relation, a self-relation, reverses and an empty
    relation. The last node of every type has no edge at all. Edge times are ``t0 + [0, 100)``."""
    g = torch.Generator().manual_seed(seed)
    num_nodes = {"user": 40, "video": 30, "tag": 6, "island": 3}

    def edges(src_t: str, dst_t: str, n: int) -> EdgeList:
        # Skewed destinations so some nodes have degree > fanout and others have none.
        dst = (torch.rand(n, generator=g) ** 2 * (num_nodes[dst_t] - 1)).long()
        return EdgeList(
            src=torch.randint(0, num_nodes[src_t] - 1, (n,), generator=g),
            dst=dst,
            time=t0 + torch.randint(0, 100, (n,), generator=g) if timed else None,
            weight=torch.rand(n, generator=g) + 0.1 if weighted else None,
        )

    empty = EdgeList(
        src=torch.empty(0, dtype=torch.long), dst=torch.empty(0, dtype=torch.long),
        time=torch.empty(0, dtype=torch.long) if timed else None,
        weight=torch.empty(0) if weighted else None,
    )
    relations = {
        WATCHES: edges("user", "video", 300),
        ("video", "has", "tag"): edges("video", "tag", 60),
        ("user", "follows", "user"): edges("user", "user", 120),
        ("tag", "empty", "user"): empty,
    }
    return HeteroGraph.from_edges(num_nodes, relations, add_reverse=True)


def edge_dst(graph: HeteroGraph, et, edge_ids: torch.Tensor) -> torch.Tensor:
    """Global destination of each CSC position."""
    colptr = graph.csc(et).colptr
    return torch.from_numpy(np.searchsorted(colptr, edge_ids.numpy(), side="right") - 1)


def reference(graph: HeteroGraph, seeds: Dict[str, List[int]], hops: int,
              seed_time: Optional[Dict[str, List[int]]] = None) -> Tuple[dict, dict]:
    """Slow, obviously correct BFS taking *all* (older) neighbours: (nodes, edges) per type/relation."""
    nodes = {t: [] for t in graph.node_types}
    times = {t: [] for t in graph.node_types}
    local = {t: {} for t in graph.node_types}
    for t, ids in seeds.items():
        for p, g in enumerate(ids):
            if g not in local[t]:
                local[t][g] = len(nodes[t])
                nodes[t].append(g)
                times[t].append(seed_time[t][p] if seed_time else 0)
            elif seed_time:
                times[t][local[t][g]] = min(times[t][local[t][g]], seed_time[t][p])
    edges = {et: [] for et in graph.edge_types}
    lo = {t: 0 for t in graph.node_types}
    for _ in range(hops):
        start = {t: len(nodes[t]) for t in graph.node_types}
        for et in graph.edge_types:
            src, _, dst = et
            csc = graph.csc(et)
            for i in range(lo[dst], start[dst]):
                g = nodes[dst][i]
                for e in range(int(csc.colptr[g]), int(csc.colptr[g + 1])):
                    if seed_time is not None and int(csc.time[e]) >= times[dst][i]:
                        continue
                    s = int(csc.row[e])
                    if s not in local[src]:
                        local[src][s] = len(nodes[src])
                        nodes[src].append(s)
                        times[src].append(times[dst][i])
                    elif seed_time is not None and local[src][s] >= start[src]:
                        times[src][local[src][s]] = min(times[src][local[src][s]], times[dst][i])
                    edges[et].append((local[src][s], i, e))
        lo = start
    return nodes, edges


def check_valid(graph: HeteroGraph, out: SampledSubgraph, seeds: Dict[str, torch.Tensor]) -> None:
    """Invariants every sample must satisfy, whatever the mode."""
    assert set(out.node) == set(graph.node_types) and set(out.row) == set(graph.edge_types)
    for t in graph.node_types:
        ids = out.node[t]
        assert ids.dtype == torch.long and ids.unique().numel() == ids.numel()  # deduplicated
        assert sum(out.num_sampled_nodes[t]) == ids.numel()
    for t, s in seeds.items():
        first = list(dict.fromkeys(s.tolist()))  # seeds in order, repeats dropped
        assert out.node[t][: len(first)].tolist() == first
        assert out.num_sampled_nodes[t][0] == len(first)
        assert torch.equal(out.node[t][out.seed_index[t]], s)
    for et in graph.edge_types:
        src, _, dst = et
        row, col, edge = out.row[et], out.col[et], out.edge[et]
        assert row.dtype == col.dtype == edge.dtype == torch.long
        assert sum(out.num_sampled_edges[et]) == row.numel() == col.numel() == edge.numel()
        if row.numel() == 0:
            continue
        # Every sampled (global src, global dst) pair is an edge of the relation ...
        pairs = set(map(tuple, graph.edge_index(et).t().tolist()))
        assert set(zip(out.node[src][row].tolist(), out.node[dst][col].tolist())) <= pairs
        # ... and its edge id points at it: the id's CSC row is the source, its segment the destination.
        csc = graph.csc(et)
        assert torch.equal(torch.from_numpy(csc.row[edge.numpy()].astype(np.int64)), out.node[src][row])
        assert torch.equal(edge_dst(graph, et, edge), out.node[dst][col])
        # Hop h's edges leave the nodes first reached at hop h - 1 (trim_to_layer's layout).
        n_dst = np.cumsum([0] + out.num_sampled_nodes[dst])
        n_src = np.cumsum([0] + out.num_sampled_nodes[src])
        e_off = np.cumsum([0] + out.num_sampled_edges[et])
        for h in range(len(out.num_sampled_edges[et])):
            c, r = col[e_off[h]:e_off[h + 1]], row[e_off[h]:e_off[h + 1]]
            assert bool(((c >= n_dst[h]) & (c < n_dst[h + 1])).all())
            assert bool((r < n_src[h + 2]).all())


def per_node_counts(graph: HeteroGraph, out: SampledSubgraph, et, hop: int, older: bool = False):
    """(frontier local ids, sampled edges per node, usable degree per node) of one relation and hop."""
    dst = et[2]
    n_dst = np.cumsum([0] + out.num_sampled_nodes[dst])
    e_off = np.cumsum([0] + out.num_sampled_edges[et])
    frontier = np.arange(n_dst[hop], n_dst[hop + 1])
    col = out.col[et][e_off[hop]:e_off[hop + 1]].numpy()
    got = np.bincount(col - n_dst[hop], minlength=frontier.size) if frontier.size else np.zeros(0, int)
    csc = graph.csc(et)
    g = out.node[dst].numpy()[frontier]
    if older:
        t = out.node_time[dst].numpy()[frontier]
        degree = np.array([int((csc.time[csc.colptr[x]:csc.colptr[x + 1]] < ti).sum()) for x, ti in zip(g, t)], dtype=int)
    else:
        degree = (csc.colptr[g + 1] - csc.colptr[g]).astype(int)
    return frontier, got, degree


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def same(a: SampledSubgraph, b: SampledSubgraph) -> bool:
    fields = ("node", "row", "col", "edge", "seed_index")
    return all(
        set(getattr(a, f)) == set(getattr(b, f)) and all(torch.equal(getattr(a, f)[k], getattr(b, f)[k]) for k in getattr(a, f))
        for f in fields
    ) and a.num_sampled_nodes == b.num_sampled_nodes and a.num_sampled_edges == b.num_sampled_edges


SEEDS = {"video": torch.tensor([3, 0, 7, 3, 1, 0]), "user": torch.tensor([5, 2])}


# ---------------------------------------------------------------------- layout
def test_literal_docstring_example():
    graph = literal_graph()
    sampler = NeighborSampler(graph, [2, 1])
    outs = [sampler.sample({"video": torch.tensor([7, 3, 7])}, generator=gen(s)) for s in range(20)]
    # user 9 watched videos 7 and 4: with fanout 1 at hop 2 some seeds draw 4, which joins the batch.
    out = next(o for o in outs if o.node["video"].numel() == 3)
    assert out.node["video"].tolist() == [7, 3, 4]
    assert out.node["user"].tolist() == [5, 9, 1]
    assert out.seed_index["video"].tolist() == [0, 1, 0]
    assert out.num_sampled_nodes == {"video": [2, 0, 1], "user": [0, 3, 0]}
    assert out.num_sampled_edges == {WATCHES: [3, 0], REV_WATCHES: [0, 3]}
    assert out.edge_index_dict[WATCHES].tolist() == [[0, 1, 2], [0, 0, 1]]
    assert out.edge_index_dict[REV_WATCHES].tolist() == [[0, 2, 1], [0, 1, 2]]
    assert repr(out) == ("SampledSubgraph(nodes: user=3, video=3; "
                         "edges: user__watches__video=3, video__rev_watches__user=3)")


@pytest.mark.parametrize("fanouts", [[3, 2], [1, 1, 1], [5]])
def test_uniform_properties_on_random_graphs(fanouts):
    for seed in range(3):
        graph = random_graph(seed)
        sampler = NeighborSampler(graph, fanouts)
        out = sampler.sample(SEEDS, generator=gen(seed))
        check_valid(graph, out, SEEDS)
        for et in graph.edge_types:
            # Without replacement: no edge twice (each node is expanded in exactly one hop).
            assert out.edge[et].unique().numel() == out.edge[et].numel()
            for hop, k in enumerate(fanouts):
                _, got, degree = per_node_counts(graph, out, et, hop)
                # Fanout respected; all neighbours taken when degree <= fanout.
                assert np.array_equal(got, np.minimum(degree, k)), (et, hop)


def test_fanout_all_equals_reference_bfs():
    graph = random_graph(1)
    out = NeighborSampler(graph, [-1, -1]).sample(SEEDS, generator=gen(0))
    nodes, edges = reference(graph, {t: s.tolist() for t, s in SEEDS.items()}, hops=2)
    check_valid(graph, out, SEEDS)
    for t in graph.node_types:
        assert out.node[t].tolist() == nodes[t], t
    for et in graph.edge_types:
        got = list(zip(out.row[et].tolist(), out.col[et].tolist(), out.edge[et].tolist()))
        assert got == edges[et], et


def test_per_relation_fanouts_and_skipped_relation():
    graph = random_graph(2)
    fanouts = {et: [2, 1] for et in graph.edge_types}
    fanouts[("user", "follows", "user")] = [0, 0]
    fanouts[WATCHES] = [-1, 3]
    out = NeighborSampler(graph, fanouts).sample(SEEDS, generator=gen(0))
    check_valid(graph, out, SEEDS)
    assert out.row[("user", "follows", "user")].numel() == 0
    for et, ks in fanouts.items():
        for hop, k in enumerate(ks):
            _, got, degree = per_node_counts(graph, out, et, hop)
            assert np.array_equal(got, degree if k < 0 else np.minimum(degree, k)), (et, hop)


def test_edge_cases_isolated_empty_relation_no_seed_types_empty_frontier():
    graph = random_graph(0)
    isolated = graph.num_nodes["video"] - 1
    sampler = NeighborSampler(graph, [4, 4, 4])
    # An isolated seed: nothing to expand, every later hop has an empty frontier.
    out = sampler.sample({"video": torch.tensor([isolated])}, generator=gen(0))
    check_valid(graph, out, {"video": torch.tensor([isolated])})
    assert out.node["video"].tolist() == [isolated] and all(n == 0 for n in out.num_edges.values())
    assert all(c == [0, 0, 0] for c in out.num_sampled_edges.values())
    # An isolated seed next to connected ones.
    seeds = {"video": torch.tensor([isolated, 0]), "user": torch.tensor([graph.num_nodes["user"] - 1])}
    out = sampler.sample(seeds, generator=gen(0))
    check_valid(graph, out, seeds)
    assert out.num_edges[WATCHES] > 0
    # A node type that is in no relation, and seeds of it only.
    out = sampler.sample({"island": torch.tensor([2, 0, 2])}, generator=gen(0))
    assert out.node["island"].tolist() == [2, 0] and out.seed_index["island"].tolist() == [0, 1, 0]
    assert all(n == 0 for n in out.num_edges.values())
    assert out.num_sampled_nodes["island"] == [2, 0, 0, 0] and out.num_sampled_nodes["user"] == [0, 0, 0, 0]
    # No seeds at all, and empty seed tensors.
    for seeds in ({}, {"user": torch.empty(0, dtype=torch.long)}):
        out = sampler.sample(seeds, generator=gen(0))
        assert all(n == 0 for n in out.num_nodes.values()) and all(n == 0 for n in out.num_edges.values())
        assert all(len(c) == 3 for c in out.num_sampled_edges.values())
    assert out.num_sampled_edges[("tag", "empty", "user")] == [0, 0, 0]


# ---------------------------------------------------------------------- randomness
def test_deterministic_per_generator_seed_and_thread_count(monkeypatch):
    monkeypatch.setattr(sampler_module, "PARALLEL_MIN_FRONTIER", 0)  # use the parallel kernel on tiny frontiers
    graph = random_graph(3)
    sampler = NeighborSampler(graph, [2, 2])
    a = sampler.sample(SEEDS, generator=gen(7))
    assert same(a, sampler.sample(SEEDS, generator=gen(7)))
    assert not same(a, sampler.sample(SEEDS, generator=gen(8)))
    # torch's default generator when none is given.
    torch.manual_seed(3)
    b = sampler.sample(SEEDS)
    torch.manual_seed(3)
    assert same(b, sampler.sample(SEEDS))
    # The parallel kernel draws the same numbers (counter-based RNG) and relabels in the same order.
    calls = []
    kernel = _kernels.sample_relation_parallel
    monkeypatch.setattr(_kernels, "sample_relation_parallel", lambda *args: calls.append(1) or kernel(*args))
    parallel = NeighborSampler(graph, [2, 2], num_threads=2)
    assert same(a, parallel.sample(SEEDS, generator=gen(7)))
    assert calls
    weighted = random_graph(3, weighted=True)
    for replace in (False, True):
        one = NeighborSampler(weighted, [2, 2], weighted=True, replace=replace).sample(SEEDS, generator=gen(1))
        two = NeighborSampler(weighted, [2, 2], weighted=True, replace=replace, num_threads=2).sample(SEEDS, generator=gen(1))
        assert same(one, two)


def star_graph(degree: int, weight: Optional[torch.Tensor] = None) -> HeteroGraph:
    """Video 0 watched by users 0..degree-1."""
    edges = EdgeList(src=torch.arange(degree), dst=torch.zeros(degree, dtype=torch.long), weight=weight)
    return HeteroGraph.from_edges({"user": degree, "video": 1}, {WATCHES: edges})


def draw_counts(sampler: NeighborSampler, degree: int, draws: int) -> np.ndarray:
    counts = np.zeros(degree, dtype=np.int64)
    for s in range(draws):
        out = sampler.sample({"video": torch.tensor([0])}, generator=gen(s))
        counts += np.bincount(out.node["user"][out.row[WATCHES]].numpy(), minlength=degree)
    return counts


@pytest.mark.parametrize("fanout", [5, 18])  # 5: Floyd's algorithm; 18: selection sampling
def test_uniform_draws_are_uniform(fanout):
    degree, draws = 20, 2000
    counts = draw_counts(NeighborSampler(star_graph(degree), [fanout]), degree, draws)
    assert counts.sum() == draws * fanout
    expected = draws * fanout / degree
    # Each neighbour is a Binomial(draws, fanout/degree) count; chi-square on 19 degrees of freedom
    # (variance-corrected for sampling without replacement), p = 0.001 critical value 43.8.
    chi2 = (((counts - expected) ** 2) / (expected * (1 - fanout / degree))).sum()
    assert chi2 < 43.8, (chi2, counts)


def test_with_replacement_exceeds_degree_and_is_uniform():
    graph = star_graph(3)
    out = NeighborSampler(graph, [7], replace=True).sample({"video": torch.tensor([0])}, generator=gen(0))
    assert out.row[WATCHES].numel() == 7  # more than the degree: repeats
    assert out.edge[WATCHES].unique().numel() <= 3
    check_valid(graph, out, {"video": torch.tensor([0])})
    counts = draw_counts(NeighborSampler(star_graph(10), [5], replace=True), 10, 1000)
    expected = 1000 * 5 / 10
    assert (((counts - expected) ** 2) / expected).sum() < 27.9  # chi-square, 9 dof, p = 0.001


def test_weighted_prefers_heavy_edges_and_skips_zero_weight():
    weight = torch.ones(10)
    weight[3], weight[7] = 30.0, 0.0
    graph = star_graph(10, weight)
    # Fanout 1: P(heavy) = 30 / 38.
    counts = draw_counts(NeighborSampler(graph, [1], weighted=True), 10, 1000)
    assert counts[7] == 0 and 0.72 < counts[3] / 1000 < 0.86, counts
    # Fanout 9 = number of positive-weight edges: all of them, never the zero-weight edge.
    counts = draw_counts(NeighborSampler(graph, [9], weighted=True), 10, 50)
    assert counts[7] == 0 and (np.delete(counts, 7) == 50).all()
    # Fanout -1 (all neighbours) means every positive-weight edge, the same 9.
    counts = draw_counts(NeighborSampler(graph, [-1], weighted=True), 10, 5)
    assert counts[7] == 0 and (np.delete(counts, 7) == 5).all()
    # With replacement draws follow the weights: P(edge) = w / 38.
    counts = draw_counts(NeighborSampler(graph, [4], weighted=True, replace=True), 10, 1000)
    assert counts[7] == 0 and counts.sum() == 4000
    expected = 4000 * weight.numpy() / weight.sum().item()
    keep = expected > 0
    assert (((counts[keep] - expected[keep]) ** 2) / expected[keep]).sum() < 26.1  # 8 dof, p = 0.001


def test_weighted_properties_on_random_graph():
    graph = random_graph(4, weighted=True)
    out = NeighborSampler(graph, [3, 2], weighted=True).sample(SEEDS, generator=gen(0))
    check_valid(graph, out, SEEDS)
    for et in graph.edge_types:
        assert out.edge[et].unique().numel() == out.edge[et].numel()
        for hop, k in enumerate([3, 2]):
            _, got, degree = per_node_counts(graph, out, et, hop)
            assert np.array_equal(got, np.minimum(degree, k))


# ---------------------------------------------------------------------- temporal
def test_temporal_only_strictly_older_edges():
    # Video 0 watched at times 5, 10, 15 by users 0, 1, 2; a seed at time 10 sees only user 0.
    edges = EdgeList(src=torch.tensor([0, 1, 2]), dst=torch.zeros(3, dtype=torch.long), time=torch.tensor([5, 10, 15]))
    graph = HeteroGraph.from_edges({"user": 3, "video": 1}, {WATCHES: edges}, add_reverse=True)
    sampler = NeighborSampler(graph, [-1, -1], temporal=True)
    out = sampler.sample({"video": torch.tensor([0])}, seed_time={"video": torch.tensor([10])}, generator=gen(0))
    assert out.node["user"].tolist() == [0]
    assert out.node_time["user"].tolist() == [10]
    # Repeated seed: the earlier time wins (conservative).
    out = sampler.sample({"video": torch.tensor([0, 0])}, seed_time={"video": torch.tensor([16, 6])}, generator=gen(0))
    assert out.node["user"].tolist() == [0] and out.node_time["video"].tolist() == [6]


@pytest.mark.parametrize("fanouts", [[-1, -1], [2, 3]])
def test_temporal_never_leaks_on_random_graph(fanouts):
    graph = random_graph(5, timed=True)
    seed_time = {t: torch.randint(20, 100, (s.numel(),), generator=gen(1)) for t, s in SEEDS.items()}
    out = NeighborSampler(graph, fanouts, temporal=True).sample(SEEDS, seed_time=seed_time, generator=gen(0))
    check_valid(graph, out, SEEDS)
    for et in graph.edge_types:
        src, _, dst = et
        edge_time = torch.from_numpy(graph.csc(et).time)[out.edge[et]]
        assert bool((edge_time < out.node_time[dst][out.col[et]]).all()), et
        # A node reached at hop h carries the minimum time of the hop-h frontier nodes that reached it.
        e_off = np.cumsum([0] + out.num_sampled_edges[et])
        n_src = np.cumsum([0] + out.num_sampled_nodes[src])
        for h in range(len(fanouts)):
            rows, cols = out.row[et][e_off[h]:e_off[h + 1]], out.col[et][e_off[h]:e_off[h + 1]]
            new = (rows >= n_src[h + 1]) & (rows < n_src[h + 2])
            for r, c in zip(rows[new].tolist(), cols[new].tolist()):
                assert out.node_time[src][r] <= out.node_time[dst][c]
        for hop, k in enumerate(fanouts):
            _, got, degree = per_node_counts(graph, out, et, hop, older=True)
            assert np.array_equal(got, degree if k < 0 else np.minimum(degree, k)), (et, hop)
    if fanouts == [-1, -1]:
        nodes, edges = reference(graph, {t: s.tolist() for t, s in SEEDS.items()}, 2,
                                 {t: s.tolist() for t, s in seed_time.items()})
        for t in graph.node_types:
            assert out.node[t].tolist() == nodes[t]
        for et in graph.edge_types:
            assert list(zip(out.row[et].tolist(), out.col[et].tolist(), out.edge[et].tolist())) == edges[et]


def test_temporal_last_takes_the_most_recent_older_edges():
    # Video 0 watched at times 5, 10, 15, 20 by users 0..3; at time 18 the 2 latest are users 1, 2.
    edges = EdgeList(src=torch.tensor([3, 1, 0, 2]), dst=torch.zeros(4, dtype=torch.long),
                     time=torch.tensor([20, 10, 5, 15]))
    graph = HeteroGraph.from_edges({"user": 4, "video": 1}, {WATCHES: edges}, add_reverse=True)
    sampler = NeighborSampler(graph, [2, 0], temporal=True, temporal_strategy="last")
    for s in range(3):  # no randomness: every generator gives the same neighbours
        out = sampler.sample({"video": torch.tensor([0])}, seed_time={"video": torch.tensor([18])}, generator=gen(s))
        assert sorted(out.node["user"].tolist()) == [1, 2]


@pytest.mark.parametrize("fanouts", [[-1, -1], [2, 3]])
def test_temporal_last_on_random_graph(fanouts):
    graph = random_graph(5, timed=True)
    seed_time = {t: torch.randint(20, 100, (s.numel(),), generator=gen(1)) for t, s in SEEDS.items()}
    out = NeighborSampler(graph, fanouts, temporal=True, temporal_strategy="last").sample(
        SEEDS, seed_time=seed_time, generator=gen(0))
    check_valid(graph, out, SEEDS)
    uniform = NeighborSampler(graph, fanouts, temporal=True).sample(SEEDS, seed_time=seed_time, generator=gen(0))
    for et in graph.edge_types:
        src, _, dst = et
        index = graph.csc(et)
        edge_time = torch.from_numpy(index.time)[out.edge[et]]
        frontier_time = out.node_time[dst][out.col[et]]
        assert bool((edge_time < frontier_time).all()), et
        # Each frontier node drew min(k, older degree) edges, and no unsampled older edge of it is
        # more recent than the oldest one it drew.
        for c in out.col[et].unique().tolist():
            drawn = out.edge[et][out.col[et] == c]
            g = int(out.node[dst][c])
            seg = torch.arange(int(index.colptr[g]), int(index.colptr[g + 1]))
            older = seg[torch.from_numpy(index.time)[seg] < out.node_time[dst][c]]
            skipped = older[~torch.isin(older, drawn)]
            if skipped.numel():
                assert int(index.time[skipped].max()) <= int(index.time[drawn.numpy()].min()), (et, g)
        for hop, k in enumerate(fanouts):
            _, got, degree = per_node_counts(graph, out, et, hop, older=True)
            assert np.array_equal(got, degree if k < 0 else np.minimum(degree, k)), (et, hop)
    if fanouts == [-1, -1]:  # with every neighbour taken, the strategy makes no difference
        for et in graph.edge_types:
            assert torch.equal(out.edge[et].sort().values, uniform.edge[et].sort().values)


def test_temporal_strategy_errors():
    graph = random_graph(0, timed=True)
    with pytest.raises(ValueError, match=r"temporal_strategy must be one of \['uniform', 'last'\], got 'newest'"):
        NeighborSampler(graph, [2], temporal=True, temporal_strategy="newest")
    with pytest.raises(ValueError, match=r"^NeighborSampler: temporal_strategy='last' takes each node's most recent "
                                         r"older edges; it needs temporal=True, replace=False and weighted=False \(got temporal=False"):
        NeighborSampler(graph, [2], temporal_strategy="last")
    with pytest.raises(ValueError, match=r"replace=True"):
        NeighborSampler(graph, [2], temporal=True, replace=True, temporal_strategy="last")


# ---------------------------------------------------------------------- validation
def test_errors_are_clear():
    graph = random_graph(0)
    sampler = NeighborSampler(graph, [2])
    with pytest.raises(ValueError, match=r"unknown node type 'movie' in seeds"):
        sampler.sample({"movie": torch.tensor([0])})
    with pytest.raises(ValueError, match=r"seeds\['video'\] has id 30 at position 1, outside \[0, 30\)"):
        sampler.sample({"video": torch.tensor([0, 30, 99])})
    with pytest.raises(ValueError, match=r"seeds\['video'\] has id -1 at position 0"):
        sampler.sample({"video": torch.tensor([-1])})
    with pytest.raises(ValueError, match=r"1-D integer tensor"):
        sampler.sample({"video": torch.tensor([[0]])})
    with pytest.raises(ValueError, match=r"seeds\['video'\] must be a 1-D integer tensor, got shape \(1,\) dtype float32"):
        sampler.sample({"video": torch.tensor([1.0])})
    with pytest.raises(TypeError, match=r"^NeighborSampler\.sample: seeds must be a dict node type -> ids, got list$"):
        sampler.sample([torch.tensor([0])])
    with pytest.raises(ValueError, match=r"^NeighborSampler\.sample: seed_time was given but the sampler has "
                                         r"temporal=False; build it with temporal=True to sample only edges older "
                                         r"than the seeds$"):
        sampler.sample({"video": torch.tensor([0])}, seed_time={"video": torch.tensor([1])})
    fanouts = {et: [2, 2] for et in graph.edge_types}
    fanouts[WATCHES] = [2]
    with pytest.raises(ValueError, match=r"must all have one length"):
        NeighborSampler(graph, fanouts)
    with pytest.raises(ValueError, match=r"no fanouts for relations \[\('video', 'has', 'tag'\)"):
        NeighborSampler(graph, {WATCHES: [2]})
    with pytest.raises(ValueError, match=r"unknown relations \[\('a', 'b', 'c'\)\]"):
        NeighborSampler(graph, {**{et: [1] for et in graph.edge_types}, ("a", "b", "c"): [1]})
    for bad in ([2, -3], [-2], [True], [2.0]):
        with pytest.raises(ValueError, match=r"each fanout must be an int >= -1"):
            NeighborSampler(graph, bad)
    with pytest.raises(TypeError, match=r"num_neighbors must be a list of ints or a dict relation -> list, got int$"):
        NeighborSampler(graph, 3)
    with pytest.raises(ValueError, match=r"temporal=True\): relation \('user', 'watches', 'video'\) has no edge time"):
        NeighborSampler(graph, [2], temporal=True)
    with pytest.raises(ValueError, match=r"weighted=True\): relation \('user', 'watches', 'video'\) has no edge weight"):
        NeighborSampler(graph, [2], weighted=True)
    for bad in (0, True, 2.0):
        with pytest.raises(ValueError, match=r"num_threads must be an int >= 1"):
            NeighborSampler(graph, [2], num_threads=bad)
    timed = random_graph(0, timed=True)
    temporal = NeighborSampler(timed, [2], temporal=True)
    with pytest.raises(ValueError, match=r"^NeighborSampler\.sample: temporal=True needs seed_time \(one time per seed\)$"):
        temporal.sample({"video": torch.tensor([0])})
    with pytest.raises(ValueError, match=r"temporal=True needs seed_time\['user'\] \(one time per seed\)"):
        temporal.sample({"video": torch.tensor([0]), "user": torch.tensor([1])}, seed_time={"video": torch.tensor([5])})
    with pytest.raises(ValueError, match=r"seed_time has node types \['user'\] that have no seeds"):
        temporal.sample({"video": torch.tensor([0])}, seed_time={"video": torch.tensor([5]), "user": torch.tensor([5])})
    with pytest.raises(ValueError, match=r"seed_time\['video'\] has shape \(2,\), expected \(1,\)"):
        temporal.sample({"video": torch.tensor([0])}, seed_time={"video": torch.tensor([1, 2])})
    negative = star_graph(3, torch.tensor([1.0, -1.0, 2.0]))
    with pytest.raises(ValueError, match=r"weight\[1\] = -1.0, expected a finite value >= 0"):
        NeighborSampler(negative, [1], weighted=True)
    # A relation without time is fine in temporal mode when its fanout is 0.
    mixed = HeteroGraph.from_edges(
        {"user": 3, "video": 2},
        {WATCHES: EdgeList(src=torch.tensor([0, 1]), dst=torch.tensor([0, 1]), time=torch.tensor([1, 2])),
         ("video", "similar", "video"): (torch.tensor([0]), torch.tensor([1]))},
    )
    NeighborSampler(mixed, {WATCHES: [2], ("video", "similar", "video"): [0]}, temporal=True)
    # ... and a skipped relation does not stop the checks of the relations after it.
    with pytest.raises(ValueError, match=r"relation \('video', 'similar', 'video'\) has no edge time"):
        NeighborSampler(mixed, {WATCHES: [0], ("video", "similar", "video"): [2]}, temporal=True)


# ---------------------------------------------------------------------- PyG integration
def test_to_hetero_data_runs_hetero_sage_and_trims():
    from torch_geometric.nn import HeteroConv, SAGEConv
    from torch_geometric.utils import trim_to_layer

    graph = random_graph(6)
    out = NeighborSampler(graph, [3, 2]).sample(SEEDS, generator=gen(0))
    data = out.to_hetero_data()
    assert torch.equal(data["video"].n_id, out.node["video"]) and data["video"].batch_size == 4
    assert torch.equal(data[WATCHES].e_id, out.edge[WATCHES])
    emb = {t: torch.nn.Embedding(n, 8) for t, n in graph.num_nodes.items()}
    x_dict = {t: emb[t](data[t].n_id) for t in data.node_types}
    edge_types = [et for et in data.edge_types if et[0] != "island"]
    conv = HeteroConv({et: SAGEConv((-1, -1), 16) for et in edge_types}, aggr="sum")
    h = conv(x_dict, data.edge_index_dict)
    for t in ("user", "video", "tag"):
        assert h[t].shape == (out.num_nodes[t], 16)
    x, edge_index, _ = trim_to_layer(1, data.num_sampled_nodes_dict, data.num_sampled_edges_dict,
                                     x_dict, data.edge_index_dict)
    for t in x:
        assert x[t].shape[0] == out.num_nodes[t] - out.num_sampled_nodes[t][-1]


def test_to_hetero_data_carries_seed_index_node_time_and_batch():
    graph = random_graph(6, timed=True)
    seed_time = {t: torch.randint(20, 100, (s.numel(),), generator=gen(2)) for t, s in SEEDS.items()}
    for temporal, disjoint in ((False, False), (True, False), (True, True)):
        out = NeighborSampler(graph, [3, 2], temporal=temporal, disjoint=disjoint).sample(
            SEEDS, seed_time if temporal else None, generator=gen(0))
        data = out.to_hetero_data()
        for t in graph.node_types:
            if temporal:
                assert torch.equal(data[t].node_time, out.node_time[t])
            if disjoint:
                assert torch.equal(data[t].batch, out.batch[t])
            if t in SEEDS:
                assert torch.equal(data[t].seed_index, out.seed_index[t])
                assert torch.equal(data[t].n_id[data[t].seed_index], SEEDS[t])
                assert data[t].batch_size == out.num_sampled_nodes[t][0]
            # The node count is stored, not inferred from n_id: it stays when n_id is dropped.
            del data[t].n_id
            assert data[t].num_nodes == out.num_nodes[t]


# ---------------------------------------------------------------------- disjoint
def example_of(out: SampledSubgraph, b: int) -> Tuple[dict, dict]:
    """Example ``b`` of a disjoint sample as (nodes, edges) with ids local to the example, the
    layout :func:`reference` returns for that seed alone."""
    rows = {t: torch.nonzero(out.batch[t] == b).view(-1) for t in out.node}
    nodes = {t: out.node[t][r].tolist() for t, r in rows.items()}
    edges = {}
    for et in out.row:
        src, _, dst = et
        mine = out.batch[dst][out.col[et]] == b
        assert torch.equal(out.batch[src][out.row[et][mine]], out.batch[dst][out.col[et][mine]])  # never crosses
        within = {t: {int(r): i for i, r in enumerate(rows[t])} for t in (src, dst)}
        edges[et] = [(within[src][int(r)], within[dst][int(c)], int(e))
                     for r, c, e in zip(out.row[et][mine], out.col[et][mine], out.edge[et][mine])]
    return nodes, edges


@pytest.mark.parametrize("timed", [False, True])
def test_disjoint_grows_one_reference_tree_per_seed_position(timed: bool) -> None:
    graph = random_graph(3, timed=timed)
    seeds = {"video": torch.tensor([3, 0, 3, 7]), "user": torch.tensor([5, 5]), "tag": torch.tensor([1])}
    times = ({"video": torch.tensor([60, 90, 30, 99]), "user": torch.tensor([70, 20]), "tag": torch.tensor([80])}
             if timed else None)
    out = NeighborSampler(graph, [-1, -1], temporal=timed, disjoint=True).sample(seeds, times, generator=gen(0))
    # Seeds keep their positions (a repeat is its own example), numbered over the types in order.
    assert out.node["video"][:4].tolist() == [3, 0, 3, 7] and out.node["user"][:2].tolist() == [5, 5]
    assert out.batch["video"][:4].tolist() == [0, 1, 2, 3] and out.batch["user"][:2].tolist() == [4, 5]
    assert out.node["tag"][:1].tolist() == [1] and out.batch["tag"][:1].tolist() == [6]
    assert (out.node_time is not None) == timed  # node_time only in temporal mode
    assert out.seed_index["video"].tolist() == [0, 1, 2, 3] and out.num_sampled_nodes["user"][0] == 2
    b = 0
    for t, ids in seeds.items():
        for p, g in enumerate(ids.tolist()):
            seed_time = {t: [int(times[t][p])]} if timed else None
            assert example_of(out, b) == reference(graph, {t: [g]}, hops=2, seed_time=seed_time), (t, p)
            if timed:  # every node of an example carries the example's seed time
                assert (out.node_time[t][out.batch[t] == b] == times[t][p]).all()
            b += 1
    for et in graph.edge_types:
        assert sum(out.num_sampled_edges[et]) == out.row[et].numel()


def test_disjoint_fanouts_and_many_examples_grow_the_tables() -> None:
    graph = random_graph(4)
    seeds = {"video": torch.arange(29).repeat(300)}  # 8700 examples: the pair tables regrow
    out = NeighborSampler(graph, [2, 3], disjoint=True).sample(seeds, generator=gen(1))
    assert out.batch["video"][:8700].tolist() == list(range(8700))
    for et in graph.edge_types:
        src, _, dst = et
        pairs = torch.stack([out.batch[src][out.row[et]], out.node[src][out.row[et]],
                             out.batch[dst][out.col[et]], out.node[dst][out.col[et]]])
        assert torch.equal(out.batch[src][out.row[et]], out.batch[dst][out.col[et]])
        assert pairs.unique(dim=1).shape[1] == pairs.shape[1]  # no edge twice in an example
    for t in graph.node_types:  # within an example a node appears once
        keyed = out.batch[t] * graph.num_nodes[t] + out.node[t]
        assert keyed.unique().numel() == keyed.numel()
    hop1 = per_node_counts(graph, out, WATCHES, 0)
    assert np.array_equal(hop1[1], np.minimum(hop1[2], 2))
    again = NeighborSampler(graph, [2, 3], disjoint=True).sample(seeds, generator=gen(1))
    assert same(out, again) and all(torch.equal(out.batch[t], again.batch[t]) for t in out.batch)


def test_disjoint_first_source_of_a_type_keeps_its_id() -> None:
    # Video 3 has one watcher, user 1: the first user of the batch is user 1, of example 0.
    out = NeighborSampler(literal_graph(), [1], disjoint=True).sample({"video": torch.tensor([3])}, generator=gen(0))
    assert out.node["user"].tolist() == [1] and out.batch["user"].tolist() == [0]
    assert out.row[WATCHES].tolist() == [0] and out.col[WATCHES].tolist() == [0]


def test_disjoint_replace_and_weighted_draw_like_the_shared_mode() -> None:
    # With replacement every example draws exactly the fanout, even above the degree.
    out = NeighborSampler(star_graph(3), [7], replace=True, disjoint=True).sample(
        {"video": torch.tensor([0, 0])}, generator=gen(0))
    assert out.num_sampled_edges[WATCHES] == [14] and out.col[WATCHES].bincount().tolist() == [7, 7]
    assert torch.equal(out.batch["user"][out.row[WATCHES]], out.batch["video"][out.col[WATCHES]])
    # Weighted: fanout 9 of 10 neighbours, one of weight 0: every example takes the 9 others.
    weight = torch.ones(10)
    weight[7] = 0.0
    out = NeighborSampler(star_graph(10, weight), [9], weighted=True, disjoint=True).sample(
        {"video": torch.zeros(20, dtype=torch.long)}, generator=gen(0))
    users = out.node["user"][out.row[WATCHES]]
    for b in range(20):
        assert sorted(users[out.col[WATCHES] == b].tolist()) == [0, 1, 2, 3, 4, 5, 6, 8, 9], b


def test_disjoint_temporal_strategies_per_example() -> None:
    # Video 0 watched by users 0..9 at times 10, 20, ..., 100; 60 examples at time 95 and 60 at 55.
    edges = EdgeList(src=torch.arange(10), dst=torch.zeros(10, dtype=torch.long), time=torch.arange(1, 11) * 10)
    graph = HeteroGraph.from_edges({"user": 10, "video": 1}, {WATCHES: edges})
    seeds = {"video": torch.zeros(120, dtype=torch.long)}
    seed_time = {"video": torch.tensor([95] * 60 + [55] * 60)}
    drawn = {}
    for strategy in ("uniform", "last"):
        out = NeighborSampler(graph, [2], temporal=True, temporal_strategy=strategy, disjoint=True).sample(
            seeds, seed_time, generator=gen(0))
        users = out.node["user"][out.row[WATCHES]]
        drawn[strategy] = [sorted(users[out.col[WATCHES] == b].tolist()) for b in range(120)]
        assert all(len(d) == 2 for d in drawn[strategy])
    # "last": the 2 most recent edges older than the example's time, whatever the generator.
    assert drawn["last"] == [[7, 8]] * 60 + [[3, 4]] * 60
    # "uniform": any 2 of the older edges; over 60 examples each older neighbour turns up.
    assert set(sum(drawn["uniform"][:60], [])) == set(range(9))
    assert set(sum(drawn["uniform"][60:], [])) == set(range(5))


def test_memory_mapped_graph_samples_like_in_memory(tmp_path):
    graph = random_graph(9, timed=True)
    mapped = HeteroGraph.load(graph.save(tmp_path / "g"), mmap=True)
    seed_time = {t: torch.full((s.numel(),), 60) for t, s in SEEDS.items()}
    a = NeighborSampler(graph, [3, 2], temporal=True).sample(SEEDS, seed_time, generator=gen(0))
    b = NeighborSampler(mapped, [3, 2], temporal=True).sample(SEEDS, seed_time, generator=gen(0))
    assert same(a, b) and all(torch.equal(a.node_time[t], b.node_time[t]) for t in a.node_time)


def test_parallel_kernel_only_for_large_frontiers_with_threads(monkeypatch):
    # Frontiers of this sample (3 hops): 2, 4, 4 (rows 4..8: lo > 0), 5, 13, 13, 15 nodes.
    monkeypatch.setattr(sampler_module, "PARALLEL_MIN_FRONTIER", 5)
    calls = []
    for name in ("sample_relation", "sample_relation_parallel"):
        kernel = getattr(_kernels, name)
        monkeypatch.setattr(_kernels, name, lambda *a, k=kernel, n=name: calls.append((n, a[7] - a[6])) or k(*a))
    graph = random_graph(3)
    one = NeighborSampler(graph, [2, 2, 2]).sample(SEEDS, generator=gen(7))
    assert calls and all(name == "sample_relation" for name, _ in calls)  # 1 thread: never the parallel kernel
    calls.clear()
    two = NeighborSampler(graph, [2, 2, 2], num_threads=2).sample(SEEDS, generator=gen(7))
    assert all((name == "sample_relation_parallel") == (size >= 5) for name, size in calls), calls
    assert {size for _, size in calls} >= {4, 5, 13} and same(one, two)


def test_interrupted_batch_leaves_the_sampler_clean(monkeypatch):
    graph = random_graph(3)
    sampler = NeighborSampler(graph, [2, 2])
    expected = NeighborSampler(graph, [2, 2]).sample(SEEDS, generator=gen(1))
    kernel, calls = _kernels.sample_relation, []

    def fail_third(*args):
        calls.append(1)
        if len(calls) == 3:  # seeds and some sampled nodes already sit in the global -> local maps
            raise RuntimeError("interrupted")
        return kernel(*args)

    monkeypatch.setattr(_kernels, "sample_relation", fail_third)
    with pytest.raises(RuntimeError, match="interrupted"):
        sampler.sample(SEEDS, generator=gen(1))
    monkeypatch.setattr(_kernels, "sample_relation", kernel)
    assert same(expected, sampler.sample(SEEDS, generator=gen(1)))


def test_seed_containers_and_a_single_edge_relation():
    graph = random_graph(2)
    sampler = NeighborSampler(graph, [3, 2])
    expected = sampler.sample(SEEDS, generator=gen(4))
    assert expected.node_time is None  # node_time only in temporal mode
    for convert in (lambda s: s.numpy(), lambda s: s.tolist()):
        assert same(expected, sampler.sample({t: convert(s) for t, s in SEEDS.items()}, generator=gen(4)))
    # An empty seed list of any dtype is no seed.
    empty = sampler.sample({"user": torch.empty(0), "video": torch.tensor([3])}, generator=gen(0))
    assert empty.node["video"][:1].tolist() == [3] and empty.seed_index["user"].numel() == 0
    # A relation holding one edge in all is sampled like any other.
    similar = ("video", "similar", "video")
    mixed = HeteroGraph.from_edges({"user": 3, "video": 2}, {WATCHES: (torch.tensor([0, 1]), torch.tensor([0, 1])),
                                                             similar: (torch.tensor([0]), torch.tensor([1]))})
    out = NeighborSampler(mixed, [1]).sample({"video": torch.tensor([1])}, generator=gen(0))
    assert global_pairs(out, similar) == {(0, 1)} and global_pairs(out, WATCHES) == {(1, 1)}


def odd_dtype_twin(graph: HeteroGraph) -> HeteroGraph:
    """The same graph with its arrays in other dtypes than the kernels' (as a graph saved by other
    code may hold): int32 offsets and times, uint16 sources, float64 weights."""
    def cast(a, dtype):
        return None if a is None else a.astype(dtype)
    return HeteroGraph(graph.num_nodes, {
        et: CSC(colptr=cast(c.colptr, np.int32), row=cast(c.row, np.uint16), time=cast(c.time, np.int32),
                weight=cast(c.weight, np.float64))
        for et, c in ((et, graph.csc(et)) for et in graph.edge_types)})


def test_any_array_dtypes_sample_alike_with_one_compiled_variant():
    # Arrays reach the kernels in one dtype each: odd dtypes sample the same subgraph and compile
    # no new kernel variant (numba compiles one per argument-type combination, seconds each).
    base = random_graph(4, timed=True, weighted=True)
    canonical = HeteroGraph(base.num_nodes, {  # int64 sources: what odd dtypes are converted to
        et: CSC(colptr=c.colptr, row=c.row.astype(np.int64), time=c.time, weight=c.weight)
        for et, c in ((et, base.csc(et)) for et in base.edge_types)})
    seed_time = {t: torch.randint(20, 100, (s.numel(),), generator=gen(3)) for t, s in SEEDS.items()}
    kwargs = dict(temporal=True, weighted=True)
    expected = NeighborSampler(canonical, [3, 2], **kwargs).sample(SEEDS, seed_time, generator=gen(0))
    kernels = [f for f in vars(_kernels).values() if hasattr(f, "signatures")]
    compiled = [len(f.signatures) for f in kernels]
    out = NeighborSampler(odd_dtype_twin(base), [3, 2], **kwargs).sample(
        {t: s.int() for t, s in SEEDS.items()}, {t: s.int() for t, s in seed_time.items()}, generator=gen(0))
    assert same(expected, out) and all(torch.equal(expected.node_time[t], out.node_time[t]) for t in out.node)
    assert [len(f.signatures) for f in kernels] == compiled


def test_sampler_memory_is_views_of_the_graph_and_int32_maps():
    # The sampler holds no copy of the graph (which may be memory-mapped and larger than RAM)
    # and one 4-byte global -> local entry per node.
    graph = random_graph(5, timed=True)
    sampler = NeighborSampler(graph, [3, 2], temporal=True)
    sampler.sample(SEEDS, {t: torch.full((s.numel(),), 50) for t, s in SEEDS.items()}, generator=gen(0))
    for et in graph.edge_types:
        csc = graph.csc(et)
        for array, original in zip(sampler._arrays[et], (csc.colptr, csc.row, csc.time)):
            assert np.shares_memory(array, original) or original.size == 0, et
    assert {t: m.nbytes for t, m in sampler._scratch.g2l.items()} == {t: 4 * n for t, n in graph.num_nodes.items()}


def test_pickle_round_trip_samples_identically():
    graph = random_graph(8)
    sampler = NeighborSampler(graph, [3, 2])
    before = sampler.sample(SEEDS, generator=gen(5))  # allocates the scratch maps
    blob = pickle.dumps(sampler)
    assert b"g2l" not in blob and len(blob) < graph.nbytes() + 20_000  # no scratch pickled
    # Nor the CSC views built on first use: a used sampler ships exactly what a fresh one does.
    assert len(blob) == len(pickle.dumps(NeighborSampler(graph, [3, 2])))
    copy = pickle.loads(blob)
    assert copy._scratch is None
    assert same(before, copy.sample(SEEDS, generator=gen(5)))
    assert same(before, sampler.sample(SEEDS, generator=gen(5)))  # scratch was reset after the batch


def test_sampler_repr_shows_its_configuration() -> None:
    graph = literal_graph()
    assert repr(NeighborSampler(graph, [2, 1])) == (
        "NeighborSampler(num_neighbors=[2, 1], replace=False, weighted=False, temporal=False, "
        "temporal_strategy='uniform', num_threads=1, disjoint=False, labor=False, node_types=2, relations=2)")
    # Fanouts that differ between relations are listed per relation, named like config files.
    per_relation = NeighborSampler(graph, {WATCHES: [2, 1], REV_WATCHES: [0, 3]}, replace=True, num_threads=2,
                                   disjoint=True)
    assert repr(per_relation) == (
        "NeighborSampler(num_neighbors={'user__watches__video': [2, 1], 'video__rev_watches__user': [0, 3]}, "
        "replace=True, weighted=False, temporal=False, temporal_strategy='uniform', num_threads=2, disjoint=True, "
        "labor=False, node_types=2, relations=2)")
    assert "disjoint=False, labor=True," in repr(NeighborSampler(graph, [2], labor=True))
    timed = random_graph(0, timed=True, weighted=True)
    assert repr(NeighborSampler(timed, [3], weighted=True, temporal=True)) == (
        "NeighborSampler(num_neighbors=[3], replace=False, weighted=True, temporal=True, "
        "temporal_strategy='uniform', num_threads=1, disjoint=False, labor=False, node_types=4, relations=8)")
    assert "temporal_strategy='last'" in repr(NeighborSampler(timed, [3], temporal=True, temporal_strategy="last"))


def test_fanouts_by_relation_names_relations_like_config_files() -> None:
    from torchrec_gnn.graph.sampler import fanouts_by_relation

    graph = HeteroGraph.from_edges({"user": 3, "video": 2}, {("user", "watches", "video"): (torch.tensor([0, 1]), torch.tensor([1, 0]))},
                                   add_reverse=True)
    fanouts = fanouts_by_relation(graph, [10, 5], {"video__rev_watches__user": [3, 0]})
    assert fanouts == {("user", "watches", "video"): [10, 5], ("video", "rev_watches", "user"): [3, 0]}
    with pytest.raises(ValueError, match=r"unknown relations \['user__likes__video'\]; the graph has \['user__watches__video', 'video__rev_watches__user'\]"):
        fanouts_by_relation(graph, [10, 5], {"user__likes__video": [1, 1]})


# ---------------------------------------------------------------------- edge-level sampling
def global_pairs(sub: SampledSubgraph, et) -> set:
    src, dst = sub.node[et[0]][sub.row[et]], sub.node[et[2]][sub.col[et]]
    return set(zip(src.tolist(), dst.tolist()))


@pytest.mark.parametrize("fanouts", [[-1, -1], [3, 2]])
def test_sample_from_edges_holds_the_links_out_and_labels_them(fanouts: List[int]) -> None:
    graph = random_graph(seed=3)
    sampler = NeighborSampler(graph, fanouts)
    every = graph.edge_index(WATCHES)
    links = every[:, torch.randperm(every.shape[1], generator=torch.Generator().manual_seed(0))[:12]]
    node_seeds = {"user": torch.tensor([1, 2, 2]), "video": torch.tensor([0, 5])}
    out = sampler.sample_from_edges(WATCHES, links, neg_ratio=2.0, node_seeds=node_seeds,
                                    generator=torch.Generator().manual_seed(1))
    sub = out.subgraph
    assert out.edge_label.tolist() == [1.0] * 12 + [0.0] * 24
    users, videos = sub.node["user"][out.edge_label_index[0]], sub.node["video"][out.edge_label_index[1]]
    assert torch.equal(users[:12], links[0]) and torch.equal(videos[:12], links[1])
    assert torch.equal(users[12:], links[0].repeat(2))  # each negative keeps a link's user
    # The node seeds come first, in input order (repeats map to one row).
    assert sub.seed_index["user"][:3].tolist() == [0, 1, 1] and sub.node["user"][:2].tolist() == [1, 2]
    assert torch.equal(sub.node["video"][sub.seed_index["video"][:2]], node_seeds["video"])
    # No link is readable in either direction; every other sampled edge is a real one.
    held = set(zip(links[0].tolist(), links[1].tolist()))
    assert not held & global_pairs(sub, WATCHES)
    assert not held & {(u, v) for v, u in global_pairs(sub, REV_WATCHES)}
    for et in graph.edge_types:
        src, dst = graph.edge_index(et)
        assert global_pairs(sub, et) <= set(zip(src.tolist(), dst.tolist()))
        counts = sub.num_sampled_edges[et]
        assert sum(counts) == sub.row[et].numel() and len(counts) == 2
    if fanouts == [-1, -1]:  # all neighbours: exactly the links (and their reverses) are missing
        seeds = set(links[1].tolist())
        around = {(u, v) for u, v in zip(*every.tolist()) if v in seeds}
        assert {(u, v) for u, v in global_pairs(sub, WATCHES) if v in seeds} == around - held


def test_sample_from_edges_keeps_hop_counts_in_order() -> None:
    graph = random_graph(seed=4)
    sampler = NeighborSampler(graph, [-1, -1])
    links = graph.edge_index(WATCHES)[:, :20]
    kept = sampler.sample_from_edges(WATCHES, links, generator=torch.Generator().manual_seed(0)).subgraph
    full = sampler.sample_from_edges(WATCHES, links, exclude_links=False, generator=torch.Generator().manual_seed(0)).subgraph
    for et in (WATCHES, REV_WATCHES):
        assert sum(kept.num_sampled_edges[et]) < sum(full.num_sampled_edges[et])
        # Removing edges keeps the rest in hop order: hop h's edges are the unremoved ones of hop h.
        bounds = np.cumsum([0, *full.num_sampled_edges[et]])
        held = set(zip(links[0].tolist(), links[1].tolist()))
        for hop in range(2):
            rows = range(bounds[hop], bounds[hop + 1])
            pairs = [(int(full.node[et[0]][full.row[et][i]]), int(full.node[et[2]][full.col[et][i]])) for i in rows]
            expected = [p for p in pairs if (p if et == WATCHES else p[::-1]) not in held]
            lo = sum(kept.num_sampled_edges[et][:hop])
            got = [(int(kept.node[et[0]][kept.row[et][i]]), int(kept.node[et[2]][kept.col[et][i]]))
                   for i in range(lo, lo + kept.num_sampled_edges[et][hop])]
            assert got == expected


def test_sample_from_edges_same_type_relation_and_errors() -> None:
    graph = random_graph(seed=5)
    follows = ("user", "follows", "user")
    sampler = NeighborSampler(graph, [4])
    links = graph.edge_index(follows)[:, :6]
    out = sampler.sample_from_edges(follows, links, neg_ratio=1.0, generator=torch.Generator().manual_seed(0))
    ids = out.subgraph.node["user"]
    assert torch.equal(ids[out.edge_label_index[0][:6]], links[0]) and torch.equal(ids[out.edge_label_index[1][:6]], links[1])
    assert not set(zip(*links.tolist())) & global_pairs(out.subgraph, follows)
    with pytest.raises(ValueError, match="unknown relation"):
        sampler.sample_from_edges(("user", "nope", "video"), links)
    with pytest.raises(ValueError, match=r"must be a \(2, P\) integer tensor"):
        sampler.sample_from_edges(follows, links[0])
    with pytest.raises(ValueError, match="outside"):
        sampler.sample_from_edges(WATCHES, torch.tensor([[0], [99]]))
    temporal = NeighborSampler(random_graph(seed=5, timed=True), [4], temporal=True)
    with pytest.raises(ValueError, match="needs edge_label_time"):
        temporal.sample_from_edges(follows, links)


def test_sample_from_edges_is_deterministic_for_a_generator_seed() -> None:
    graph = random_graph(seed=6)
    sampler = NeighborSampler(graph, [3, 2])
    links = graph.edge_index(WATCHES)[:, :10]
    a, b = (sampler.sample_from_edges(WATCHES, links, generator=torch.Generator().manual_seed(7)) for _ in range(2))
    assert torch.equal(a.edge_label_index, b.edge_label_index)
    assert all(torch.equal(a.subgraph.row[et], b.subgraph.row[et]) for et in graph.edge_types)


def test_sample_from_edges_negative_counts_and_link_checks() -> None:
    graph = random_graph(seed=6)
    sampler = NeighborSampler(graph, [2])
    links = graph.edge_index(WATCHES)[:, :4]
    # Default: one negative per link; 0 means none; round(neg_ratio * P) in general.
    for kwargs, negatives in (({}, 4), ({"neg_ratio": 0.0}, 0), ({"neg_ratio": 0.5}, 2)):
        out = sampler.sample_from_edges(WATCHES, links, generator=gen(0), **kwargs)
        assert out.edge_label.tolist() == [1.0] * 4 + [0.0] * negatives, kwargs
        assert out.edge_label_index.shape == (2, 4 + negatives)
    # A single link cycles its source over all its negatives.
    one = sampler.sample_from_edges(WATCHES, links[:, :1], neg_ratio=3.0, generator=gen(0))
    assert one.subgraph.node["user"][one.edge_label_index[0]].tolist() == [int(links[0, 0])] * 4
    for bad in (torch.zeros(3, 4, dtype=torch.long), torch.tensor([0, 1]), links.float()):
        with pytest.raises(ValueError, match=r"edge_label_index must be a \(2, P\) integer tensor"):
            sampler.sample_from_edges(WATCHES, bad)
    with pytest.raises(ValueError, match=r"neg_ratio must be >= 0, got -1"):
        sampler.sample_from_edges(WATCHES, links, neg_ratio=-1)


def test_sample_from_edges_negatives_are_uniform_over_destinations() -> None:
    # 3 videos; 600 negatives of one link: each video, video 0 included, about 200 times.
    edges = (torch.tensor([0, 1]), torch.tensor([0, 2]))
    graph = HeteroGraph.from_edges({"user": 2, "video": 3}, {WATCHES: edges})
    out = NeighborSampler(graph, [1]).sample_from_edges(WATCHES, torch.tensor([[0], [0]]), neg_ratio=600.0,
                                                       generator=gen(0))
    negatives = out.subgraph.node["video"][out.edge_label_index[1][1:]]
    counts = np.bincount(negatives.numpy(), minlength=3)
    assert counts.sum() == 600 and (((counts - 200) ** 2) / 200).sum() < 13.8, counts  # chi-square, 2 dof, p = 0.001


def test_temporal_sample_from_edges_equals_reference_bfs() -> None:
    # Unix-second times: each endpoint (and negative) sees only edges older than its link.
    t0 = 1_700_000_000
    graph = random_graph(seed=7, timed=True, t0=t0)
    sampler = NeighborSampler(graph, [-1, -1], temporal=True)
    links = graph.edge_index(WATCHES)[:, :6]
    link_time = t0 + torch.tensor([20, 45, 60, 70, 90, 99])
    node_seeds, seed_time = {"user": torch.tensor([1, 2])}, {"user": t0 + torch.tensor([50, 80])}
    out = sampler.sample_from_edges(WATCHES, links, neg_ratio=1.0, node_seeds=node_seeds, seed_time=seed_time,
                                    edge_label_time=link_time, exclude_links=False, generator=gen(0))
    sub = out.subgraph
    users = sub.node["user"][out.edge_label_index[0]].tolist()
    videos = sub.node["video"][out.edge_label_index[1]].tolist()
    assert users == links[0].tolist() * 2 and videos[:6] == links[1].tolist()
    times = (link_time.tolist() * 2)
    nodes, edges = reference(graph, {"user": [1, 2] + users, "video": videos}, 2,
                             {"user": seed_time["user"].tolist() + times, "video": times})
    for t in graph.node_types:
        assert sub.node[t].tolist() == nodes[t], t
    for et in graph.edge_types:
        assert list(zip(sub.row[et].tolist(), sub.col[et].tolist(), sub.edge[et].tolist())) == edges[et], et
    for t, seeds in (("user", [1, 2] + users), ("video", videos)):  # seeds carry the earliest of their times
        expected = {}
        for g, tm in zip(seeds, (seed_time["user"].tolist() + times) if t == "user" else times):
            expected[g] = min(expected.get(g, tm), tm)
        assert [int(sub.node_time[t][sub.node[t] == g]) for g in expected] == list(expected.values())
    with pytest.raises(ValueError, match=r"^NeighborSampler\.sample_from_edges: temporal=True needs edge_label_time"):
        sampler.sample_from_edges(WATCHES, links)
    with pytest.raises(ValueError, match=r"edge_label_time has shape \(3,\), expected \(6,\)"):
        sampler.sample_from_edges(WATCHES, links, edge_label_time=link_time[:3])


def test_exclude_links_drops_only_the_links_and_their_reverses() -> None:
    # The link user 2 -> video 5 is not a "watches" edge; its reverse is the only "rev_watches"
    # edge, and "follows" holds 5 -> 2 (the link's ids, swapped, in a relation that is no reverse).
    relations = {
        WATCHES: (torch.tensor([1, 2]), torch.tensor([5, 3])),
        REV_WATCHES: (torch.tensor([5]), torch.tensor([2])),
        ("user", "follows", "user"): (torch.tensor([5, 0]), torch.tensor([2, 2])),
    }
    graph = HeteroGraph.from_edges({"user": 6, "video": 6}, relations)
    out = NeighborSampler(graph, [-1]).sample_from_edges(WATCHES, torch.tensor([[2], [5]]), neg_ratio=0.0,
                                                       generator=gen(0))
    sub = out.subgraph
    assert global_pairs(sub, WATCHES) == {(1, 5)}
    assert global_pairs(sub, REV_WATCHES) == set() and sub.num_sampled_edges[REV_WATCHES] == [0]
    assert global_pairs(sub, ("user", "follows", "user")) == {(5, 2), (0, 2)}


# ---------------------------------------------------------------------- LABOR
def shared_neighbourhood(num_dst: int, num_src: int) -> HeteroGraph:
    """Every one of ``num_dst`` videos is watched by the same ``num_src`` users."""
    src = torch.arange(num_src).repeat(num_dst)
    dst = torch.arange(num_dst).repeat_interleave(num_src)
    return HeteroGraph.from_edges({"user": num_src, "video": num_dst}, {WATCHES: (src, dst)})


@pytest.mark.parametrize("timed", [False, True])
def test_labor_samples_valid_subgraphs_and_keeps_small_neighbourhoods_whole(timed: bool) -> None:
    graph = random_graph(3, timed=timed)
    sampler = NeighborSampler(graph, [3, 2], labor=True, temporal=timed)
    for s in range(5):
        seed_time = {t: torch.full_like(ids, 60) for t, ids in SEEDS.items()} if timed else None
        out = sampler.sample(SEEDS, seed_time=seed_time, generator=gen(s))
        check_valid(graph, out, SEEDS)
        for et in graph.edge_types:
            for hop in range(2):
                _, got, degree = per_node_counts(graph, out, et, hop, older=timed)
                small = degree <= sampler.num_neighbors[et][hop]
                assert np.array_equal(got[small], degree[small]), (et, hop)  # every usable edge
                assert bool((got <= degree).all())
        assert same(out, sampler.sample(SEEDS, seed_time=seed_time, generator=gen(s)))  # seeded


def test_labor_draws_the_fanout_in_expectation_uniformly() -> None:
    """A node with d > k in-edges keeps k of them on average, each edge with probability k / d."""
    degree, fanout, draws = 40, 5, 3000
    sampler = NeighborSampler(star_graph(degree), [fanout], labor=True)
    counts = np.zeros(degree)
    kept = []
    for s in range(draws):
        out = sampler.sample({"video": torch.tensor([0])}, generator=gen(s))
        counts[out.node["user"].numpy()] += 1
        kept.append(out.row[WATCHES].numel())
    assert abs(np.mean(kept) - fanout) < 0.15  # std of the mean: sqrt(5 * 0.875 / 3000) ~ 0.04
    assert np.abs(counts / draws - fanout / degree).max() < 0.04  # per edge 0.125, std ~ 0.006


def test_labor_overlapping_neighbourhoods_keep_the_same_nodes() -> None:
    """50 videos with the same 1000 watchers, fanout 10: uniform draws reach ~400 distinct users,
    LABOR the ~10 whose shared random number is below 10 / 1000, for every video alike."""
    graph = shared_neighbourhood(50, 1000)
    seeds = {"video": torch.arange(50)}
    uniform = NeighborSampler(graph, [10]).sample(seeds, generator=gen(0))
    labor = NeighborSampler(graph, [10], labor=True).sample(seeds, generator=gen(0))
    assert uniform.node["user"].numel() > 300
    assert 1 <= labor.node["user"].numel() <= 25
    per_video = np.bincount(labor.col[WATCHES].numpy(), minlength=50)
    assert (per_video == labor.node["user"].numel()).all()  # each video keeps exactly the shared set
    other = NeighborSampler(graph, [10], labor=True).sample(seeds, generator=gen(1))
    assert set(other.node["user"].tolist()) != set(labor.node["user"].tolist())  # fresh numbers per call


def test_labor_refuses_what_it_cannot_draw() -> None:
    graph = random_graph(0, timed=True, weighted=True)
    for kwargs, got in (({"replace": True}, "replace=True, weighted=False, disjoint=False, temporal_strategy='uniform'"),
                        ({"weighted": True}, "replace=False, weighted=True, disjoint=False, temporal_strategy='uniform'"),
                        ({"disjoint": True}, "replace=False, weighted=False, disjoint=True, temporal_strategy='uniform'"),
                        ({"temporal": True, "temporal_strategy": "last"},
                         "replace=False, weighted=False, disjoint=False, temporal_strategy='last'")):
        message = ("NeighborSampler(labor=True): LABOR draws each node's in-edges by its sources' shared random "
                   "numbers; it needs replace=False, weighted=False, disjoint=False and temporal_strategy='uniform' "
                   f"(got {got})")
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            NeighborSampler(graph, [2], labor=True, **kwargs)

"""GraphBatchDataset / make_dataloader: batch contents against the examples and the graph,
determinism across workers and epochs, rank partitioning, errors and temporal sampling.

Batches are traced back to their examples through an extra sparse feature ``"row"`` holding each
example's position, so no test depends on how the loader shuffles.
"""

from typing import Dict, List, Sequence, Set, Tuple

import numpy as np
import pytest
import torch

from conftest import tiny_log_dataset
from torchrec_gnn.data.batch import GraphBatch, RelationCSR
from torchrec_gnn.data.dataset import Interactions
from torchrec_gnn.data.loader import BatchPlan, BatchSchema, GraphBatchBuilder, GraphBatchDataset, LinkTargets, make_dataloader
from torchrec_gnn.data.split import TimeSplit
from torchrec_gnn.graph.degree import DegreeFeatures
from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.graph.sampler import NeighborSampler, SampledSubgraph
from torchrec_gnn.typing import EdgeList

SPARSE = ["user_id", "item_id", "genre"]
GENRE_RELATIONS = (("item", "in", "genre"), ("genre", "rev_in", "item"))


# ---------------------------------------------------------------------- helpers
def with_row_ids(examples: Interactions) -> Interactions:
    """The examples plus a sparse feature ``"row"`` = each example's position (its identity)."""
    return Interactions(
        user=examples.user, item=examples.item, timestamp=examples.timestamp, labels=examples.labels,
        dense=examples.dense, sparse={**examples.sparse, "row": torch.arange(len(examples))},
    )


def make_dataset(split: TimeSplit, batch_size: int = 64, fanouts=(5, 3), sparse_names: Sequence[str] = (*SPARSE, "row"),
                 **kwargs) -> GraphBatchDataset:
    sampler = NeighborSampler(split.graph, fanouts if isinstance(fanouts, dict) else list(fanouts))
    built = {k: kwargs.pop(k) for k in ("node_features", "degree", "links", "csr") if k in kwargs}  # the rest is the plan's
    schema = BatchSchema("user", "item", split.graph.node_types, list(sparse_names))
    return GraphBatchDataset(with_row_ids(split.train), GraphBatchBuilder(sampler, schema, **built),
                             BatchPlan(batch_size, **kwargs))


def rows_of(batch: GraphBatch) -> torch.Tensor:
    """(B,) positions of the batch's examples in the dataset's examples."""
    return batch.sparse_features["row"].values()


def unique_in_order(ids: torch.Tensor) -> List[int]:
    return list(dict.fromkeys(ids.tolist()))


def graph_edges(graph: HeteroGraph) -> Dict[Tuple[str, str, str], Set[Tuple[int, int]]]:
    return {et: set(map(tuple, graph.edge_index(et).T.tolist())) for et in graph.edge_types}


def assert_batches_equal(a: GraphBatch, b: GraphBatch) -> None:
    ga, gb = a.graph_features, b.graph_features
    for name in ("dense_features", "labels", "label_mask"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for name in ("user_index", "item_index"):
        assert torch.equal(getattr(ga, name), getattr(gb, name)), name
    for ka, kb in ((a.sparse_features, b.sparse_features), (ga.node_ids, gb.node_ids)):
        assert ka.keys() == kb.keys() and ka.stride() == kb.stride()
        assert torch.equal(ka.values(), kb.values()) and torch.equal(ka.lengths(), kb.lengths())
    assert ga.edge_index.keys() == gb.edge_index.keys()
    assert all(torch.equal(ga.edge_index[et], gb.edge_index[et]) for et in ga.edge_index)
    assert ga.num_sampled_nodes == gb.num_sampled_nodes and ga.num_sampled_edges == gb.num_sampled_edges
    assert ga.node_features.keys() == gb.node_features.keys()
    assert all(torch.equal(ga.node_features[t], gb.node_features[t]) for t in ga.node_features)
    assert ga.csr.keys() == gb.csr.keys()
    assert all(len(ga.csr[et].tensors()) == len(gb.csr[et].tensors()) and
               all(torch.equal(x, y) for x, y in zip(ga.csr[et].tensors(), gb.csr[et].tensors())) for et in ga.csr)


@pytest.fixture(scope="module")
def dataset(tiny_split: TimeSplit) -> GraphBatchDataset:
    return make_dataset(tiny_split, shuffle=True, seed=3)


@pytest.fixture(scope="module")
def batches(dataset: GraphBatchDataset) -> List[GraphBatch]:
    return [dataset[i] for i in range(len(dataset))]


# ---------------------------------------------------------------------- batch contents
def test_every_example_is_served_once_per_epoch(dataset, batches) -> None:
    rows = torch.cat([rows_of(b) for b in batches])
    assert sorted(rows.tolist()) == list(range(len(dataset.examples)))
    assert [b.batch_size for b in batches] == [64] * 5 + [len(dataset.examples) - 5 * 64]


def test_seed_rows_hold_the_examples_ids(dataset, batches) -> None:
    ex = dataset.examples
    for b in batches:
        g = b.graph_features
        rows = rows_of(b)
        assert g.user_index.dtype == g.item_index.dtype == torch.int64
        assert torch.equal(g.node_ids["user"].values()[g.user_index], ex.user[rows])
        assert torch.equal(g.node_ids["item"].values()[g.item_index], ex.item[rows])


def test_node_ids_one_row_per_node_type_seeds_first(dataset, batches, tiny_split) -> None:
    ex = dataset.examples
    for b in batches:
        g = b.graph_features
        kjt = g.node_ids
        counts = [sum(g.num_sampled_nodes[t]) for t in kjt.keys()]
        assert kjt.keys() == tiny_split.graph.node_types and kjt.stride() == max(counts)
        assert kjt.length_per_key() == counts  # one id per bag, then empty bags up to the stride
        assert kjt.lengths().tolist() == sum(([1] * n + [0] * (max(counts) - n) for n in counts), [])
        assert g.num_nodes == {t: sum(g.num_sampled_nodes[t]) for t in kjt.keys()}
        rows = rows_of(b)
        for t, seeds in (("user", ex.user[rows]), ("item", ex.item[rows]), ("genre", torch.empty(0, dtype=torch.long))):
            ids = kjt[t].values()
            expected = unique_in_order(seeds)
            assert g.num_sampled_nodes[t][0] == len(expected)  # hop 0 = the distinct seeds
            assert ids[: len(expected)].tolist() == expected  # first, in first-appearance order
            assert len(set(ids.tolist())) == ids.numel()  # deduplicated
            assert len(g.num_sampled_nodes[t]) == 3  # hops 0, 1, 2
        # Per-example indices stay inside the seed block.
        assert int(g.user_index.max()) < g.num_sampled_nodes["user"][0]
        assert int(g.item_index.max()) < g.num_sampled_nodes["item"][0]


def test_node_type_without_sampled_nodes_keeps_its_empty_key(tiny_split) -> None:
    fanouts = {et: ([0, 0] if et in GENRE_RELATIONS else [4, 2]) for et in tiny_split.graph.edge_types}
    b = make_dataset(tiny_split, fanouts=fanouts)[0]
    g = b.graph_features
    assert g.node_ids.keys() == ["user", "item", "genre"]
    assert g.num_nodes["genre"] == 0 and g.node_ids["genre"].values().numel() == 0
    assert g.num_sampled_nodes["genre"] == [0, 0, 0]
    assert all(g.edge_index[et].shape == (2, 0) for et in GENRE_RELATIONS)
    assert g.num_nodes["user"] > 0 and g.num_nodes["item"] > 0


def test_every_sampled_edge_exists_in_the_graph(batches, tiny_split) -> None:
    exists = graph_edges(tiny_split.graph)
    for b in batches:
        g = b.graph_features
        assert g.edge_index.keys() == set(tiny_split.graph.edge_types)
        for (src, rel, dst), e in g.edge_index.items():
            et = (src, rel, dst)
            assert e.dtype == torch.int64 and e.shape == (2, sum(g.num_sampled_edges[et]))
            assert e.numel() == 0 or (int(e[0].max()) < g.num_nodes[src] and int(e[1].max()) < g.num_nodes[dst])
            pairs = zip(g.node_ids[src].values()[e[0]].tolist(), g.node_ids[dst].values()[e[1]].tolist())
            missing = [p for p in pairs if p not in exists[et]]
            assert not missing, f"{et}: sampled edges not in the graph: {missing[:5]}"
    assert sum(b.graph_features.edge_index[("user", "watches", "item")].shape[1] for b in batches) > 0


def test_labels_and_mask_for_missing_labels(dataset, batches) -> None:
    ex = dataset.examples
    for b in batches:
        raw = ex.labels[rows_of(b)]
        assert b.label_mask.dtype == torch.bool and torch.equal(b.label_mask, ~torch.isnan(raw))
        assert not bool(torch.isnan(b.labels).any())
        assert torch.equal(b.labels, torch.nan_to_num(raw, nan=0.0))
    assert sum(int((~b.label_mask).sum()) for b in batches) > 0  # the fixture has NaN stays


def test_dense_and_sparse_features_are_the_examples_rows(dataset, batches) -> None:
    ex = dataset.examples
    for b in batches:
        rows = rows_of(b)
        assert torch.equal(b.dense_features, ex.dense[rows])
        kjt = b.sparse_features
        assert kjt.keys() == [*SPARSE, "row"] and kjt.stride() == b.batch_size
        assert bool((kjt.lengths() == 1).all())
        for name in SPARSE:
            assert torch.equal(kjt[name].values(), ex.sparse[name][rows]), name


def test_csr_arrays_are_each_hop_prefix_matrix_and_its_transpose(tiny_split) -> None:
    """With ``csr=True`` every relation's arrays describe the matrix of its first h hops' edges
    (destinations within h - 1 hops, sources within h hops) and that matrix's transpose."""
    batch = make_dataset(tiny_split, csr=True, shuffle=True, seed=3)[1]
    graph = batch.graph_features
    assert graph.csr.keys() == graph.edge_index.keys() and make_dataset(tiny_split)[1].graph_features.csr == {}
    hop_counts = []
    for (src, rel, dst), edges in graph.edge_index.items():
        csr = graph.csr[(src, rel, dst)]
        assert len(csr.crow_t) == len(csr.col_t) == 2 and csr.crow.numel() == graph.num_nodes[dst] + 1
        for h in (1, 2):
            num_edges = sum(graph.num_sampled_edges[(src, rel, dst)][:h])
            rows, cols = sum(graph.num_sampled_nodes[dst][:h]), sum(graph.num_sampled_nodes[src][: h + 1])
            matrix = torch.zeros(rows, cols, dtype=torch.int64).index_put_(
                (edges[1, :num_edges], edges[0, :num_edges]), torch.ones(num_edges, dtype=torch.int64), accumulate=True)
            crow = csr.crow[: rows + 1]
            assert int(crow[-1]) == num_edges
            rebuilt = torch.zeros_like(matrix).index_put_(
                (torch.repeat_interleave(torch.arange(rows), crow.diff()), edges[0, :num_edges]),
                torch.ones(num_edges, dtype=torch.int64), accumulate=True)
            assert torch.equal(rebuilt, matrix)
            crow_t, col_t = csr.crow_t[h - 1], csr.col_t[h - 1]
            assert crow_t.numel() == cols + 1 and col_t.numel() == num_edges
            transposed = torch.zeros(cols, rows, dtype=torch.int64).index_put_(
                (torch.repeat_interleave(torch.arange(cols), crow_t.diff()), col_t),
                torch.ones(num_edges, dtype=torch.int64), accumulate=True)
            assert torch.equal(transposed, matrix.t())
            hop_counts.append(num_edges)
    assert max(hop_counts) > 0


def test_relation_csr_refuses_edges_out_of_hop_order(tiny_split) -> None:
    graph = make_dataset(tiny_split)[0].graph_features
    et = max(graph.edge_index, key=lambda et: graph.num_sampled_edges[et][0])
    edges = graph.edge_index[et]
    counts = (graph.num_sampled_edges[et], graph.num_sampled_nodes[et[0]], graph.num_sampled_nodes[et[2]])
    RelationCSR.from_sample(edges, *counts)
    with pytest.raises(ValueError, match="grouped by destination, hop by hop"):
        RelationCSR.from_sample(edges.flip(1), *counts)
    with pytest.raises(ValueError, match=r"the first 1 hop\(s\)' \d+ edges must end at the \d+ destinations"):
        RelationCSR.from_sample(edges, [0, sum(counts[0])], *counts[1:])  # hop 1's edges counted as hop 2's


def test_node_features_are_gathered_for_the_sampled_nodes(tiny_split) -> None:
    features = {"item": torch.randn(tiny_split.graph.num_nodes["item"], 4, generator=torch.Generator().manual_seed(0))}
    b = make_dataset(tiny_split, node_features=features)[1]
    g = b.graph_features
    assert g.node_features.keys() == {"item"}
    assert torch.equal(g.node_features["item"], features["item"][g.node_ids["item"].values()])


def test_same_user_and_item_type_share_one_seed_block() -> None:
    """Friend recommendation: user and item are both ``user`` nodes, seeds are deduplicated together."""
    user, item = torch.tensor([0, 1, 2, 3, 1]), torch.tensor([1, 4, 0, 5, 2])
    n = user.numel()
    examples = Interactions(user=user, item=item, timestamp=torch.zeros(n, dtype=torch.long),
                            labels=torch.ones(n, 1), dense=torch.zeros(n, 1))
    graph = HeteroGraph.from_edges({"user": 6}, {("user", "friend", "user"): EdgeList(src=user, dst=item)},
                                   add_reverse=True)
    ds = GraphBatchDataset(
        examples,
        GraphBatchBuilder(NeighborSampler(graph, [2]), BatchSchema("user", "user", ["user"], [])),
        BatchPlan(5),
    )
    b = ds[0]
    g = b.graph_features
    ids = g.node_ids["user"].values()
    assert g.num_sampled_nodes["user"][0] == len(unique_in_order(torch.cat([user, item])))
    assert torch.equal(ids[g.user_index], user) and torch.equal(ids[g.item_index], item)
    assert b.sparse_features.keys() == [] and b.batch_size == 5


def test_same_type_links_ride_along_after_the_examples() -> None:
    user, item = torch.tensor([0, 1, 2, 3]), torch.tensor([1, 4, 0, 5])
    examples = Interactions(user=user, item=item, timestamp=torch.zeros(4, dtype=torch.long),
                            labels=torch.ones(4, 1), dense=torch.zeros(4, 1))
    friend = ("user", "friend", "user")
    graph = HeteroGraph.from_edges({"user": 6}, {friend: EdgeList(src=user, dst=item)}, add_reverse=True)
    links = LinkTargets(friend, torch.tensor([[2], [0]]), per_batch=1)
    b = GraphBatchDataset(
        examples,
        GraphBatchBuilder(NeighborSampler(graph, [-1]), BatchSchema("user", "user", ["user"], []), links=links),
        BatchPlan(4),
    )[0]
    g = b.graph_features
    ids = g.node_ids["user"].values()
    assert torch.equal(ids[g.user_index], user) and torch.equal(ids[g.item_index], item)
    assert ids[g.link_index[:, 0]].tolist() == [2, 0] and g.link_label.tolist() == [1.0, 0.0]
    visible = {(int(ids[s]), int(ids[d])) for s, d in g.edge_index[friend].t()}
    assert (2, 0) not in visible and (1, 4) in visible


def test_links_ride_along_the_example_batches(tiny_split) -> None:
    links = LinkTargets.from_graph(tiny_split.graph, "user", "item", None, per_batch=20, neg_ratio=1.0)
    assert links.edge_type == ("user", "watches", "item")
    schema = BatchSchema("user", "item", tiny_split.graph.node_types, SPARSE)

    def with_links() -> GraphBatchDataset:
        builder = GraphBatchBuilder(NeighborSampler(tiny_split.graph, [5, 3]), schema, links=links)
        return GraphBatchDataset(tiny_split.train, builder, BatchPlan(64, shuffle=True))

    data = with_links()
    drawn = []
    for i in range(len(data)):
        b = data[i]
        g = b.graph_features
        users, items = g.node_ids["user"].values(), g.node_ids["item"].values()
        assert g.link_index.shape == (2, 40) and g.link_label.tolist() == [1.0] * 20 + [0.0] * 20
        assert torch.equal(users[g.user_index], b.sparse_features["user_id"].values())  # examples unchanged
        drawn += list(zip(users[g.link_index[0, :20]].tolist(), items[g.link_index[1, :20]].tolist()))
        watched = g.edge_index[("user", "watches", "item")]
        assert not set(drawn[-20:]) & set(zip(users[watched[0]].tolist(), items[watched[1]].tolist()))
    # One epoch walks through distinct history edges (wrapping only past the end).
    every = set(zip(*tiny_split.graph.edge_index(links.edge_type).tolist()))
    assert set(drawn) <= every and len(set(drawn)) == min(len(drawn), len(every))
    data.set_epoch(1)
    assert not torch.equal(data[0].graph_features.link_index, with_links()[0].graph_features.link_index)
    with pytest.raises(ValueError, match="must go from the user type"):
        GraphBatchDataset(
            tiny_split.train,
            GraphBatchBuilder(
                NeighborSampler(tiny_split.graph, [5]),
                BatchSchema("item", "user", tiny_split.graph.node_types, SPARSE),
                links=links,
            ),
            BatchPlan(64),
        )


# ---------------------------------------------------------------------- determinism
def epoch_batches(dataset: GraphBatchDataset, epoch: int, num_workers: int) -> List[GraphBatch]:
    dataset.set_epoch(epoch)
    return list(make_dataloader(dataset, num_workers=num_workers, prefetch_factor=2))


def test_same_seed_and_epoch_give_identical_batches_with_0_or_2_workers(tiny_split) -> None:
    dataset = make_dataset(tiny_split, batch_size=48, shuffle=True, seed=7, csr=True)  # CSR arrays cross too
    in_process = epoch_batches(dataset, epoch=1, num_workers=0)
    in_workers = epoch_batches(dataset, epoch=1, num_workers=2)
    assert len(in_process) == len(in_workers) == len(dataset) == 8
    for a, b in zip(in_process, in_workers):
        assert isinstance(b, GraphBatch)
        assert_batches_equal(a, b)
    # A fresh dataset object with the same seed reproduces them too (no hidden state).
    again = make_dataset(tiny_split, batch_size=48, shuffle=True, seed=7, csr=True)
    again.set_epoch(1)
    assert_batches_equal(again[3], in_process[3])


def test_epochs_reshuffle_and_shuffle_false_keeps_file_order(tiny_split) -> None:
    dataset = make_dataset(tiny_split, batch_size=48, shuffle=True, seed=7)
    order = {e: torch.cat([rows_of(b) for b in epoch_batches(dataset, e, 0)]) for e in (0, 1)}
    assert not torch.equal(order[0], order[1])
    assert sorted(order[0].tolist()) == sorted(order[1].tolist()) == list(range(len(dataset.examples)))
    dataset.set_epoch(0)
    assert torch.equal(rows_of(dataset[0]), order[0][:48])  # back to epoch 0: same order again
    plain = make_dataset(tiny_split, batch_size=48)
    assert torch.equal(torch.cat([rows_of(plain[i]) for i in range(len(plain))]), torch.arange(len(plain.examples)))


# ---------------------------------------------------------------------- ranks
@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_get_equal_disjoint_shares_of_one_global_order(tiny_split, drop_last) -> None:
    # 360 training examples in batches of 45: 8 batches, so 2 ranks drop nothing; 3 ranks drop 2.
    n = len(tiny_split.train)
    whole = make_dataset(tiny_split, batch_size=45, shuffle=True, seed=1, drop_last=drop_last)
    global_batches = [whole[i] for i in range(len(whole))]
    for world_size in (2, 3):
        ranks = [
            make_dataset(tiny_split, batch_size=45, shuffle=True, seed=1, drop_last=drop_last,
                         rank=r, world_size=world_size)
            for r in range(world_size)
        ]
        assert len({len(d) for d in ranks}) == 1 and len(ranks[0]) == len(whole) // world_size
        served = [torch.cat([rows_of(d[i]) for i in range(len(d))]) for d in ranks]
        for a in range(world_size):
            for c in range(a + 1, world_size):
                assert not set(served[a].tolist()) & set(served[c].tolist())
        # Rank r's batch i is global batch i * world_size + r (same rows and the same subgraph).
        for r, d in enumerate(ranks):
            for i in range(len(d)):
                assert_batches_equal(d[i], global_batches[i * world_size + r])
        tail = global_batches[len(ranks[0]) * world_size:]
        assert len(tail) < world_size
        covered = torch.cat(served + [rows_of(b) for b in tail])
        assert sorted(covered.tolist()) == list(range(n))


def test_two_ranks_through_make_dataloader_workers(tiny_split) -> None:
    ranks = [make_dataset(tiny_split, batch_size=40, shuffle=True, seed=2, rank=r, world_size=2) for r in (0, 1)]
    served = [torch.cat([rows_of(b) for b in epoch_batches(d, 0, num_workers=2)]) for d in ranks]
    assert len(ranks[0]) == len(ranks[1]) == 4  # 9 batches of 40: the 9th is the dropped tail
    assert served[0].numel() == served[1].numel() == 160
    assert not set(served[0].tolist()) & set(served[1].tolist())


# ---------------------------------------------------------------------- errors
def test_constructor_errors_name_the_problem(tiny_split) -> None:
    with pytest.raises(ValueError, match=r"batch_size must be positive, got 0"):
        make_dataset(tiny_split, batch_size=0)
    with pytest.raises(ValueError, match=r"360 examples make 2 batches of 200, fewer than world_size=3 ranks"):
        make_dataset(tiny_split, batch_size=200, world_size=3)
    with pytest.raises(ValueError, match=r"make 0 batches of 400, fewer than world_size=1 ranks"):
        make_dataset(tiny_split, batch_size=400, drop_last=True)
    with pytest.raises(ValueError, match=r"sparse features \['nope'\] are not in the examples \(have \["):
        make_dataset(tiny_split, sparse_names=["user_id", "nope"])
    with pytest.raises(ValueError, match=r"rank 2 outside world_size 2"):
        make_dataset(tiny_split, rank=2, world_size=2)
    with pytest.raises(ValueError, match=r"node_types \['user', 'genre'\] must list every node type of the graph once"):
        GraphBatchDataset(
            tiny_split.train,
            GraphBatchBuilder(
                NeighborSampler(tiny_split.graph, [2]),
                BatchSchema("user", "item", ["user", "genre"], []),
            ),
            BatchPlan(8),
        )
    dataset = make_dataset(tiny_split, batch_size=100)
    with pytest.raises(IndexError, match=r"batch 4 outside \[0, 4\)"):
        dataset[4]


# ---------------------------------------------------------------------- temporal mode
def temporal_setup(batch_size: int = 64):
    """All edges of the tiny log in the graph (watches interleave with the examples' times)."""
    ds = tiny_log_dataset()
    graph = HeteroGraph.from_edges(ds.num_nodes, ds.edges, add_reverse=True)
    fanouts = {et: ([0, 0] if graph.csc(et).time is None else [5, 3]) for et in graph.edge_types}

    class RecordingSampler(NeighborSampler):
        """Keeps the last SampledSubgraph: GraphBatch carries no edge ids or node times."""

        def sample(self, *args, **kwargs) -> SampledSubgraph:
            self.last = super().sample(*args, **kwargs)
            return self.last

    sampler = RecordingSampler(graph, fanouts, temporal=True)
    dataset = GraphBatchDataset(
        with_row_ids(ds.examples),
        GraphBatchBuilder(sampler, BatchSchema("user", "item", graph.node_types, ["row"])),
        BatchPlan(batch_size, shuffle=True, seed=5),
    )
    return graph, sampler, dataset


def sampled_with_times(graph, sampler, dataset):
    """Yield (batch, subgraph, {relation: (E_r,) edge times}) for every batch."""
    for i in range(len(dataset)):
        batch = dataset[i]
        sub = sampler.last
        times = {et: torch.from_numpy(np.asarray(graph.csc(et).time))[sub.edge[et]]
                 for et in graph.edge_types if graph.csc(et).time is not None}
        # The loader's edge_index is the sampler's row/col.
        assert all(torch.equal(batch.graph_features.edge_index[et], sub.edge_index_dict[et]) for et in graph.edge_types)
        yield batch, sub, times


def test_temporal_sampling_tree_of_each_example_is_older_than_the_example() -> None:
    """Hop-1 edges into an example's seeds and hop-2 edges into the nodes they reached first are
    all strictly older than the example (the sampler's per-frontier-node contract)."""
    graph, sampler, dataset = temporal_setup()
    ex = dataset.examples
    checked = 0
    for batch, sub, times in sampled_with_times(graph, sampler, dataset):
        t_ex = ex.timestamp[rows_of(batch)]
        for et, t_edge in times.items():  # every edge older than the node that drew it
            assert bool((t_edge < sub.node_time[et[2]][sub.col[et]]).all()), et
        hop1 = {t: sub.num_sampled_nodes[t][0] for t in graph.node_types}  # first non-seed row
        for j in range(batch.batch_size):
            graph_features = batch.graph_features
            seeds = {"user": {int(graph_features.user_index[j])}, "item": {int(graph_features.item_index[j])}}
            reached = {t: set() for t in graph.node_types}
            for et, t_edge in times.items():
                src, _, dst = et
                first_hop = sub.num_sampled_edges[et][0]
                for q in range(first_hop):
                    if int(sub.col[et][q]) in seeds.get(dst, ()):
                        assert int(t_edge[q]) < int(t_ex[j]), (et, j)
                        checked += 1
                        r = int(sub.row[et][q])
                        if hop1[src] <= r < hop1[src] + sub.num_sampled_nodes[src][1]:
                            reached[src].add(r)
            for et, t_edge in times.items():
                first_hop = sub.num_sampled_edges[et][0]
                hop2 = [q for q in range(first_hop, t_edge.numel()) if int(sub.col[et][q]) in reached[et[2]]]
                assert all(int(t_edge[q]) < int(t_ex[j]) for q in hop2), (et, j)
                checked += len(hop2)
    assert checked > 300  # the check is not vacuous


def test_temporal_receptive_field_of_each_example_is_older_than_the_example() -> None:
    """What a 2-layer GNN over ``batch.graph_features.edge_index`` actually aggregates into each example's seeds."""
    graph, sampler, dataset = temporal_setup()
    ex = dataset.examples
    leaks = 0
    for batch, sub, times in sampled_with_times(graph, sampler, dataset):
        t_ex = ex.timestamp[rows_of(batch)]
        for j in range(batch.batch_size):
            frontier = {t: set() for t in graph.node_types}
            frontier["user"].add(int(batch.graph_features.user_index[j]))
            frontier["item"].add(int(batch.graph_features.item_index[j]))
            for _layer in range(2):
                nxt = {t: set() for t in graph.node_types}
                for (src, rel, dst), t_edge in times.items():
                    into = torch.tensor([c in frontier[dst] for c in sub.col[(src, rel, dst)].tolist()], dtype=torch.bool)
                    leaks += int((t_edge[into] >= t_ex[j]).sum()) if into.numel() else 0
                    nxt[src].update(sub.row[(src, rel, dst)][into].tolist() if into.numel() else [])
                frontier = nxt
    assert leaks == 0, f"{leaks} (example, edge) pairs where the edge is not older than the example"


def test_batches_by_time_keep_consecutive_examples_and_shuffle_whole_batches(tiny_split) -> None:
    data = make_dataset(tiny_split, batch_size=64, shuffle=True, batch_by_time=True, drop_last=True, seed=1)
    orders = []
    for epoch in (0, 1):
        data.set_epoch(epoch)
        starts = []
        for i in range(len(data)):
            rows = rows_of(data[i])
            assert torch.equal(rows, torch.arange(int(rows[0]), int(rows[0]) + 64)), (epoch, i)
            starts.append(int(rows[0]))
        assert sorted(starts) == list(range(0, 64 * len(data), 64))  # every full block once, the short one left out
        orders.append(starts)
    assert orders[0] != orders[1]  # each epoch its own batch order


def test_degree_columns_count_only_edges_older_than_the_batch() -> None:
    """Under temporal sampling each sampled node's degree columns equal its scaled log
    in-degree per relation counted before the batch's earliest example, after the side features."""
    graph, sampler, _ = temporal_setup()
    ds = tiny_log_dataset()
    side = {"item": torch.randn(graph.num_nodes["item"], 2, generator=torch.Generator().manual_seed(0))}
    degrees = DegreeFeatures.fit(graph, before=2_000)
    data = GraphBatchDataset(
        with_row_ids(ds.examples),
        GraphBatchBuilder(
            sampler,
            BatchSchema("user", "item", graph.node_types, ["row"]),
            node_features=side,
            degree=degrees,
        ),
        BatchPlan(64, shuffle=True, seed=5),
    )
    checked = 0
    for i in range(len(data)):
        batch = data[i]
        earliest = int(ds.examples.timestamp[rows_of(batch)].min())
        for t in graph.node_types:
            nodes = batch.graph_features.node_ids[t].values()
            relations = [et for et in graph.edge_types if et[2] == t]
            columns = [graph.csc(et).degree(nodes.numpy(), np.full(nodes.numel(), earliest)) for et in relations]
            scale = torch.tensor([degrees.scale[et] for et in relations])
            expected = torch.log1p(torch.from_numpy(np.stack(columns, axis=1)).float()) / scale
            if t in side:
                expected = torch.cat([side[t][nodes], expected], dim=1)
            assert torch.equal(batch.graph_features.node_features[t], expected), (i, t)
            future = [graph.csc(et).degree(nodes.numpy()) for et in relations if graph.csc(et).time is not None]
            checked += int(sum((f > c).sum() for f, c in zip(future, columns)))
    assert checked > 0  # some sampled node had an edge from the batch's future, which no column counted


def test_pad_for_ranks_keeps_every_row_and_adds_only_unlabelled_ones(tiny_split) -> None:
    from torchrec_gnn.data.loader import pad_for_ranks

    examples = tiny_split.test
    padded = pad_for_ranks(examples, batch_size=16, world_size=3)
    assert len(padded) % (16 * 3) == 0 and len(padded) - len(examples) < 16 * 3
    assert torch.equal(padded.user[: len(examples)], examples.user)
    assert bool(torch.isnan(padded.labels[len(examples):]).all())
    assert pad_for_ranks(padded, 16, 3) is padded

"""torchrec_gnn.pyg's NeighborLoader / LinkNeighborLoader against PyG's documented semantics.

Full neighbourhoods (fanout -1) are compared with brute force on PyG's own karate club graph
and on small heterogeneous graphs; sampled modes are checked by their defining properties.
"""

from typing import List, Set, Tuple

import pytest
import torch
from torch_geometric import loader as pyg_loader
from torch_geometric.data import Data, HeteroData
from torch_geometric.datasets import KarateClub
from torch_geometric.sampler import NegativeSampling, NumNeighbors

from torchrec_gnn.pyg import LinkNeighborLoader, NeighborLoader, PyGNeighborSampler

WATCHES = ("user", "watches", "video")
REV = ("video", "rev_watches", "user")


def karate() -> Data:
    data = KarateClub()[0]
    data.edge_attr = torch.arange(data.num_edges, dtype=torch.float)  # feature = input edge id
    return data


def hetero(seed: int = 0, num_edges: int = 60) -> HeteroData:
    """Users watch videos (with times and repeated watches), and the reverse relation."""
    g = torch.Generator().manual_seed(seed)
    data = HeteroData()
    data["user"].x = torch.arange(8, dtype=torch.float).view(-1, 1)
    data["video"].x = torch.arange(6, dtype=torch.float).view(-1, 1) + 100
    edge_index = torch.stack([torch.randint(0, 8, (num_edges,), generator=g), torch.randint(0, 6, (num_edges,), generator=g)])
    time = torch.randint(0, 50, (num_edges,), generator=g)
    data[WATCHES].edge_index, data[WATCHES].time = edge_index, time
    data[REV].edge_index, data[REV].time = edge_index.flip(0), time
    return data


def k_hop(edge_index: torch.Tensor, seeds: List[int], hops: int) -> Tuple[List[Set[int]], Set[int]]:
    """Brute force on a homogeneous graph: nodes first reached at each hop, ids of the edges into
    every node expanded at hops < ``hops`` (all in-edges, as fanout -1 takes)."""
    reached, frontier, layers, edges = set(seeds), set(seeds), [set(seeds)], set()
    for _ in range(hops):
        into = [e for e in range(edge_index.shape[1]) if int(edge_index[1, e]) in frontier]
        edges |= set(into)
        new = {int(edge_index[0, e]) for e in into} - reached
        reached |= new
        layers.append(new)
        frontier = new
    return layers, edges


def check_edges(batch, data, et=None) -> None:
    """Every batch edge is the input edge its e_id names, and edge features follow e_id."""
    store, full = (batch, data) if et is None else (batch[et], data[et])
    src_ids = batch.n_id if et is None else batch[et[0]].n_id
    dst_ids = batch.n_id if et is None else batch[et[2]].n_id
    edge_index = full.edge_index[:, store.e_id]
    assert torch.equal(src_ids[store.edge_index[0]], edge_index[0])
    assert torch.equal(dst_ids[store.edge_index[1]], edge_index[1])


# ---------------------------------------------------------------------- node loading
def test_is_a_pyg_loader_and_full_neighbourhood_equals_brute_force() -> None:
    data = karate()
    loader = NeighborLoader(data, num_neighbors=[-1, -1], input_nodes=torch.tensor([0, 9, 33]), batch_size=3)
    assert isinstance(loader, pyg_loader.NeighborLoader) and isinstance(loader.node_sampler, PyGNeighborSampler)
    batch = next(iter(loader))
    layers, edges = k_hop(data.edge_index, [0, 9, 33], hops=2)
    counts = [len(layer) for layer in layers]
    assert batch.num_sampled_nodes == counts and batch.batch_size == 3
    assert [set(part.tolist()) for part in batch.n_id.split(counts)] == layers
    assert set(batch.e_id.tolist()) == edges and batch.e_id.numel() == len(edges)
    check_edges(batch, data)
    assert torch.equal(batch.edge_attr, batch.e_id.float())  # PyG gathered features by our e_id
    assert torch.equal(batch.x, data.x[batch.n_id])


def test_repeated_seeds_get_one_row_each_with_the_same_neighbourhood() -> None:
    data = karate()
    batch = next(iter(NeighborLoader(data, num_neighbors=[3, 2], input_nodes=torch.tensor([3, 3, 5, 3]), batch_size=4)))
    assert batch.n_id[:batch.batch_size].tolist() == [3, 3, 5, 3] and batch.num_sampled_nodes[0] == 4
    check_edges(batch, data)
    hop1 = batch.edge_index[:, :batch.num_sampled_edges[0]]
    neighbours = [sorted(batch.n_id[hop1[0, hop1[1] == row]].tolist()) for row in range(4)]
    assert neighbours[0] == neighbours[1] == neighbours[3] and len(neighbours[0]) == 3
    assert sum(batch.num_sampled_edges) == batch.edge_index.shape[1]
    # the copies are real rows: a GNN gives them the same output
    from torch_geometric.nn import SAGEConv

    out = SAGEConv(34, 4)(batch.x, batch.edge_index)
    assert torch.allclose(out[0], out[1]) and torch.allclose(out[0], out[3])


def test_parallel_edges_are_kept_like_pyg() -> None:
    # node 0 has 4 in-edges, two of them from node 1
    data = Data(edge_index=torch.tensor([[1, 2, 1, 3], [0, 0, 0, 0]]), num_nodes=4)
    batch = next(iter(NeighborLoader(data, num_neighbors=[-1], input_nodes=torch.tensor([0]), batch_size=1)))
    assert sorted(batch.e_id.tolist()) == [0, 1, 2, 3]
    check_edges(batch, data)


def test_hetero_numneighbors_object_and_edge_ids() -> None:
    data = hetero()
    fanouts = NumNeighbors({WATCHES: [-1, 0]}, default=[0, -1])
    loader = NeighborLoader(data, num_neighbors=fanouts, input_nodes=("video", torch.arange(6)), batch_size=6)
    batch = next(iter(loader))
    # hop 1 takes every watch into the videos (repeats included), hop 2 every watch back to
    # the users reached: the default applies to the relation not named
    assert batch[WATCHES].num_sampled_edges == [60, 0] and batch[REV].num_sampled_edges == [0, 60]
    assert sorted(batch[WATCHES].e_id.tolist()) == sorted(batch[REV].e_id.tolist()) == list(range(60))
    check_edges(batch, data, WATCHES)
    assert torch.equal(batch[WATCHES].time, data[WATCHES].time[batch[WATCHES].e_id])


def test_weighted_sampling_never_draws_weight_zero() -> None:
    data = Data(edge_index=torch.tensor([[1, 2, 3, 4], [0, 0, 0, 0]]), num_nodes=5,
                w=torch.tensor([1.0, 0.0, 2.0, 0.0]))
    for fanout in (-1, 4, 1):
        loader = NeighborLoader(data, num_neighbors=[fanout], input_nodes=torch.tensor([0]), batch_size=1,
                                weight_attr="w")
        for _ in range(5):
            e_id = next(iter(loader)).e_id.tolist()
            assert set(e_id) <= {0, 2} and len(e_id) == (2 if fanout != 1 else 1)


# ---------------------------------------------------------------------- disjoint and temporal
def test_disjoint_gives_each_seed_its_own_tree() -> None:
    data = karate()
    seeds = [0, 9, 0]
    batch = next(iter(NeighborLoader(data, num_neighbors=[-1, -1], input_nodes=torch.tensor(seeds),
                                     batch_size=3, disjoint=True)))
    assert batch.batch[:3].tolist() == [0, 1, 2]
    for example, seed in enumerate(seeds):
        layers, edges = k_hop(data.edge_index, [seed], hops=2)
        assert set(batch.n_id[batch.batch == example].tolist()) == set().union(*layers)
        mine = batch.batch[batch.edge_index[1]] == example
        assert set(batch.e_id[mine].tolist()) == edges and int(mine.sum()) == len(edges)
        assert (batch.batch[batch.edge_index[0, mine]] == example).all()
    check_edges(batch, data)


def test_edge_time_takes_edges_at_or_before_the_seed_time() -> None:
    data = hetero(1)
    seed_time = torch.tensor([10, 25, 49, 0])
    loader = NeighborLoader(data, num_neighbors=[-1, -1], input_nodes=("video", torch.tensor([0, 1, 2, 0])),
                            input_time=seed_time, time_attr="time", batch_size=4)
    batch = next(iter(loader))
    assert batch["video"].batch[:4].tolist() == [0, 1, 2, 3]  # temporal sampling is disjoint
    for et in (WATCHES, REV):
        example = batch[et[2]].batch[batch[et].edge_index[1]]
        assert (batch[et].time <= seed_time[example]).all()
        check_edges(batch, data, et)
    # hop 1 of each example: exactly the watches of its video at or before its time (= included)
    for p, (video, t) in enumerate(zip([0, 1, 2, 0], seed_time.tolist())):
        hop1 = batch[WATCHES].e_id[:batch[WATCHES].num_sampled_edges[0]]
        mine = hop1[batch["video"].batch[batch[WATCHES].edge_index[1, :hop1.numel()]] == p]
        expected = ((data[WATCHES].edge_index[1] == video) & (data[WATCHES].time <= t)).nonzero().view(-1)
        assert sorted(mine.tolist()) == expected.tolist()


def test_temporal_last_takes_the_most_recent_edges() -> None:
    data = hetero(2)
    loader = NeighborLoader(data, num_neighbors=[2], input_nodes=("video", torch.arange(6)), batch_size=6,
                            input_time=torch.full((6,), 30), time_attr="time", temporal_strategy="last")
    batch = next(iter(loader))
    for video in range(6):
        mine = batch[WATCHES].e_id[batch["video"].n_id[batch[WATCHES].edge_index[1]] == video]
        usable = ((data[WATCHES].edge_index[1] == video) & (data[WATCHES].time <= 30)).nonzero().view(-1)
        latest = sorted(data[WATCHES].time[usable].tolist())[-2:]
        assert sorted(data[WATCHES].time[mine].tolist()) == latest


def test_node_time_keeps_neighbours_not_newer_than_the_seed() -> None:
    data = hetero(3)
    del data[WATCHES].time, data[REV].time
    data["user"].t = torch.tensor([0, 5, 10, 15, 20, 25, 30, 35])
    data["video"].t = torch.tensor([12, 0, 40, 22, 7, 30])
    batch = next(iter(NeighborLoader(data, num_neighbors=[-1, -1], input_nodes=("video", torch.arange(6)),
                                     time_attr="t", batch_size=6)))
    seed_time = data["video"].t  # no input_time: each seed takes its own time
    for t in ("user", "video"):
        assert (batch[t].t <= seed_time[batch[t].batch]).all()
    hop1 = batch[WATCHES].edge_index[:, :batch[WATCHES].num_sampled_edges[0]]
    for video in range(6):
        users = set(batch["user"].n_id[hop1[0, hop1[1] == video]].tolist())
        watched = data[WATCHES].edge_index[0, data[WATCHES].edge_index[1] == video]
        assert users == {u for u in watched.tolist() if int(data["user"].t[u]) <= int(seed_time[video])}


# ---------------------------------------------------------------------- subgraph types
def test_bidirectional_and_induced_subgraphs() -> None:
    data = karate()
    seeds = torch.tensor([0, 16])
    torch.manual_seed(0)
    batch = next(iter(NeighborLoader(data, num_neighbors=[2, 2], input_nodes=seeds, batch_size=2,
                                     subgraph_type="bidirectional")))
    pairs = {tuple(p) for p in batch.edge_index.t().tolist()}
    assert pairs == {(b, a) for a, b in pairs}
    induced = next(iter(NeighborLoader(data, num_neighbors=[2, 2], input_nodes=seeds, batch_size=2,
                                       subgraph_type="induced")))
    nodes = set(induced.n_id.tolist())
    expected = {e for e in range(data.num_edges)
                if int(data.edge_index[0, e]) in nodes and int(data.edge_index[1, e]) in nodes}
    assert set(induced.e_id.tolist()) == expected and induced.e_id.numel() == len(expected)
    check_edges(induced, data)
    legacy = next(iter(NeighborLoader(data, num_neighbors=[2, 2], input_nodes=seeds, batch_size=2, directed=False)))
    assert legacy.e_id.numel() == len({e for e in range(data.num_edges) if int(data.edge_index[0, e]) in
                                       set(legacy.n_id.tolist()) and int(data.edge_index[1, e]) in set(legacy.n_id.tolist())})


# ---------------------------------------------------------------------- link loading
@pytest.mark.parametrize("mode", ["binary", "triplet"])
def test_link_loader_on_a_homogeneous_graph(mode: str) -> None:
    data = karate()
    links = data.edge_index[:, :40]
    torch.manual_seed(0)
    loader = LinkNeighborLoader(data, num_neighbors=[3, 2], edge_label_index=links, batch_size=16, shuffle=True,
                                neg_sampling=NegativeSampling(mode, amount=2))
    assert isinstance(loader, pyg_loader.LinkNeighborLoader)
    seen = []
    for batch in loader:
        ids = batch.input_id
        seen += ids.tolist()
        if mode == "binary":
            index = batch.edge_label_index
            assert batch.edge_label.tolist() == [1.0] * ids.numel() + [0.0] * 2 * ids.numel()
            pos = batch.n_id[index[:, :ids.numel()]]
        else:
            pos = torch.stack([batch.n_id[batch.src_index], batch.n_id[batch.dst_pos_index]])
            assert batch.dst_neg_index.shape == (ids.numel(), 2)
        assert torch.equal(pos, links[:, ids])
        check_edges(batch, data)
    assert sorted(seen) == list(range(40))


def test_time_aware_link_loading_is_disjoint_and_never_sees_the_future() -> None:
    data = hetero(4)
    links, link_time = data[WATCHES].edge_index[:, :12], data[WATCHES].time[:12]
    loader = LinkNeighborLoader(data, num_neighbors=[-1, -1], edge_label_index=(WATCHES, links),
                                edge_label_time=link_time, time_attr="time", batch_size=12, neg_sampling_ratio=1.0)
    batch = next(iter(loader))
    assert torch.equal(batch[WATCHES].input_id, torch.arange(12))
    assert batch["user"].batch is not None and batch["video"].batch is not None
    for et in (WATCHES, REV):
        example = batch[et[2]].batch[batch[et].edge_index[1]]  # PyG maps a negative to its link
        assert (batch[et].time <= link_time[example]).all()
        check_edges(batch, data, et)
    index = batch[WATCHES].edge_label_index[:, :12]
    assert torch.equal(batch["user"].n_id[index[0]], links[0]) and torch.equal(batch["video"].n_id[index[1]], links[1])


def test_loader_with_worker_processes_matches_the_input() -> None:
    data = karate()
    loader = NeighborLoader(data, num_neighbors=[2, 2], input_nodes=torch.arange(34), batch_size=10, num_workers=2)
    seeds = [batch.n_id[:batch.batch_size] for batch in loader]
    assert torch.equal(torch.cat(seeds), torch.arange(34))


# ---------------------------------------------------------------------- errors
def test_unsupported_options_raise_by_name() -> None:
    data = karate()
    with pytest.raises(ValueError, match="FeatureStore, GraphStore"):
        NeighborLoader((data, data), num_neighbors=[2], input_nodes=torch.arange(3))
    with pytest.raises(TypeError, match="neighbor_sampler must be a PyGNeighborSampler"):
        NeighborLoader(data, num_neighbors=[2], neighbor_sampler=object())
    with pytest.raises(ValueError, match="subgraph_type must be one of"):
        NeighborLoader(data, num_neighbors=[2], subgraph_type="undirected")
    with pytest.raises(ValueError, match="'induced' cannot be combined with disjoint"):
        NeighborLoader(data, num_neighbors=[2], subgraph_type="induced", disjoint=True)
    data.ts = torch.rand(data.num_nodes)
    with pytest.raises(ValueError, match="ts must be a 1-D integer tensor"):
        NeighborLoader(data, num_neighbors=[2], time_attr="ts")
    with pytest.raises(ValueError, match="time_attr 'when' is neither a node nor an edge attribute"):
        NeighborLoader(data, num_neighbors=[2], time_attr="when")
    with pytest.raises(ValueError, match="has no edge weight"):
        NeighborLoader(data, num_neighbors=[2], weight_attr="missing")
    no_index = hetero(5)
    del no_index[REV].edge_index
    with pytest.raises(ValueError, match="has no edge_index"):
        NeighborLoader(no_index, num_neighbors=[2], input_nodes=("user", torch.arange(2)))
    both = hetero(5)
    both["user"].time = torch.arange(8)
    with pytest.raises(ValueError, match="both a node and an edge attribute"):
        NeighborLoader(both, num_neighbors=[2], input_nodes=("user", torch.arange(2)), time_attr="time")


# ---------------------------------------------------------------------- against PyG itself
@pytest.mark.parametrize("subgraph_type", ["directional", "induced"])
def test_full_neighbourhoods_equal_pyg_with_torch_sparse(subgraph_type: str) -> None:
    """Only where torch-sparse is installed (the benchmark's peer, never a dependency: see
    benchmarks/bench_sampler.py): PyG's own NeighborLoader then samples, and fanout -1 leaves
    nothing to chance, so both loaders must return the same nodes and edges."""
    pytest.importorskip("torch_sparse")
    data = karate()
    for seeds in ([0, 9, 33], [3, 3, 5], [16]):
        kwargs = dict(num_neighbors=[-1, -1], input_nodes=torch.tensor(seeds), batch_size=len(seeds),
                      subgraph_type=subgraph_type)
        theirs, ours = next(iter(pyg_loader.NeighborLoader(data, **kwargs))), next(iter(NeighborLoader(data, **kwargs)))
        assert ours.n_id[:len(seeds)].tolist() == theirs.n_id[:len(seeds)].tolist() == seeds
        assert sorted(ours.n_id.tolist()) == sorted(theirs.n_id.tolist())
        assert sorted(ours.e_id.tolist()) == sorted(theirs.e_id.tolist())
        pairs = [sorted(zip(b.n_id[b.edge_index[0]].tolist(), b.n_id[b.edge_index[1]].tolist())) for b in (ours, theirs)]
        assert pairs[0] == pairs[1]

import pytest
import torch

from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.graph.sampler import NeighborSampler
from torchrec_gnn.modules.gnn import GNNConfig, HeteroGNN, chunk_edge_index

NUM_NODES = {"user": 23, "item": 31, "genre": 4}


def small_graph(seed: int = 0) -> HeteroGraph:
    g = torch.Generator().manual_seed(seed)
    watches = (torch.randint(0, 23, (90,), generator=g), torch.randint(0, 31, (90,), generator=g))
    genre = (torch.arange(31), torch.arange(31) % 4)
    friends = (torch.randint(0, 23, (30,), generator=g), torch.randint(0, 23, (30,), generator=g))
    return HeteroGraph.from_edges(
        NUM_NODES,
        {("user", "watches", "item"): watches, ("item", "in", "genre"): genre, ("user", "friend", "user"): friends},
        add_reverse=True,
    )


def test_chunk_edge_index_covers_every_edge_once() -> None:
    graph = small_graph()
    et = ("user", "watches", "item")
    chunks = [chunk_edge_index(graph, et, start, min(start + 7, 31)) for start in range(0, 31, 7)]
    rebuilt = torch.cat([c + torch.tensor([[0], [start]]) for c, start in zip(chunks, range(0, 31, 7))], dim=1)
    assert torch.equal(rebuilt, graph.edge_index(et))


@pytest.mark.parametrize("conv", ["sage", "gat"])
@pytest.mark.parametrize("chunk_size", [5, 1000])
def test_layerwise_equals_sampling_every_neighbour(conv: str, chunk_size: int) -> None:
    """Layer-wise inference over the whole graph gives each node the embedding the sampled
    forward pass gives it with all neighbours (fanout -1) on every hop."""
    graph = small_graph()
    torch.manual_seed(0)
    gnn = HeteroGNN.from_config(list(NUM_NODES), graph.edge_types, 8, GNNConfig(conv=conv, hidden_channels=8, num_layers=2),
                    out_node_types=["user", "item"]).eval()
    x = {t: torch.randn(n, 8) for t, n in NUM_NODES.items()}
    exported = gnn.inference(x, graph, chunk_size=chunk_size, progress=False)
    assert {t: tuple(e.shape) for t, e in exported.items()} == {"user": (23, 8), "item": (31, 8)}

    sampler = NeighborSampler(graph, [-1, -1])
    seeds = {"user": torch.tensor([0, 5, 22]), "item": torch.tensor([3, 30])}
    sub = sampler.sample(seeds, generator=torch.Generator().manual_seed(0))
    x_sub = {t: x[t][sub.node[t]] for t in NUM_NODES}
    out = gnn(x_sub, sub.edge_index_dict, sub.num_sampled_nodes, sub.num_sampled_edges)
    for t, ids in seeds.items():
        torch.testing.assert_close(out[t][sub.seed_index[t]], exported[t][ids], atol=1e-5, rtol=1e-5)


def lightgcn_by_hand(gnn: HeteroGNN, x, graph: HeteroGraph):
    """LightGCN over the whole graph with dense normalised adjacency matrices (true degrees)."""
    layers = [dict(x)]
    for _ in range(gnn.num_layers):
        h = layers[-1]
        out = {t: torch.zeros(n, h[t].shape[1]) for t, n in NUM_NODES.items()}
        for et in graph.edge_types:
            src, _, dst = et
            adjacency = torch.zeros(NUM_NODES[dst], NUM_NODES[src])
            row, col = graph.edge_index(et)
            adjacency.index_put_((col, row), torch.ones(row.numel()), accumulate=True)
            deg_in, deg_out = adjacency.sum(1).clamp(min=1), adjacency.sum(0).clamp(min=1)
            out[dst] += (adjacency / (deg_in[:, None] * deg_out[None, :]).sqrt()) @ h[src]
        layers.append(out)
    return gnn.combine({t: [h[t] for h in layers] for t in gnn.out_node_types})


def test_lightgcn_export_is_exact_for_every_chunk_size() -> None:
    graph = small_graph()
    torch.manual_seed(0)
    gnn = HeteroGNN.from_config(list(NUM_NODES), graph.edge_types, 8, GNNConfig(conv="lightgcn", hidden_channels=6),
                    out_node_types=["user", "item"])
    x = {t: torch.randn(n, 8) for t, n in NUM_NODES.items()}
    expected = lightgcn_by_hand(gnn.eval(), x, graph)
    gnn.train()
    for chunk_size in (1, 5, 1000):  # a chunk holds a few destinations, their sources many more
        out = gnn.inference(x, graph, chunk_size=chunk_size, progress=False)
        assert out["user"].shape == (23, 6) and out["item"].shape == (31, 6)
        for t in out:
            torch.testing.assert_close(out[t], expected[t], atol=1e-5, rtol=1e-5)
    assert gnn.training  # the mode is restored


def test_bad_chunk_size_and_missing_relations_fail_clearly() -> None:
    graph = small_graph()
    gnn = HeteroGNN.from_config(list(NUM_NODES), graph.edge_types, 8, GNNConfig(hidden_channels=8))
    x = {t: torch.randn(n, 8) for t, n in NUM_NODES.items()}
    with pytest.raises(ValueError, match="chunk_size"):
        gnn.inference(x, graph, chunk_size=0)
    other = HeteroGraph.from_edges(NUM_NODES, {("user", "watches", "item"): (torch.tensor([0]), torch.tensor([0]))},
                                   add_reverse=True)
    with pytest.raises(ValueError, match="lacks the GNN's relations"):
        gnn.inference(x, other)

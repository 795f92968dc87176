import pytest
import torch

from test_gnn_inference import NUM_NODES, small_graph
from torchrec_gnn.graph.sampler import NeighborSampler
from torchrec_gnn.modules.gnn import GNNConfig, HeteroGNN
from torchrec_gnn.modules.history import HistoricalEmbeddings

SEEDS = {"user": torch.tensor([0, 5, 22]), "item": torch.tensor([3, 30])}


def gnn_and_inputs(conv: str = "sage", dropout: float = 0.1):
    graph = small_graph()
    torch.manual_seed(0)
    gnn = HeteroGNN.from_config(list(NUM_NODES), graph.edge_types, 8,
                    GNNConfig(conv=conv, hidden_channels=8, num_layers=2, dropout=dropout, outer_hop="history"),
                    out_node_types=["user", "item"])
    x = {t: torch.randn(n, 8) for t, n in NUM_NODES.items()}
    return graph, gnn, x


def test_cache_round_trip_and_errors() -> None:
    history = HistoricalEmbeddings({"user": 4, "item": 3}, channels=2)
    with pytest.raises(RuntimeError, match="never filled"):
        history.pull("user", torch.tensor([0]))
    with pytest.raises(ValueError, match=r"no rows for node types \['item'\]"):
        history.load({"user": torch.zeros(4, 2)})
    with pytest.raises(ValueError, match=r"'item' rows have shape \(3, 5\), the cache \(3, 2\)"):
        history.load({"user": torch.zeros(4, 2), "item": torch.zeros(3, 5)})
    history.load({"user": torch.arange(8.0).view(4, 2), "item": torch.zeros(3, 2)})
    history.push("user", torch.tensor([2]), torch.tensor([[-1.0, -2.0]], requires_grad=True))
    pulled = history.pull("user", torch.tensor([3, 2, 0]))
    assert torch.equal(pulled, torch.tensor([[6.0, 7.0], [-1.0, -2.0], [0.0, 1.0]])) and not pulled.requires_grad
    assert history.state_dict() == {}  # rebuilt after a restart, never checkpointed


@pytest.mark.parametrize("conv", ["sage", "gat"])
def test_one_hop_and_a_fresh_history_equal_full_graph_inference(conv: str) -> None:
    """With every hop-1 neighbour sampled and the history refreshed from the same weights, the
    seeds' output is exactly what layer-wise inference over the whole graph gives them."""
    graph, gnn, x = gnn_and_inputs(conv)
    gnn.eval()
    exported = gnn.inference(x, graph, progress=False)
    history = gnn.add_history(NUM_NODES)
    history.load(gnn.inference(x, graph, progress=False, num_layers=1))
    sub = NeighborSampler(graph, [-1]).sample(SEEDS, generator=torch.Generator().manual_seed(0))
    x_sub = {t: x[t][sub.node[t]] for t in NUM_NODES}
    out = gnn(x_sub, sub.edge_index_dict, sub.num_sampled_nodes, sub.num_sampled_edges, sub.node)
    for t, ids in SEEDS.items():
        assert out[t].shape == (len(ids), 8)
        torch.testing.assert_close(out[t][sub.seed_index[t]], exported[t][ids], atol=1e-5, rtol=1e-5)


def test_training_pushes_the_seeds_and_reads_hop_one_without_gradient() -> None:
    graph, gnn, x = gnn_and_inputs(dropout=0.0)
    gnn.train()
    history = gnn.add_history(NUM_NODES)
    history.load({t: torch.full((n, 8), 0.5) for t, n in NUM_NODES.items()})
    sub = NeighborSampler(graph, [3]).sample(SEEDS, generator=torch.Generator().manual_seed(0))
    x_sub = {t: x[t][sub.node[t]].requires_grad_() for t in NUM_NODES}
    seeds = {t: sub.num_sampled_nodes[t][0] for t in NUM_NODES}
    # The seeds' last-layer input: layer 0 over the hop-1 edges, written to the seeds' rows only.
    expected = gnn.layer_forward(0, x_sub, sub.edge_index_dict, {t: v[: seeds[t]] for t, v in x_sub.items()})
    out = gnn(x_sub, sub.edge_index_dict, sub.num_sampled_nodes, sub.num_sampled_edges, sub.node)
    for t in ("user", "item"):
        ids = sub.node[t][: seeds[t]]
        torch.testing.assert_close(history.cache(t)[ids], expected[t].detach())
        untouched = torch.ones(NUM_NODES[t], dtype=torch.bool)
        untouched[ids] = False
        assert bool((history.cache(t)[untouched] == 0.5).all())
    sum(o.sum() for o in out.values()).backward()
    # Hop-1 nodes' own tables still learn, through the seeds' first layer.
    hop1 = sub.num_sampled_nodes["user"][1]
    assert hop1 > 0 and x_sub["user"].grad[seeds["user"]:].abs().sum() > 0


def test_history_needs_trimming_and_node_ids() -> None:
    graph, gnn, x = gnn_and_inputs()
    gnn.add_history(NUM_NODES)
    with pytest.raises(ValueError, match="a history needs trimming"):
        gnn(x, {et: graph.edge_index(et) for et in graph.edge_types})
    with pytest.raises(ValueError, match="outer_hop='history' needs num_layers >= 2"):
        GNNConfig(num_layers=1, outer_hop="history")
    with pytest.raises(ValueError, match="outer_hop must be one of"):
        GNNConfig(outer_hop="cache")

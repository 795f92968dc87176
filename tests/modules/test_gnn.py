from typing import Dict

import pytest
import torch

from torchrec_gnn.data.batch import RelationCSR
from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.graph.sampler import NeighborSampler
from torchrec_gnn.modules.gnn import GNNConfig, HeteroGNN, HeteroSAGE, LightGCNConv
from torchrec_gnn.typing import edge_type_str

NODE_TYPES = ["user", "item"]
EDGE_TYPES = [("user", "watches", "item"), ("item", "rev_watches", "user")]


def random_graph(seed: int = 0, n_user: int = 7, n_item: int = 9, n_edges: int = 25):
    g = torch.Generator().manual_seed(seed)
    x = {"user": torch.randn(n_user, 8, generator=g), "item": torch.randn(n_item, 8, generator=g)}
    src = torch.randint(0, n_user, (n_edges,), generator=g)
    dst = torch.randint(0, n_item, (n_edges,), generator=g)
    edges = {EDGE_TYPES[0]: torch.stack([src, dst]), EDGE_TYPES[1]: torch.stack([dst, src])}
    return x, edges


def assert_permutation_invariant(gnn: HeteroGNN, x: Dict[str, torch.Tensor], edges, seed: int = 0) -> None:
    """Output shape, and invariance to edge order and to relabelling the nodes (PyG-style helper)."""
    gnn.eval()
    out = gnn(x, edges)
    for t in gnn.out_node_types:
        assert out[t].shape == (x[t].shape[0], gnn.out_channels)
    g = torch.Generator().manual_seed(seed)
    shuffled = {et: e[:, torch.randperm(e.shape[1], generator=g)] for et, e in edges.items()}
    torch.testing.assert_close(gnn(x, shuffled)[gnn.out_node_types[0]], out[gnn.out_node_types[0]])
    perm = {t: torch.randperm(v.shape[0], generator=g) for t, v in x.items()}
    inverse = {t: torch.argsort(p) for t, p in perm.items()}
    x_perm = {t: v[perm[t]] for t, v in x.items()}
    edges_perm = {(s, r, d): torch.stack([inverse[s][e[0]], inverse[d][e[1]]]) for (s, r, d), e in edges.items()}
    out_perm = gnn(x_perm, edges_perm)
    for t in gnn.out_node_types:
        torch.testing.assert_close(out_perm[t], out[t][perm[t]], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("conv", ["sage", "gat", "lightgcn"])
def test_shapes_and_invariance(conv: str) -> None:
    torch.manual_seed(0)
    gnn = HeteroGNN.from_config(NODE_TYPES, EDGE_TYPES, 8, GNNConfig(conv=conv, hidden_channels=12, num_layers=2))
    x, edges = random_graph()
    assert_permutation_invariant(gnn, x, edges)


def test_last_layer_only_serves_output_types() -> None:
    edge_types = EDGE_TYPES + [("item", "in", "genre"), ("genre", "rev_in", "item")]
    gnn = HeteroGNN.from_config(["user", "item", "genre"], edge_types, 8, GNNConfig(num_layers=2), out_node_types=["user", "item"])
    assert set(gnn.convs[-1].keys()) == {edge_type_str(et) for et in [*EDGE_TYPES, ("genre", "rev_in", "item")]}
    assert len(gnn.convs[0]) == 4
    assert set(gnn.roots[-1].keys()) == {"user", "item"} and set(gnn.roots[0].keys()) == {"user", "item", "genre"}
    assert gnn.shared_parameters() == [*gnn.convs[-1].parameters(), *gnn.roots[-1].parameters()]


@pytest.mark.parametrize("conv", ["sage", "gat"])  # LightGCN's degrees count the edges each layer sees
def test_trimming_gives_the_same_seed_embeddings_and_computes_only_them(conv: str) -> None:
    # A real 2-hop sample of a random graph, hop counts as the sampler reports them.
    g = torch.Generator().manual_seed(3)
    num_nodes = {"user": 60, "item": 40}
    src, dst = torch.randint(0, 60, (300,), generator=g), torch.randint(0, 40, (300,), generator=g)
    graph = HeteroGraph.from_edges(num_nodes, {EDGE_TYPES[0]: (src, dst)}, add_reverse=True)
    sub = NeighborSampler(graph, [4, 3]).sample({"user": torch.arange(5), "item": torch.arange(3)}, generator=g)
    x = {t: torch.randn(sub.num_nodes[t], 8, generator=g) for t in NODE_TYPES}
    torch.manual_seed(0)
    trimmed = HeteroGNN.from_config(NODE_TYPES, EDGE_TYPES, 8, GNNConfig(conv=conv, trim=True)).eval()
    full = HeteroGNN.from_config(NODE_TYPES, EDGE_TYPES, 8, GNNConfig(conv=conv, trim=False)).eval()
    full.load_state_dict(trimmed.state_dict())
    out_t = trimmed(x, sub.edge_index_dict, sub.num_sampled_nodes, sub.num_sampled_edges)
    out_f = full(x, sub.edge_index_dict)
    for t, seeds in (("user", 5), ("item", 3)):
        assert sub.num_nodes[t] > seeds and out_t[t].shape == (seeds, trimmed.out_channels)
        torch.testing.assert_close(out_t[t], out_f[t][:seeds], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("outer_hop, trim", [("sample", True), ("sample", False), ("history", True)])
def test_sage_reads_the_batchs_csr_as_it_builds_its_own(outer_hop: str, trim: bool) -> None:
    """The loader's CSR arrays (RelationCSR) give the same outputs and gradients as the
    adjacencies and transposes HeteroSAGE builds from edge_index, trimmed or not, with a history."""
    g = torch.Generator().manual_seed(4)
    num_nodes = {"user": 60, "item": 40}
    src, dst = torch.randint(0, 60, (300,), generator=g), torch.randint(0, 40, (300,), generator=g)
    graph = HeteroGraph.from_edges(num_nodes, {EDGE_TYPES[0]: (src, dst)}, add_reverse=True)
    fanouts = [4] if outer_hop == "history" else [4, 3]
    sub = NeighborSampler(graph, fanouts).sample({"user": torch.arange(5), "item": torch.arange(3)}, generator=g)
    csr = {et: RelationCSR.from_sample(e, sub.num_sampled_edges[et], sub.num_sampled_nodes[et[0]],
                                       sub.num_sampled_nodes[et[2]]) for et, e in sub.edge_index_dict.items()}
    torch.manual_seed(0)
    gnn = HeteroGNN.from_config(NODE_TYPES, EDGE_TYPES, 8, GNNConfig(trim=trim, outer_hop=outer_hop, dropout=0.0))
    node_ids = None
    if outer_hop == "history":
        gnn.add_history(num_nodes).load({t: torch.randn(n, gnn.last_layer_in_channels, generator=g) for t, n in num_nodes.items()})
        node_ids = sub.node
    x = {t: torch.randn(sub.num_nodes[t], 8, generator=g) for t in NODE_TYPES}

    def run(batch_csr):
        gnn.zero_grad()
        inputs = {t: v.clone().requires_grad_() for t, v in x.items()}
        counts = (sub.num_sampled_nodes, sub.num_sampled_edges) if trim else (None, None)
        out = gnn(inputs, sub.edge_index_dict, *counts, node_ids, csr=batch_csr)
        sum((h * torch.arange(h.numel()).view_as(h).cos()).sum() for h in out.values()).backward()
        return [*out.values(), *(v.grad for v in inputs.values()), *(p.grad for p in gnn.parameters() if p.grad is not None)]

    for given, built in zip(run(csr), run(None)):
        torch.testing.assert_close(given, built)


def test_sage_refuses_a_csr_built_for_other_fanouts() -> None:
    g = torch.Generator().manual_seed(5)
    graph = HeteroGraph.from_edges({"user": 30, "item": 20}, {EDGE_TYPES[0]: (torch.randint(0, 30, (90,), generator=g),
                                                                          torch.randint(0, 20, (90,), generator=g))},
                                   add_reverse=True)
    seeds = {"user": torch.arange(4), "item": torch.arange(2)}
    two_hops = NeighborSampler(graph, [3, 2]).sample(seeds, generator=torch.Generator().manual_seed(1))
    one_hop = NeighborSampler(graph, [3]).sample(seeds, generator=torch.Generator().manual_seed(1))
    stale = {et: RelationCSR.from_sample(e, one_hop.num_sampled_edges[et], one_hop.num_sampled_nodes[et[0]],
                                         one_hop.num_sampled_nodes[et[2]]) for et, e in one_hop.edge_index_dict.items()}
    gnn = HeteroGNN.from_config(NODE_TYPES, EDGE_TYPES, 8, GNNConfig())
    x = {t: torch.randn(two_hops.num_nodes[t], 8) for t in NODE_TYPES}
    with pytest.raises(ValueError, match=r"HeteroSAGE: the batch's CSR holds 1 hop\(s\), this layer reads 2"):
        gnn(x, two_hops.edge_index_dict, two_hops.num_sampled_nodes, two_hops.num_sampled_edges, csr=stale)
    one_hop_x = {t: torch.randn(one_hop.num_nodes[t], 8) for t in NODE_TYPES}
    swapped = dict(zip(stale, reversed(list(stale.values()))))  # each relation given the other's arrays
    with pytest.raises(ValueError, match=r"HeteroSAGE: the batch's CSR of 1 hop\(s\) is for \d+ sources, \d+ edges"):
        HeteroGNN.from_config(NODE_TYPES, EDGE_TYPES, 8, GNNConfig(num_layers=1))(
            one_hop_x, one_hop.edge_index_dict, one_hop.num_sampled_nodes, one_hop.num_sampled_edges, csr=swapped)


def test_lightgcn_normalisation() -> None:
    conv = LightGCNConv()
    src, dst = torch.tensor([[1.0], [3.0]]), torch.zeros(1, 1)
    edge_index = torch.tensor([[0, 1], [0, 0]])
    # Each source has out-degree 1, the destination in-degree 2: (1 + 3) / sqrt(2).
    torch.testing.assert_close(conv((src, dst), edge_index), torch.tensor([[4.0 / 2**0.5]]))


def test_errors_and_repr() -> None:
    with pytest.raises(ValueError, match=r"node types \['genre'\] receive no messages"):
        HeteroGNN.from_config(["user", "item", "genre"], EDGE_TYPES, 8, GNNConfig())
    with pytest.raises(ValueError, match="GNNConfig.conv must be one of"):
        GNNConfig(conv="gin")
    with pytest.raises(ValueError, match="divisible by heads=3"):
        GNNConfig(conv="gat", hidden_channels=16, heads=3)
    gnn = HeteroGNN.from_config(NODE_TYPES, EDGE_TYPES, 8, GNNConfig(hidden_channels=12))
    assert repr(gnn) == "HeteroSAGE(conv=sage, 8 -> 12, num_layers=2, node_types=2, relations=2)"
    with pytest.raises(ValueError, match="HeteroSAGE is the 'sage' family, but config.conv is 'gat'"):
        HeteroSAGE(NODE_TYPES, EDGE_TYPES, 8, GNNConfig(conv="gat"))
    with pytest.raises(NotImplementedError, match="use HeteroGNN.from_config"):
        type("Bare", (HeteroGNN,), {"conv_name": "sage"})(NODE_TYPES, EDGE_TYPES, 8, GNNConfig())


@pytest.mark.parametrize("conv", ["sage", "gat", "lightgcn"])
def test_self_relations(conv: str) -> None:
    # ("user", "friend", "user") gives each conv the same tensor as source and destination.
    edge_types = EDGE_TYPES + [("user", "friend", "user")]
    gnn = HeteroGNN.from_config(NODE_TYPES, edge_types, 8, GNNConfig(conv=conv, hidden_channels=12))
    x, edges = random_graph()
    edges[("user", "friend", "user")] = torch.tensor([[0, 1, 2], [1, 2, 0]])
    assert_permutation_invariant(gnn, x, edges)


def test_sage_aggregates_by_sparse_product_as_pyg_does_by_gather_and_scatter() -> None:
    """HeteroSAGE hands its convs a CSR adjacency: the same outputs and gradients as PyG's
    SAGEConv reading the edge list, for unsorted and repeated edges and destinations without any."""
    torch.manual_seed(0)
    gnn = HeteroSAGE(NODE_TYPES, EDGE_TYPES, 8, GNNConfig(conv="sage", hidden_channels=4, num_layers=1))
    conv = gnn.convs[0][edge_type_str(EDGE_TYPES[0])]
    g = torch.Generator().manual_seed(1)
    src = torch.randint(0, 7, (40,), generator=g)
    dst = torch.randint(0, 6, (40,), generator=g)  # items 6..8 receive nothing; pairs repeat
    edge_index = torch.stack([src, dst])  # not sorted by destination
    adjacency = gnn.adjacency(edge_index, 7, 9, torch.float32)
    assert adjacency.layout == torch.sparse_csr and adjacency.shape == (9, 7)

    def run(edges: torch.Tensor):
        x_user = torch.randn(7, 8, generator=torch.Generator().manual_seed(2)).requires_grad_()
        x_item = torch.randn(9, 8, generator=torch.Generator().manual_seed(3))
        conv.zero_grad()
        out = conv((x_user, x_item), edges)
        (out * torch.arange(out.numel()).view_as(out).sin()).sum().backward()
        return out, x_user.grad, conv.lin_l.weight.grad.clone()

    for sparse, reference in zip(run(adjacency), run(edge_index)):
        torch.testing.assert_close(sparse, reference)
    no_neighbours = run(adjacency)[0][6:]  # a zero mean, as the scatter gives: the linear layer's bias alone
    torch.testing.assert_close(no_neighbours, conv.lin_l.bias.expand(3, -1))
    with pytest.raises(ValueError, match=r"HeteroSAGE: edge_index has ids outside 5 sources x 9 destinations "
                                         r"\(sources 0\.\.6, destinations 0\.\.5\)"):
        gnn.adjacency(edge_index, 5, 9, torch.float32)

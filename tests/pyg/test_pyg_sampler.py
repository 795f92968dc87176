"""PyGNeighborSampler behind PyG's stock NodeLoader / LinkLoader on a project HeteroGraph."""

import pytest
import torch

from tests.graph.test_sampler import WATCHES, random_graph
from torchrec_gnn.graph.hetero_graph import HeteroGraph
from torchrec_gnn.graph.sampler import NeighborSampler
from torchrec_gnn.pyg import PyGNeighborSampler


def _hetero_data(graph: HeteroGraph):
    from torch_geometric.data import HeteroData

    data = HeteroData()
    for t, n in graph.num_nodes.items():
        data[t].x = torch.arange(n, dtype=torch.float).view(-1, 1) * 10
    for et in graph.edge_types:
        data[et].edge_index = graph.edge_index(et)  # CSC order, so e_id indexes it directly
    return data


def test_pygsampler_drives_stock_nodeloader():
    from torch_geometric.loader import NodeLoader

    graph = random_graph(7)
    data = _hetero_data(graph)
    loader = NodeLoader(data, node_sampler=PyGNeighborSampler(NeighborSampler(graph, [3, 2])),
                        input_nodes=("video", torch.arange(30)), batch_size=8)
    seen = []
    for batch in loader:
        n = batch["video"].batch_size
        seen += batch["video"].n_id[:n].tolist()
        assert torch.equal(batch["video"].x.view(-1), batch["video"].n_id.float() * 10)
        for et in graph.edge_types:
            src, _, dst = et
            ei = batch[et].edge_index
            full = data[et].edge_index[:, batch[et].e_id]
            assert torch.equal(batch[src].n_id[ei[0]], full[0]) and torch.equal(batch[dst].n_id[ei[1]], full[1])
        assert len(batch["video"].num_sampled_nodes) == 3
    assert seen == list(range(30))
    assert "PyGNeighborSampler(NeighborSampler(num_neighbors=[3, 2]" in repr(loader.node_sampler)


@pytest.mark.parametrize("mode", ["binary", "triplet"])
def test_pygsampler_drives_stock_linkloader(mode):
    from torch_geometric.loader import LinkLoader
    from torch_geometric.sampler import NegativeSampling

    graph = random_graph(7)
    data = _hetero_data(graph)
    links = graph.edge_index(WATCHES)[:, :40]
    torch.manual_seed(0)  # PyG draws the negatives from torch's default generator
    loader = LinkLoader(data, link_sampler=PyGNeighborSampler(NeighborSampler(graph, [3, 2])),
                        edge_label_index=(WATCHES, links), neg_sampling=NegativeSampling(mode, amount=2),
                        batch_size=8, shuffle=True)
    seen = []
    for batch in loader:
        user_ids, video_ids = batch["user"].n_id, batch["video"].n_id
        ids = batch[WATCHES].input_id  # which of the 40 links this batch holds
        seen += ids.tolist()
        if mode == "binary":
            index, label = batch[WATCHES].edge_label_index, batch[WATCHES].edge_label
            assert index.shape == (2, 3 * ids.numel()) and label.tolist() == [1.0] * ids.numel() + [0.0] * 2 * ids.numel()
            pos_src, pos_dst = user_ids[index[0, :ids.numel()]], video_ids[index[1, :ids.numel()]]
        else:
            pos_src, pos_dst = user_ids[batch["user"].src_index], video_ids[batch["video"].dst_pos_index]
            assert batch["video"].dst_neg_index.shape == (ids.numel(), 2)
        assert torch.equal(pos_src, links[0, ids]) and torch.equal(pos_dst, links[1, ids])
        for et in graph.edge_types:  # every sampled edge is a real edge of the graph
            src, _, dst = et
            ei, full = batch[et].edge_index, data[et].edge_index[:, batch[et].e_id]
            assert torch.equal(batch[src].n_id[ei[0]], full[0]) and torch.equal(batch[dst].n_id[ei[1]], full[1])
    assert sorted(seen) == list(range(40))


def test_pygsampler_errors_name_the_option() -> None:
    from torch_geometric.sampler import EdgeSamplerInput, NodeSamplerInput

    graph = random_graph(7, timed=True)
    adapter = PyGNeighborSampler(NeighborSampler(graph, [2]))
    with pytest.raises(ValueError, match="pass edge_label_index=\\(edge_type, index\\)"):
        adapter.sample_from_edges(EdgeSamplerInput(None, torch.tensor([0]), torch.tensor([0])))
    with pytest.raises(ValueError, match="pass input_nodes=\\(node_type, ids\\)"):
        adapter.sample_from_nodes(NodeSamplerInput(None, torch.tensor([0])))
    with pytest.raises(ValueError, match="edge_label_time needs temporal sampling"):
        adapter.sample_from_edges(EdgeSamplerInput(None, torch.tensor([0]), torch.tensor([0]),
                                                   time=torch.tensor([5]), input_type=WATCHES))
    with pytest.raises(ValueError, match="temporal sampling is disjoint in PyG"):
        PyGNeighborSampler(NeighborSampler(graph, [2], temporal=True))
    with pytest.raises(ValueError, match="'induced' cannot be combined with disjoint"):
        PyGNeighborSampler(NeighborSampler(graph, [2], disjoint=True), subgraph_type="induced")
    with pytest.raises(ValueError, match="subgraph_type must be one of"):
        PyGNeighborSampler(NeighborSampler(graph, [2]), subgraph_type="undirected")
    with pytest.raises(TypeError, match="expected a NeighborSampler"):
        PyGNeighborSampler(graph)
    temporal = PyGNeighborSampler(NeighborSampler(graph, [2], temporal=True, disjoint=True))
    with pytest.raises(ValueError, match="needs a time per seed: pass input_time"):
        temporal.sample_from_nodes(NodeSamplerInput(None, torch.tensor([0]), input_type="video"))

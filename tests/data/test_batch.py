"""GraphBatch and GraphFeatures: validation at construction, device moves and pinning keep every value."""

import dataclasses
import re

import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_gnn.data.batch import GraphBatch, GraphFeatures, RelationCSR, node_id_bags, pack_csr

WATCHES = ("user", "watches", "video")


def literal_batch() -> GraphBatch:
    """The B=3 batch drawn in batch.py's module docstring (plus one sparse feature)."""
    return GraphBatch(
        dense_features=torch.arange(6, dtype=torch.float32).view(3, 2),
        sparse_features=KeyedJaggedTensor(keys=["hour"], values=torch.tensor([1, 5, 7]),
                                          lengths=torch.ones(3, dtype=torch.int32), stride=3),
        labels=torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 2.5]]),
        label_mask=torch.tensor([[True, False], [True, True], [True, True]]),
        graph_features=GraphFeatures(
            node_ids=node_id_bags(["user", "video"], [torch.tensor([7, 2, 4]), torch.tensor([5, 9, 1, 3])]),
            edge_index={WATCHES: torch.tensor([[2, 0, 1], [2, 3, 0]])},
            user_index=torch.tensor([0, 1, 0]),
            item_index=torch.tensor([0, 1, 0]),
            num_sampled_nodes={"user": [2, 1], "video": [2, 2]},
            num_sampled_edges={WATCHES: [3]},
            node_features={"video": torch.randn(4, 2, generator=torch.Generator().manual_seed(0))},
            link_index=torch.tensor([[0, 1], [2, 3]]),
            link_label=torch.tensor([1.0, 0.0]),
            # Arrays of the right kinds only (a real sample's: tests/data/test_loader.py).
            csr={WATCHES: RelationCSR(torch.tensor([0, 1, 1, 2, 3]), [torch.tensor([0, 1, 2, 3])], [torch.tensor([3, 0, 2])])},
        ),
    )


def with_graph(batch: GraphBatch, **changes) -> GraphBatch:  # noqa: ANN003 - GraphFeatures fields
    """``batch`` with some of its graph features replaced."""
    return dataclasses.replace(batch, graph_features=dataclasses.replace(batch.graph_features, **changes))


def assert_same_values(a: GraphBatch, b: GraphBatch) -> None:
    ga, gb = a.graph_features, b.graph_features
    for x, y, name in [(getattr(a, n), getattr(b, n), n) for n in ("dense_features", "labels", "label_mask")] + [
        (getattr(ga, n), getattr(gb, n), n) for n in ("user_index", "item_index", "link_index", "link_label")
    ]:
        assert x.dtype == y.dtype and torch.equal(x.cpu(), y.cpu()), name
    for x, y in ((a.sparse_features, b.sparse_features), (ga.node_ids, gb.node_ids)):
        assert x.keys() == y.keys() and x.stride() == y.stride()
        assert torch.equal(x.values().cpu(), y.values().cpu()) and torch.equal(x.lengths().cpu(), y.lengths().cpu())
    assert ga.edge_index.keys() == gb.edge_index.keys()
    assert all(torch.equal(ga.edge_index[k].cpu(), gb.edge_index[k].cpu()) for k in ga.edge_index)
    assert ga.node_features.keys() == gb.node_features.keys()
    assert all(torch.equal(ga.node_features[k].cpu(), gb.node_features[k].cpu()) for k in ga.node_features)
    assert ga.num_sampled_nodes == gb.num_sampled_nodes and ga.num_sampled_edges == gb.num_sampled_edges
    assert ga.csr.keys() == gb.csr.keys()
    for k in ga.csr:
        pairs = list(zip(ga.csr[k].tensors(), gb.csr[k].tensors()))
        assert len(pairs) == len(ga.csr[k].tensors()) == len(gb.csr[k].tensors())
        assert all(torch.equal(x.cpu(), y.cpu()) for x, y in pairs), k


def test_properties_of_the_docstring_batch() -> None:
    batch = literal_batch()
    graph = batch.graph_features
    assert batch.batch_size == graph.batch_size == 3
    assert graph.num_nodes == {"user": 3, "video": 4}
    # One id per bag, padded with empty bags to the largest node count.
    assert graph.node_ids.stride() == 4 and graph.node_ids.lengths().tolist() == [1, 1, 1, 0, 1, 1, 1, 1]
    assert graph.global_ids("video", graph.item_index).tolist() == [5, 9, 5]
    assert graph.global_ids("video", graph.link_index[1].view(2, 1)).tolist() == [[1], [3]]  # any shape of rows


def test_to_cpu_round_trip_keeps_every_value() -> None:
    batch = literal_batch()
    moved = batch.to(torch.device("cpu"))
    assert isinstance(moved, GraphBatch)
    assert_same_values(batch, moved)
    assert_same_values(batch, moved.to(torch.device("cpu"), non_blocking=True))


def test_pin_memory_keeps_every_value() -> None:
    if not torch.cuda.is_available():
        pytest.skip("CPU-only torch cannot pin host memory (pin_memory needs a CUDA runtime)")
    batch = literal_batch()
    pinned = batch.pin_memory()
    assert pinned.dense_features.is_pinned() and pinned.graph_features.node_ids.values().is_pinned()
    assert all(e.is_pinned() for e in pinned.graph_features.edge_index.values())
    assert all(t.is_pinned() for c in pinned.graph_features.csr.values() for t in c.tensors())
    assert_same_values(batch, pinned)
    assert_same_values(batch, pinned.to(torch.device("cuda"), non_blocking=True))


def test_mismatched_batch_sizes_are_listed() -> None:
    batch = literal_batch()
    with pytest.raises(ValueError, match=r"B=3 from dense_features, but these fields disagree: "
                                         r"\{'labels': 2, 'graph_features \(user_index\)': 2\}"):
        graph = batch.graph_features
        two_examples = dataclasses.replace(graph, user_index=graph.user_index[:2], item_index=graph.item_index[:2])
        dataclasses.replace(batch, labels=batch.labels[:2], graph_features=two_examples)
    kjt = KeyedJaggedTensor(keys=["user"], values=torch.arange(4), lengths=torch.tensor([2, 2], dtype=torch.int32),
                            stride=2)
    with pytest.raises(ValueError, match=r"^GraphFeatures: node_ids must hold one id per bag \(see node_id_bags\), got a bag of 2$"):
        with_graph(batch, node_ids=kjt)


def test_every_disagreeing_field_and_bad_links_are_named() -> None:
    batch = literal_batch()
    with pytest.raises(ValueError, match=r"these fields disagree: \{'label_mask': 2\}"):
        dataclasses.replace(batch, label_mask=batch.label_mask[:2])
    with pytest.raises(ValueError, match=re.escape("user_index and item_index must both be (B,), got (2,) and (3,)")):
        with_graph(batch, user_index=batch.graph_features.user_index[:2])
    two = KeyedJaggedTensor(keys=["hour"], values=torch.tensor([1, 5]), lengths=torch.ones(2, dtype=torch.int32), stride=2)
    with pytest.raises(ValueError, match=r"these fields disagree: \{'sparse_features \(stride\)': 2\}"):
        dataclasses.replace(batch, sparse_features=two)
    no_sparse = KeyedJaggedTensor(keys=[], values=torch.empty(0, dtype=torch.int64), lengths=torch.empty(0, dtype=torch.int32))
    assert dataclasses.replace(batch, sparse_features=no_sparse).batch_size == 3  # ID-only data: no sparse feature
    for index, labels in ((torch.tensor([[0, 1]]), torch.ones(2)), (torch.tensor([[0], [1]]), torch.ones(2)),
                          (torch.tensor([0, 1]), torch.ones(2))):
        message = f"link_index must be (2, L) with L = len(link_label), got {tuple(index.shape)} and 2 labels"
        with pytest.raises(ValueError, match=re.escape(message)):
            with_graph(batch, link_index=index, link_label=labels)
    csr = batch.graph_features.csr[WATCHES]
    with pytest.raises(ValueError, match=re.escape("relations without edges: [('video', 'rev_watches', 'user')]")):
        with_graph(batch, csr={("video", "rev_watches", "user"): csr})
    with pytest.raises(ValueError, match="as many crow_t as col_t"):
        with_graph(batch, csr={WATCHES: RelationCSR(csr.crow, csr.crow_t * 2, csr.col_t)})


def test_pack_csr_keeps_every_array_in_one_block() -> None:
    csr = {WATCHES: RelationCSR(torch.tensor([0, 1, 3]), [torch.tensor([0, 2]), torch.tensor([0, 1, 3])],
                                [torch.tensor([1, 0]), torch.tensor([1, 1, 0])]),
           ("video", "rev_watches", "user"): RelationCSR(torch.tensor([0, 0]), [torch.zeros(3, dtype=torch.int64)],
                                                         [torch.empty(0, dtype=torch.int64)])}
    packed = pack_csr(csr)
    assert packed.keys() == csr.keys()
    storages = set()
    for et, c in csr.items():
        assert len(packed[et].tensors()) == len(c.tensors())
        for ours, theirs in zip(packed[et].tensors(), c.tensors()):
            assert torch.equal(ours, theirs)
            storages.add(ours.untyped_storage().data_ptr())
    assert len(storages) == 1 and pack_csr({}) == {}


def test_node_id_bags_edge_cases() -> None:
    """No node type at all, and types with no node, still give one well-formed KJT."""
    none = node_id_bags([], [])
    assert none.keys() == [] and none.values().numel() == 0 and none.values().dtype == torch.int64
    empty = node_id_bags(["user", "video"], [torch.tensor([], dtype=torch.int64), torch.tensor([4, 6])])
    assert empty.stride() == 2 and empty.lengths().tolist() == [0, 0, 1, 1] and empty.lengths().dtype == torch.int32
    assert empty["video"].values().tolist() == [4, 6] and empty["user"].values().numel() == 0
    assert node_id_bags(["user"], [torch.tensor([], dtype=torch.int64)]).stride() == 1

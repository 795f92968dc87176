import pytest
import torch

from torchrec_gnn.data.dataset import EdgeList, GraphRecDataset, Interactions, TaskSpec
from torchrec_gnn.data.split import leaked_edges, time_split

WATCH = ("user", "watches", "item")


def log_dataset(n: int = 200, seed: int = 0) -> GraphRecDataset:
    """Every example is also a timed watch edge: the split must hide the future ones."""
    g = torch.Generator().manual_seed(seed)
    user = torch.randint(0, 20, (n,), generator=g)
    item = torch.randint(0, 30, (n,), generator=g)
    time = torch.randint(0, 1000, (n,), generator=g)
    examples = Interactions(
        user=user, item=item, timestamp=time,
        labels=torch.randint(0, 2, (n, 1), generator=g).float(), dense=torch.zeros(n, 0),
    )
    edges = {
        WATCH: EdgeList(src=user, dst=item, time=time),
        ("item", "in", "genre"): EdgeList(src=torch.arange(30), dst=torch.arange(30) % 3),
    }
    return GraphRecDataset(
        name="log", tasks=[TaskSpec("click", "binary")], user_type="user", item_type="item",
        num_nodes={"user": 20, "item": 30, "genre": 3}, examples=examples, edges=edges,
    )


def test_graph_only_holds_edges_older_than_every_example() -> None:
    dataset = log_dataset()
    split = time_split(dataset, history_fraction=0.5, val_fraction=0.1, test_fraction=0.2)
    first_example = min(int(s.timestamp.min()) for s in (split.train, split.val, split.test))
    assert leaked_edges(split) == 0
    assert int(split.graph.csc(WATCH).time.max()) < first_example == split.cutoffs["train"]
    # The predicted interactions themselves are absent from the graph.
    graph_pairs = {tuple(p) for p in split.graph.edge_index(WATCH).T.tolist()}
    history = dataset.examples.timestamp < split.cutoffs["train"]
    expected = {(u, i) for u, i in zip(dataset.examples.user[history].tolist(), dataset.examples.item[history].tolist())}
    assert graph_pairs == expected
    # Static edges are always kept, and reverse relations are added.
    assert split.graph.num_edges(("item", "in", "genre")) == 30
    assert ("item", "rev_watches", "user") in split.graph.edge_types


def test_splits_are_ordered_and_partition_the_non_history_examples() -> None:
    split = time_split(log_dataset(), history_fraction=0.3, val_fraction=0.2, test_fraction=0.2)
    assert int(split.train.timestamp.max()) < split.cutoffs["val"] <= int(split.val.timestamp.min())
    assert int(split.val.timestamp.max()) < split.cutoffs["test"] <= int(split.test.timestamp.min())
    total = len(split.train) + len(split.val) + len(split.test)
    assert total == int((log_dataset().examples.timestamp >= split.cutoffs["train"]).sum())
    assert "train" in split.summary()


def test_without_history_the_graph_keeps_only_past_timed_edges() -> None:
    split = time_split(log_dataset(), history_fraction=0.0)
    assert leaked_edges(split) == 0
    assert split.graph.num_edges(WATCH) == 0


@pytest.mark.parametrize("kwargs, match", [
    ({"val_fraction": 1.5}, r"val_fraction must be in \[0, 1\), got 1.5"),
    ({"history_fraction": 0.5, "val_fraction": 0.3, "test_fraction": 0.3}, "leave no training examples"),
])
def test_bad_fractions(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        time_split(log_dataset(), **kwargs)


def test_a_prebuilt_graph_is_used_as_is() -> None:
    built = time_split(log_dataset(), history_fraction=0.5)
    reused = time_split(log_dataset(), history_fraction=0.5, graph=built.graph)
    assert reused.graph is built.graph
    assert torch.equal(reused.test.user, built.test.user) and reused.cutoffs == built.cutoffs

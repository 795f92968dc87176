import pytest
import torch

from torchrec_gnn.data.dataset import GraphRecDataset, Interactions, TaskSpec
from torchrec_gnn.data.split import leaked_edges, time_split
from torchrec_gnn.typing import EdgeList

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


def _ordered_dataset(n: int = 100) -> GraphRecDataset:
    """Example i at time 10 * i, also a weighted watch edge; item 0 in genre 0 (static)."""
    time = torch.arange(n) * 10
    examples = Interactions(user=torch.arange(n) % 7, item=torch.arange(n) % 9, timestamp=time,
                            labels=torch.zeros(n, 1), dense=torch.zeros(n, 0))
    edges = {WATCH: EdgeList(src=examples.user, dst=examples.item, time=time, weight=torch.arange(n, dtype=torch.float32)),
             ("item", "in", "genre"): EdgeList(src=torch.tensor([0]), dst=torch.tensor([0]))}
    return GraphRecDataset(name="ordered", tasks=[TaskSpec("click", "binary")], user_type="user", item_type="item",
                           num_nodes={"user": 7, "item": 9, "genre": 1}, examples=examples, edges=edges)


def test_cutoffs_are_the_example_time_quantiles() -> None:
    """100 examples at t = 0, 10, ..., 990: 30 history, 50 train, 10 validation, 10 test, each
    boundary at the first example of the next part; the graph keeps the history watches with
    their weights and times, and their reverses."""
    split = time_split(_ordered_dataset(), history_fraction=0.3, val_fraction=0.1, test_fraction=0.1)
    assert split.cutoffs == {"train": 300, "val": 800, "test": 900}
    assert (len(split.train), len(split.val), len(split.test)) == (50, 10, 10)
    index = split.graph.csc(WATCH)
    assert split.graph.num_edges(WATCH) == 30 and int(index.time.max()) == 290
    assert sorted(index.weight.tolist()) == list(range(30))  # each kept edge keeps its own weight
    assert split.graph.num_edges(("item", "rev_watches", "user")) == 30
    assert ("item", "rev_watches", "user") not in time_split(_ordered_dataset(), 0.3, add_reverse=False).graph.edge_types
    # No history: training starts at the first example; a test share of one example is the last one.
    assert time_split(_ordered_dataset(), 0.0, 0.1, 0.01).cutoffs == {"train": 0, "val": 890, "test": 990}
    lines = split.summary().splitlines()
    assert len(lines) == 4 and lines[0].startswith("TimeSplit of 'ordered'") and lines[1].lstrip().startswith("train")


def test_fraction_bounds_and_empty_data() -> None:
    with pytest.raises(ValueError, match=r"time_split: test_fraction must be in \[0, 1\), got 1.0"):
        time_split(_ordered_dataset(), test_fraction=1.0)
    with pytest.raises(ValueError, match=r"fractions \{'history_fraction': 0.5, 'val_fraction': 0.25, "
                                         r"'test_fraction': 0.25\} leave no training examples"):
        time_split(_ordered_dataset(), history_fraction=0.5, val_fraction=0.25, test_fraction=0.25)
    with pytest.raises(ValueError, match=r"time_split: history_fraction must be in \[0, 1\), got 1.0"):
        time_split(_ordered_dataset(), history_fraction=1.0)
    empty = _ordered_dataset()
    empty.examples = empty.examples.subset(torch.zeros(100, dtype=torch.bool))
    with pytest.raises(ValueError, match="time_split: dataset 'ordered' has no examples"):
        time_split(empty)
    with pytest.raises(ValueError, match="split must be 'train', 'val' or 'test', got 'dev'"):
        time_split(_ordered_dataset()).split("dev")


def test_no_history_edge_is_said_loudly(caplog: pytest.LogCaptureFixture) -> None:
    """Examples and edges from one log without history: the GNN would see no interaction."""
    with caplog.at_level("WARNING"):
        time_split(_ordered_dataset(), history_fraction=0.0)
    [record] = caplog.records
    assert record.getMessage() == (
        "time_split: the graph holds no user__watches__item edge older than the first training example (t=0); with "
        "history_fraction=0.0 the GNN never sees an interaction. When examples and edges come from the same log, set "
        "data.history_fraction > 0 (e.g. 0.3) so the earliest examples become graph history.")
    caplog.clear()
    with caplog.at_level("WARNING"):
        time_split(_ordered_dataset(), history_fraction=0.3)
    assert caplog.text == ""
    # Two user-item relations, one of them with history: the GNN sees interactions, no warning.
    dataset = _ordered_dataset()
    dataset.edges[("user", "follows_author_of", "item")] = EdgeList(src=torch.tensor([1]), dst=torch.tensor([2]),
                                                                    time=torch.tensor([-5]))
    with caplog.at_level("WARNING"):
        time_split(dataset, history_fraction=0.0)
    assert caplog.text == ""


def test_leaked_edges_counts_edges_at_the_first_example() -> None:
    split = time_split(_ordered_dataset(), history_fraction=0.3)
    assert leaked_edges(split) == 0
    # A graph built one step later holds the watch at t = 300 itself and its reverse: a leak of two.
    from torchrec_gnn.data.split import graph_before
    split.graph = graph_before(split.dataset, 301)
    assert leaked_edges(split) == 2

"""The streaming protocol: periods, a graph that grows without leaking, test-then-train, refreshes."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_log_dataset
from torchrec_gnn.config import load_config
from torchrec_gnn.data.dataset import Interactions
from torchrec_gnn.data.loader import LinkTargets
from torchrec_gnn.data.split import STATIC_TIME, graph_before, stream_periods, streaming_graph, time_split
from torchrec_gnn.recipes.stream import mean_over_periods
from torchrec_gnn.recipes.batches import batches
from torchrec_gnn.recipes.train import main
from torchrec_gnn.train.checkpoint import CheckpointError

WATCHES = ("user", "watches", "item")
TINY = [
    "--set", "data.preset=tiny", "--set", "loader.batch_size=128", "--set", "loader.eval_batch_size=256",
    "--set", "loader.num_workers=0", "--set", "train.plots=false", "--set", "pretrain.batch_size=256",
    "--set", "model.node_embedding_dim=16", "--set", "model.gnn.hidden_channels=16", "--set", "train.periods=3",
    "--set", "train.protocol=streaming",
]


def test_stream_periods_cut_the_window_in_time_order() -> None:
    examples = tiny_log_dataset().examples
    parts = stream_periods(examples, 4)
    assert [len(p) for p in parts] == [300] * 4
    for earlier, later in zip(parts, parts[1:]):
        assert int(earlier.timestamp.max()) <= int(later.timestamp.min())
    assert torch.equal(torch.sort(Interactions.concat(parts).timestamp).values, torch.sort(examples.timestamp).values)
    with pytest.raises(ValueError, match="periods must be in"):
        stream_periods(examples, 0)


def test_streaming_graph_holds_every_edge_with_a_time() -> None:
    dataset = tiny_log_dataset()
    graph = streaming_graph(dataset)
    assert graph.num_edges(WATCHES) == len(set(zip(*[e.tolist() for e in (dataset.edges[WATCHES].src, dataset.edges[WATCHES].dst)])))
    static = graph.csc(("item", "in", "genre")).time
    assert static is not None and bool((np.asarray(static) == STATIC_TIME).all())
    # The snapshot at t keeps static edges and the timed ones strictly older than t.
    snapshot = graph_before(dataset, 5000)
    assert bool((np.asarray(snapshot.csc(WATCHES).time) < 5000).all())
    assert snapshot.num_edges(("item", "in", "genre")) == graph.num_edges(("item", "in", "genre"))
    # Links for the edge objective under streaming: only edges older than the period.
    links = LinkTargets.from_graph(graph, "user", "item", None, per_batch=8, before=5000)
    older = graph.edge_index(WATCHES)[:, torch.from_numpy(np.asarray(graph.csc(WATCHES).time) < 5000)]
    assert torch.equal(links.edges, older) and 0 < links.num_edges < graph.num_edges(WATCHES)


def test_every_batch_sees_only_its_past_but_sees_the_window_s_new_edges(tmp_path: Path) -> None:
    """Training and scoring batches under streaming: each sampled edge is strictly older than
    every example of its batch, and edges created inside the labelled window do show up."""
    config = load_config("configs/default.yaml", ["data.preset=tiny", "train.protocol=streaming", "loader.temporal=true",
                                                  "model.gfae.edge_objective=true", "model.gfae.edge_links_per_batch=16"])
    from torchrec_gnn.data.registry import load_dataset

    dataset = load_dataset(config.data)
    graph = streaming_graph(dataset)
    split = time_split(dataset, graph=graph)
    window_start = split.cutoffs["train"]
    periods = stream_periods(Interactions.concat([split.train, split.val, split.test]), 3)
    fresh = 0
    for train in (True, False):
        for p, examples in enumerate(periods[1:], start=1):
            start = int(examples.timestamp.min())
            data = batches(config, graph, dataset, examples, train=train, batch_size=64, links_before=start)
            for i in range(0, len(data), 3):
                batch = data[i]
                rows = torch.arange(i * 64, min((i + 1) * 64, len(examples)))  # time order, never shuffled
                earliest = int(examples.timestamp[rows].min())
                assert torch.equal(batch.dense_features, examples.dense[rows])
                ids = {t: batch.graph_features.node_ids[t].values() for t in batch.graph_features.node_ids.keys()}
                for et, ei in batch.graph_features.edge_index.items():
                    if ei.shape[1] == 0:
                        continue
                    times = _edge_times(graph, et, ids[et[0]][ei[0]], ids[et[2]][ei[1]])
                    assert int(times.max()) < earliest, (train, p, et)
                    fresh += int((times >= window_start).sum())
                if train:  # the edge objective's held-out links are older than the period too
                    link_users, link_items = batch.graph_features.link_index
                    users, items = ids["user"][link_users], ids["video"][link_items]
                    positive = batch.graph_features.link_label == 1
                    times = _edge_times(graph, ("user", "watches", "video"), users[positive], items[positive])
                    assert int(times.max()) < start
    assert fresh > 0, "no edge from inside the labelled window was ever sampled"


def _edge_times(graph, et, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Time of each (src, dst) edge of ``et`` (every pair must be an edge)."""
    index = graph.csc(et)
    colptr, row, time = (np.asarray(a) for a in (index.colptr, index.row, index.time))
    out = []
    for s, d in zip(src.tolist(), dst.tolist()):
        lo, hi = colptr[d], colptr[d + 1]
        hits = np.nonzero(row[lo:hi] == s)[0]
        assert hits.size == 1, (et, s, d)
        out.append(int(time[lo + hits[0]]))
    return torch.tensor(out)


@pytest.mark.timeout(600)
def test_streaming_runs_test_then_train_and_two_stage_refreshes(tmp_path: Path) -> None:
    e2e = tmp_path / "e2e"
    results = main(["--config", "configs/default.yaml", *TINY, "--output-dir", str(e2e)])
    stream = json.loads((e2e / "streaming.json").read_text())
    periods = stream["periods"]
    assert [p["period"] for p in periods] == [0, 1, 2]
    assert periods[0]["metrics"] == {} and all("auc" in p["metrics"]["click"] for p in periods[1:])
    assert all(p["steps"] > 0 for p in periods) and sum(p["examples"] for p in periods) > 0
    cumulative = [p["cumulative_seconds"] for p in periods]
    assert cumulative == sorted(cumulative) and cumulative[0] > stream["setup_seconds"]
    # eval.json: the mean of the scored periods' metrics, their example counts summed.
    assert json.loads((e2e / "eval.json").read_text()) == json.loads(json.dumps(results))
    assert results["stream"]["click"]["auc"] == pytest.approx(np.mean([p["metrics"]["click"]["auc"] for p in periods[1:]]))
    assert results["stream"]["click"]["count"] == sum(p["metrics"]["click"]["count"] for p in periods[1:])
    assert load_config(e2e / "config.yaml").loader.temporal  # forced on

    refresh = tmp_path / "refresh"
    main(["--config", "configs/ablations/two_stage_refresh.yaml", *TINY, "--output-dir", str(refresh)])
    periods = json.loads((refresh / "streaming.json").read_text())["periods"]
    assert periods[0]["refresh_seconds"] == 0 and all(p["refresh_seconds"] > 0 for p in periods[1:])
    for p in (1, 2):  # each refresh pre-trained on the graph as it stood when its period opened
        report = json.loads((refresh / "pretrain" / f"refresh_{p:02d}" / "pretrain.json").read_text())
        assert report["exported_nodes"] > 0 and report["steps"] > 0
    first = torch.load(refresh / "pretrain" / "node_embeddings.pt")
    last = torch.load(refresh / "pretrain" / "refresh_02" / "node_embeddings.pt")
    assert not torch.equal(first["video"], last["video"])

    with pytest.raises(CheckpointError, match="keeps no checkpoints between periods"):
        main(["--config", "configs/default.yaml", *TINY, "--output-dir", str(e2e), "--resume"])


def test_mean_over_periods_sums_counts_and_skips_nan() -> None:
    per_period = [{"click": {"auc": 0.6, "count": 10}}, {"click": {"auc": float("nan"), "count": 5}},
                  {"click": {"auc": 0.8, "count": 7}}]
    assert mean_over_periods(per_period) == {"click": {"auc": pytest.approx(0.7), "count": 22}}

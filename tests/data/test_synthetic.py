"""Tests of the synthetic short-video dataset: schema, reproducibility, label logic, time windows
and the planted graph signal."""

from __future__ import annotations

from typing import Dict

import numpy as np
import pytest
import torch

from torchrec_gnn.data.dataset import GraphRecDataset
from torchrec_gnn.data.synthetic import (
    DENSE_NAMES,
    SYNTHETIC_EDGE_TYPES,
    SEARCHES,
    SYNTHETIC_TASKS,
    WATCHES,
    SyntheticConfig,
    make_synthetic,
)

try:
    from sklearn.metrics import roc_auc_score
except ImportError:  # pragma: no cover - scikit-learn is pinned, keep a slow exact fallback

    def roc_auc_score(y: np.ndarray, s: np.ndarray) -> float:
        pos, neg = s[y == 1], s[y == 0]
        diff = pos[:, None] - neg[None, :]
        return float(((diff > 0) + 0.5 * (diff == 0)).mean())


STATIC = {("user", "friend", "user"), ("author", "creates", "video"), ("product", "related", "video")}


@pytest.fixture(scope="module")
def tiny() -> GraphRecDataset:
    return make_synthetic(SyntheticConfig.preset("tiny"))


def _flat(ds: GraphRecDataset) -> Dict[str, torch.Tensor]:
    ex = ds.examples
    out = {"user": ex.user, "item": ex.item, "timestamp": ex.timestamp, "labels": ex.labels, "dense": ex.dense}
    out.update({f"sparse.{k}": v for k, v in ex.sparse.items()})
    for et, e in ds.edges.items():
        for f in ("src", "dst", "time", "weight"):
            if getattr(e, f) is not None:
                out[f"{et}.{f}"] = getattr(e, f)
    out.update({f"x.{k}": v for k, v in ds.node_features.items()})
    return out


def test_same_seed_same_tensors_different_seed_different(tiny: GraphRecDataset) -> None:
    ref = _flat(tiny)
    again = _flat(make_synthetic(SyntheticConfig.preset("tiny")))
    other = _flat(make_synthetic(SyntheticConfig.preset("tiny", seed=1)))
    assert again.keys() == ref.keys()
    for k in ref:
        assert torch.equal(ref[k].nan_to_num(-1.0), again[k].nan_to_num(-1.0)), k
    assert not torch.equal(ref["item"], other["item"])


def test_schema_shapes_dtypes(tiny: GraphRecDataset) -> None:
    tiny.validate()
    assert tiny.task_names == ["click", "long_view", "like", "skip", "stay_duration"]
    assert [t.kind for t in tiny.tasks] == ["binary"] * 4 + ["regression"]
    assert tuple(tiny.tasks) == SYNTHETIC_TASKS
    assert (tiny.user_type, tiny.item_type) == ("user", "video")
    assert set(tiny.num_nodes) == {"user", "video", "author", "query", "product"}
    ex = tiny.examples
    n = len(ex)
    assert 2_000 < n < 10_000
    assert ex.labels.shape == (n, 5) and ex.labels.dtype == torch.float32
    assert ex.dense.shape == (n, len(DENSE_NAMES)) and tiny.dense_names == list(DENSE_NAMES)
    assert ex.dense.dtype == torch.float32 and bool(torch.isfinite(ex.dense).all())
    assert set(ex.sparse) == set(tiny.sparse_cardinality)
    assert {"user_id", "video_id", "author_id", "video_category", "user_region", "hour"} <= set(ex.sparse)
    assert all(v.dtype == torch.int64 for v in ex.sparse.values())
    assert torch.equal(ex.sparse["user_id"], ex.user) and torch.equal(ex.sparse["video_id"], ex.item)
    # the author_id feature agrees with the static authorship edges
    creates = tiny.edges[("author", "creates", "video")]
    author_of = torch.empty(tiny.num_nodes["video"], dtype=torch.int64)
    author_of[creates.dst] = creates.src
    assert torch.equal(ex.sparse["author_id"], author_of[ex.item])
    assert tuple(tiny.edges) == SYNTHETIC_EDGE_TYPES
    for et, e in tiny.edges.items():
        assert len(e) > 0, et
        assert e.src.dtype == e.dst.dtype == torch.int64
        assert (e.time is None) == (et in STATIC), et
    for t, x in tiny.node_features.items():
        assert x.dtype == torch.float32 and x.shape[0] == tiny.num_nodes[t], t
    friend = tiny.edges[("user", "friend", "user")]
    assert bool((friend.src < friend.dst).all())  # symmetric relation stored once per pair


def test_labels_consistent_and_rates_sane(tiny: GraphRecDataset) -> None:
    click, long_view, like, skip, stay = tiny.examples.labels.unbind(1)
    for col in (click, long_view, like, skip):
        assert not bool(torch.isnan(col).any())
    assert 0.1 < click.mean() < 0.3
    assert 0.02 < long_view.mean() < click.mean() and 0.01 < like.mean() < click.mean()
    assert 0.3 < skip.mean() < 0.9
    unclicked = click == 0
    assert not bool(long_view[unclicked].any()) and not bool(like[unclicked].any())
    assert not bool(skip[~unclicked].any())
    missing = torch.isnan(stay)
    assert 0.0 < missing.float().mean() < 0.05  # exercises missing-label masking
    assert bool((stay[~missing] >= 0).all())
    assert stay[~missing & ~unclicked].mean() > 3 * stay[~missing & unclicked].mean()


def test_time_windows_and_future_edges(tiny: GraphRecDataset) -> None:
    start, end = SyntheticConfig.preset("tiny").example_window
    ts = tiny.examples.timestamp
    assert int(ts.min()) >= start and int(ts.max()) < end
    first = int(ts.min())
    for et, e in tiny.edges.items():
        if e.time is None:
            continue
        late = (e.time >= first).float().mean()
        assert 0.0 < late < 0.5, et  # mostly history, but a time split must filter some
    # every clicked impression is also a watch event at the same time (the edge a leak would expose)
    watches, ex = tiny.edges[WATCHES], tiny.examples
    U, V = tiny.num_nodes["user"], tiny.num_nodes["video"]

    def key(u: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (t * U + u) * V + v

    clicked = ex.labels[:, 0] == 1
    found = torch.isin(key(ex.user[clicked], ex.item[clicked], ex.timestamp[clicked]),
                       key(watches.src, watches.dst, watches.time))
    assert bool(found.all())
    assert bool(((watches.weight >= 0) & (watches.weight <= 1)).all())


def test_cold_users_and_new_videos_are_graph_only(tiny: GraphRecDataset) -> None:
    ex = tiny.examples
    first = int(ex.timestamp.min())
    per_user = torch.bincount(ex.user, minlength=tiny.num_nodes["user"])
    cold = per_user <= 3
    assert 0.3 < cold.float().mean() < 0.7
    assert per_user[cold].float().mean() * 5 < per_user[~cold].float().mean()
    # ...yet cold users have a history in the graph before the first example
    degree = torch.zeros(tiny.num_nodes["user"])
    for (src_t, _, _), e in tiny.edges.items():
        if src_t == "user":
            m = torch.ones(len(e), dtype=torch.bool) if e.time is None else e.time < first
            degree += torch.bincount(e.src[m], minlength=tiny.num_nodes["user"])
    assert degree[cold].mean() > 10
    # new videos: shown in the example window without any history watch, but their author has videos
    watches = tiny.edges[WATCHES]
    seen = torch.zeros(tiny.num_nodes["video"], dtype=torch.bool)
    seen[watches.dst[watches.time < first]] = True
    new_share = (~seen[ex.item]).float().mean()
    assert 0.2 < new_share < 0.6


def test_graph_reveals_cold_user_taste() -> None:
    """For cold users, scores computed from the history graph only predict clicks well, and better
    than the label-learnable category click rate."""
    ds = make_synthetic(SyntheticConfig.preset("tiny", num_users=2_000))
    ex = ds.examples
    first = int(ex.timestamp.min())
    U, K = ds.num_nodes["user"], ds.sparse_cardinality["video_category"]
    video_cat = ds.node_features["video"][:, 1:].argmax(1).numpy()  # one-hot category columns
    w = ds.edges[WATCHES]
    hist = (w.time < first).numpy()
    wu, wv = w.src.numpy()[hist], w.dst.numpy()[hist]
    counts = np.bincount(wu * K + video_cat[wv], minlength=U * K).reshape(U, K).astype(np.float64)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1.0)  # (U, K) history category mix
    f = ds.edges[("user", "friend", "user")]
    fs, fd = f.src.numpy(), f.dst.numpy()
    friends_share = np.zeros((U, K))
    np.add.at(friends_share, fs, share[fd])
    np.add.at(friends_share, fd, share[fs])

    u, v, y = ex.user.numpy(), ex.item.numpy(), ex.labels[:, 0].numpy()
    cold = np.bincount(u, minlength=U)[u] <= 3
    assert cold.sum() > 500
    cat = video_cat[v]
    own_history = roc_auc_score(y[cold], share[u, cat][cold])
    friends = roc_auc_score(y[cold], friends_share[u, cat][cold])
    category_ctr = np.bincount(cat, weights=y, minlength=K) / np.maximum(np.bincount(cat, minlength=K), 1)
    labels_only = roc_auc_score(y[cold], category_ctr[cat][cold])
    assert own_history > 0.6
    assert friends > 0.57  # social homophily: friends' history alone is informative
    assert own_history > labels_only + 0.03


def _late_history_agreement(ds: GraphRecDataset) -> Dict[str, float]:
    """How well each user's pre-window history explains the last 30% of the window: click AUC of
    the history watch share of the video's category, and the mean history search share of late
    searches' categories."""
    ex = ds.examples
    first, last = int(ex.timestamp.min()), int(ex.timestamp.max())
    late_from = first + 0.7 * (last - first)
    U, K = ds.num_nodes["user"], ds.sparse_cardinality["video_category"]
    video_cat = ds.node_features["video"][:, 1:].argmax(1).numpy()
    query_cat = ds.node_features["query"].argmax(1).numpy()

    def share(src: np.ndarray, cat: np.ndarray) -> np.ndarray:
        counts = np.bincount(src * K + cat, minlength=U * K).reshape(U, K).astype(np.float64)
        return counts / np.maximum(counts.sum(1, keepdims=True), 1.0)

    w, s = ds.edges[WATCHES], ds.edges[SEARCHES]
    hist_w, hist_s = (w.time < first).numpy(), (s.time < first).numpy()
    watch_share = share(w.src.numpy()[hist_w], video_cat[w.dst.numpy()[hist_w]])
    search_share = share(s.src.numpy()[hist_s], query_cat[s.dst.numpy()[hist_s]])
    u, v, y = ex.user.numpy(), ex.item.numpy(), ex.labels[:, 0].numpy()
    late = ex.timestamp.numpy() > late_from
    late_s = s.time.numpy() > late_from
    return {
        "click_auc": roc_auc_score(y[late], watch_share[u, video_cat[v]][late]),
        "search_share": float(search_share[s.src.numpy()[late_s], query_cat[s.dst.numpy()[late_s]]].mean()),
    }


def test_taste_drift_changes_reactions_not_the_feed() -> None:
    """Drifting users react with their new taste (the history graph explains late clicks and
    searches much less), while the feed, the world and the static edges stay as they were."""
    stable = make_synthetic(SyntheticConfig.preset("tiny", num_users=2_000))
    drifted = make_synthetic(SyntheticConfig.preset("tiny", num_users=2_000, taste_drift_fraction=1.0))
    for name in ("user", "item", "timestamp"):
        assert torch.equal(getattr(stable.examples, name), getattr(drifted.examples, name)), name
    for et in STATIC:
        assert torch.equal(stable.edges[et].src, drifted.edges[et].src), et
        assert torch.equal(stable.edges[et].dst, drifted.edges[et].dst), et
    for t, x in stable.node_features.items():
        assert torch.equal(x, drifted.node_features[t]), t
    assert not torch.equal(stable.examples.labels[:, 0], drifted.examples.labels[:, 0])
    before, after = _late_history_agreement(stable), _late_history_agreement(drifted)
    assert before["click_auc"] > 0.65 and after["click_auc"] < before["click_auc"] - 0.1
    assert after["search_share"] < before["search_share"] - 0.2


def test_preset_and_config_errors() -> None:
    assert SyntheticConfig.preset("default") == SyntheticConfig()
    large = SyntheticConfig.preset("large")
    assert large.num_users > 10 * SyntheticConfig().num_users
    with pytest.raises(ValueError, match=r"unknown preset 'huge'.*'default', 'large', 'tiny'"):
        SyntheticConfig.preset("huge")
    with pytest.raises(ValueError, match=r"unknown fields \['num_user'\]"):
        SyntheticConfig.preset("tiny", num_user=3)
    with pytest.raises(ValueError, match=r"num_users must be >= 1, got 0.*base_ctr must be in \(0, 1\), got 1.5"):
        SyntheticConfig(num_users=0, base_ctr=1.5)
    with pytest.raises(ValueError, match=r"taste_drift_fraction must be in \[0, 1\], got 2"):
        SyntheticConfig(taste_drift_fraction=2)

"""KuaiRand loader: the real 200-row fixture, a synthetic official-schema log with the real side tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from torchrec_gnn.data.kuairand import load_kuairand, long_view_rule
from torchrec_gnn.data.paths import default_data_dir

FIXTURE = default_data_dir() / "kuairand-1k-tiny-fixture" / "kuairand_sample.csv"
SIDE = default_data_dir() / "kuairand-pure-side-features"
USER_FEATURES = SIDE / "user_features_pure.csv.gz"
VIDEO_FEATURES = SIDE / "video_features_basic_pure.csv.gz"


def _need(*paths: Path) -> None:
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"KuaiRand data not found: {missing} (set TORCHREC_GNN_DATA_DIR)")


def test_fixture_counts_labels_and_ids() -> None:
    _need(FIXTURE)
    ds = load_kuairand(FIXTURE)
    raw = pd.read_csv(FIXTURE)
    assert len(ds.examples) == 200
    assert ds.num_nodes == {"user": 145, "video": 29}
    assert ds.task_names == ["click", "long_view", "like", "stay_duration"]
    labels = ds.examples.labels
    assert labels[:, 0].mean().item() == pytest.approx(0.16)
    # long_view derived with the KuaiRand rule, computed here independently
    play, dur = raw["play_time_ms"].to_numpy(), raw["duration_ms"].to_numpy()
    expected = np.where(dur <= 18000, play >= dur, play >= 18000).astype(np.float32)
    assert np.array_equal(labels[:, 1].numpy(), expected)
    assert torch.isnan(labels[:, 2]).all()  # no is_like column: label missing
    assert torch.allclose(labels[:, 3], torch.tensor(play / 1000.0, dtype=torch.float32))
    # no time columns: row order; ids sorted by raw id
    assert torch.equal(ds.examples.timestamp, torch.arange(200))
    users = np.sort(raw["user_id"].unique())
    assert torch.equal(ds.examples.user, torch.from_numpy(np.searchsorted(users, raw["user_id"].to_numpy())))
    # watches edges = clicked impressions, timed
    watch = ds.edges[("user", "watches", "video")]
    assert len(watch) == int(raw["is_click"].sum()) and watch.time is not None
    # inline user/video features become sparse features; 0 is reserved for missing
    assert {"user_active_degree", "onehot_feat3", "video_type", "tab"} <= set(ds.examples.sparse)
    assert ds.sparse_cardinality["user_active_degree"] == raw["user_active_degree"].nunique() + 1
    assert ds.dense_names[0] == "log_duration_s" and ds.examples.dense.shape == (200, len(ds.dense_names))
    assert ds.node_features["user"].shape == (145, 4)
    ds.validate()


def test_long_view_rule_edges() -> None:
    play = np.array([5000.0, 4999.0, 18000.0, 17999.0, 60000.0])
    dur = np.array([5000.0, 5000.0, 30000.0, 30000.0, 18000.0])
    assert long_view_rule(play, dur).tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]


def _official_log(path: Path) -> pd.DataFrame:
    """A synthetic log in the official schema (ids 0..4 users, 0..9 videos exist in the Pure side tables)."""
    rng = np.random.default_rng(0)
    n = 40
    log = pd.DataFrame(
        {
            "user_id": rng.integers(0, 5, n),
            "video_id": rng.integers(0, 10, n),
            "date": 20220422,
            "hourmin": rng.choice([900, 1230, 2359], n),
            "time_ms": 1650600000000 + np.arange(n) * 1000,
            "is_click": rng.integers(0, 2, n),
            "is_like": rng.integers(0, 2, n),
            "is_follow": 0,
            "long_view": rng.integers(0, 2, n),
            "play_time_ms": rng.integers(0, 60000, n),
            "duration_ms": rng.integers(1000, 60000, n),
            "tab": rng.integers(0, 3, n),
        }
    )
    log.to_csv(path, index=False)
    return log


def test_official_schema_with_side_tables(tmp_path: Path) -> None:
    _need(USER_FEATURES, VIDEO_FEATURES)
    log = _official_log(tmp_path / "log.csv")
    ds = load_kuairand(tmp_path / "log.csv", USER_FEATURES, VIDEO_FEATURES)
    labels = ds.examples.labels
    assert np.array_equal(labels[:, 1].numpy(), log["long_view"].to_numpy(np.float32))  # column wins over the rule
    assert np.array_equal(labels[:, 2].numpy(), log["is_like"].to_numpy(np.float32))
    assert torch.equal(ds.examples.timestamp, torch.from_numpy(log["time_ms"].to_numpy()))
    assert ds.num_nodes["user"] == log["user_id"].nunique()  # side-table users outside the log are ignored
    assert ds.num_nodes["video"] == log["video_id"].nunique()

    videos = pd.read_csv(VIDEO_FEATURES).set_index("video_id")
    kept = np.sort(log["video_id"].unique())
    by = ds.edges[("video", "by", "author")]
    assert by.time is None and len(by) == len(kept)
    authors = np.sort(videos.loc[kept, "author_id"].unique())
    assert ds.num_nodes["author"] == len(authors)
    assert np.array_equal(authors[by.dst.numpy()], videos.loc[kept[by.src.numpy()], "author_id"].to_numpy())
    n_tags = videos.loc[kept, "tag"].dropna().str.split(",").map(len).sum()
    assert len(ds.edges[("video", "has_tag", "tag")]) == n_tags
    assert len(ds.edges[("video", "uses", "music")]) == len(kept)
    # categorical strings from the side tables are encoded deterministically (sorted, 0 = missing)
    users = pd.read_csv(USER_FEATURES).set_index("user_id")
    degrees = users.loc[np.sort(log["user_id"].unique()), "user_active_degree"]
    expected = np.searchsorted(np.sort(degrees.unique()), users.loc[log["user_id"], "user_active_degree"]) + 1
    assert np.array_equal(ds.examples.sparse["user_active_degree"].numpy(), expected)
    assert {"author_id", "music_id", "tag", "upload_type", "hour"} <= set(ds.examples.sparse)
    again = load_kuairand(tmp_path / "log.csv", USER_FEATURES, VIDEO_FEATURES)
    assert all(torch.equal(again.examples.sparse[k], v) for k, v in ds.examples.sparse.items())


def test_date_hourmin_timestamp(tmp_path: Path) -> None:
    log = pd.DataFrame(
        {
            "user_id": [1, 2], "video_id": [7, 7], "date": [20220422, 20220423], "hourmin": [1530, 5],
            "is_click": [1, 0], "play_time_ms": [100, 200], "duration_ms": [1000, 1000],
        }
    )  # fmt: skip
    log.to_csv(tmp_path / "log.csv", index=False)
    ds = load_kuairand(tmp_path / "log.csv")
    expected = [pd.Timestamp("2022-04-22 15:30", tz="UTC"), pd.Timestamp("2022-04-23 00:05", tz="UTC")]
    assert ds.examples.timestamp.tolist() == [int(t.timestamp() * 1000) for t in expected]


def test_missing_columns_error_names_file_and_columns(tmp_path: Path) -> None:
    pd.DataFrame({"user_id": [1], "video_id": [2], "is_click": [1]}).to_csv(tmp_path / "bad_log.csv", index=False)
    with pytest.raises(
        ValueError,
        match=r"bad_log\.csv: missing column\(s\) \['play_time_ms', 'duration_ms'\]; columns found: \['user_id', 'video_id', 'is_click'\]",
    ):
        load_kuairand(tmp_path / "bad_log.csv")


def test_non_binary_click_error(tmp_path: Path) -> None:
    log = pd.DataFrame({"user_id": [1], "video_id": [2], "is_click": [3], "play_time_ms": [1], "duration_ms": [1]})
    log.to_csv(tmp_path / "log.csv", index=False)
    with pytest.raises(ValueError, match=r"log\.csv: column 'is_click': binary label must be 0, 1 or empty, found 3"):
        load_kuairand(tmp_path / "log.csv")

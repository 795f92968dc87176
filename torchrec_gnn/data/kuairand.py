"""KuaiRand short-video logs as a :class:`~torchrec_gnn.data.dataset.GraphRecDataset`.

Reads the official log schema (``log_*_pure.csv``/``log_*_1k.csv``: ``user_id, video_id, date,
hourmin, time_ms, is_click, is_like, ..., long_view, play_time_ms, duration_ms, tab, ...``) and the
Scenario-Wise-Rec sample layout (no ``time_ms``/``is_like``/``long_view``, user features inline).
Required log columns: ``user_id, video_id, is_click, play_time_ms, duration_ms``.

Tasks (T = 4, in this order):

* ``click`` (binary): ``is_click``;
* ``long_view`` (binary): the ``long_view`` column, else derived the KuaiRand way:
  ``play_time_ms >= duration_ms`` if ``duration_ms <= 18000``, else ``play_time_ms >= 18000``;
* ``like`` (binary): ``is_like``, all ``NaN`` (missing, masked by the ranker) without that column;
* ``stay_duration`` (regression): ``play_time_ms / 1000`` seconds.

Timestamp: ``time_ms`` (ms); else ``date`` (``YYYYMMDD``) + ``hourmin`` (``HHMM``) as unix ms;
else the row position.

Nodes: ``user`` and ``video`` cover the ids of the log only (side-table rows of other ids are
ignored), numbered in sorted order. With ``video_features_path``, ``author``, ``music`` and
``tag`` nodes come from the videos' ``author_id``, ``music_id`` and comma-separated ``tag``.
Edges:

* ``("user", "watches", "video")``: timed, the clicked impressions;
* ``("video", "by", "author")``, ``("video", "uses", "music")``, ``("video", "has_tag", "tag")``:
  static, with ``video_features_path`` only.

Ranker features (whichever of the known columns are present; user columns come from
``user_features_path`` when given, else from the log, first row per user; video columns likewise):

* sparse: ``user_id``, ``video_id`` (node ids), user columns :data:`USER_SPARSE`, video columns
  :data:`VIDEO_SPARSE`, ``author_id``, ``music_id``, ``tag`` (first tag), context ``tab`` and
  ``hour`` (from ``hourmin``); categorical ids ``1..K`` in sorted value order, ``0`` = missing;
* dense: ``log_duration_s`` = ``log1p(duration_ms / 1000)`` and ``log1p`` of the user counts
  :data:`USER_DENSE` (negative or missing -> 0).

Node features: ``user`` = the log1p user counts (if any), ``video`` = ``log_duration_s`` (float32).

Example:
    >>> from torchrec_gnn.data.paths import default_data_dir
    >>> ds = load_kuairand(default_data_dir() / "kuairand-1k-tiny-fixture" / "kuairand_sample.csv")  # doctest: +SKIP
    >>> ds.task_names, ds.num_nodes                                                 # doctest: +SKIP
    (['click', 'long_view', 'like', 'stay_duration'], {'user': 145, 'video': 29})
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd
import torch

from torchrec_gnn.data.dataset import GraphRecDataset, Interactions, TaskSpec
from torchrec_gnn.data.tabular import encode_categorical, id_index, label_values, lookup_ids, to_timestamps
from torchrec_gnn.tables import require_columns
from torchrec_gnn.typing import EdgeList, EdgeType

LOG_REQUIRED = ("user_id", "video_id", "is_click", "play_time_ms", "duration_ms")
LONG_VIEW_MS = 18_000
USER_SPARSE = (
    "user_active_degree", "is_lowactive_period", "is_live_streamer", "is_video_author", "follow_user_num_range",
    "fans_user_num_range", "friend_user_num_range", "register_days_range", *(f"onehot_feat{i}" for i in range(18)),
)  # fmt: skip
USER_DENSE = ("follow_user_num", "fans_user_num", "friend_user_num", "register_days")
VIDEO_SPARSE = ("video_type", "upload_type", "visible_status", "music_type", "server_width", "server_height")
CONTEXT_SPARSE = ("tab",)
# video-table column -> (relation, node type) of its static edges
VIDEO_EDGES = {"author_id": ("by", "author"), "music_id": ("uses", "music"), "tag": ("has_tag", "tag")}


def load_kuairand(
    log_path: str | Path,
    user_features_path: Optional[str | Path] = None,
    video_features_path: Optional[str | Path] = None,
) -> GraphRecDataset:
    """Load a KuaiRand log and, optionally, its user/video side tables (see the module docstring).

    Args:
        log_path (str | Path): interaction log, ``.csv`` or ``.csv.gz``.
        user_features_path (str | Path, optional): ``user_features_*.csv[.gz]`` keyed by ``user_id``.
            Default: ``None`` (user columns of the log, if any).
        video_features_path (str | Path, optional): ``video_features_basic_*.csv[.gz]`` keyed by
            ``video_id``; adds author/music/tag nodes and edges. Default: ``None``.

    Returns:
        GraphRecDataset: validated dataset named ``"kuairand"``, examples in log row order.
    """
    log_path = Path(log_path)
    log = pd.read_csv(log_path)
    require_columns(log_path.name, log, LOG_REQUIRED)
    n = len(log)

    user_index = id_index([log["user_id"]])
    video_index = id_index([log["video_id"]])
    num_nodes = {"user": len(user_index), "video": len(video_index)}
    user = lookup_ids(user_index, log["user_id"])
    video = lookup_ids(video_index, log["video_id"])
    timestamp = _timestamps(log, log_path.name)

    play = label_values(log["play_time_ms"], "regression", f"{log_path.name}: column 'play_time_ms'")
    duration = label_values(log["duration_ms"], "regression", f"{log_path.name}: column 'duration_ms'")
    if "long_view" in log.columns:
        long_view = label_values(log["long_view"], "binary", f"{log_path.name}: column 'long_view'")
    else:
        long_view = long_view_rule(play, duration)
    like = (
        label_values(log["is_like"], "binary", f"{log_path.name}: column 'is_like'")
        if "is_like" in log.columns
        else np.full(n, np.nan)
    )
    click = label_values(log["is_click"], "binary", f"{log_path.name}: column 'is_click'")
    labels = np.stack([click, long_view, like, play / 1000.0], axis=1)  # (N, 4)
    tasks = [
        TaskSpec("click", "binary"),
        TaskSpec("long_view", "binary"),
        TaskSpec("like", "binary"),
        TaskSpec("stay_duration", "regression"),
    ]

    users = _node_table(log, "user_id", user_index, user_features_path, [*USER_SPARSE, *USER_DENSE], required=[])
    videos = _node_table(
        log, "video_id", video_index, video_features_path, [*VIDEO_SPARSE, *VIDEO_EDGES], required=list(VIDEO_EDGES)
    )

    sparse: Dict[str, torch.Tensor] = {
        "user_id": torch.from_numpy(user.copy()),
        "video_id": torch.from_numpy(video.copy()),
    }
    cardinality: Dict[str, int] = {"user_id": num_nodes["user"], "video_id": num_nodes["video"]}
    targets = {c: videos[c] for c in VIDEO_EDGES if c in videos.columns}  # raw edge targets per video
    if "tag" in videos.columns:
        # "39,68" -> ["39", "68"]: every tag is an edge, the first one is the sparse feature
        targets["tag"] = videos["tag"].map(
            lambda s: [t.strip() for t in str(s).split(",") if t.strip()], na_action="ignore"
        )
        videos = videos.assign(tag=targets["tag"].map(lambda ts: ts[0] if ts else None, na_action="ignore"))
    for frame, rows, columns in (
        (users, user, USER_SPARSE),
        (videos, video, (*VIDEO_SPARSE, *VIDEO_EDGES)),
        (log, None, CONTEXT_SPARSE),
    ):
        for col in (c for c in columns if c in frame.columns):
            codes, cardinality[col] = encode_categorical(frame[col])
            sparse[col] = torch.from_numpy(codes if rows is None else codes[rows])
    if "hourmin" in log.columns:
        codes, cardinality["hour"] = encode_categorical(log["hourmin"] // 100)
        sparse["hour"] = torch.from_numpy(codes)

    log_duration = np.log1p(np.clip(np.nan_to_num(duration), 0, None) / 1000.0)  # (N,)
    user_counts = [c for c in USER_DENSE if c in users.columns]
    user_dense = (
        np.stack([_log_count(users[c]) for c in user_counts], axis=1) if user_counts else np.zeros((len(users), 0))
    )
    dense = np.concatenate([log_duration[:, None], user_dense[user]], axis=1)  # (N, 1 + len(user_counts))
    video_duration = pd.Series(log_duration).groupby(video).first().to_numpy()  # (n_video,), every video is in the log
    node_features = {"video": torch.from_numpy(video_duration[:, None].astype(np.float32))}
    if user_counts:
        node_features["user"] = torch.from_numpy(user_dense.astype(np.float32))

    clicked = click == 1
    edges: Dict[EdgeType, EdgeList] = {
        ("user", "watches", "video"): EdgeList(
            src=torch.from_numpy(user[clicked]),
            dst=torch.from_numpy(video[clicked]),
            time=torch.from_numpy(timestamp[clicked]),
        )
    }
    if video_features_path is not None:
        for col, (relation, node_type) in VIDEO_EDGES.items():
            src, dst_raw = _explode(targets[col])
            index = id_index([dst_raw])
            num_nodes[node_type] = len(index)
            edges[("video", relation, node_type)] = EdgeList(
                src=torch.from_numpy(src), dst=torch.from_numpy(lookup_ids(index, dst_raw))
            )

    ds = GraphRecDataset(
        name="kuairand",
        tasks=tasks,
        user_type="user",
        item_type="video",
        num_nodes=num_nodes,
        examples=Interactions.from_arrays(
            user=user,
            item=video,
            timestamp=timestamp,
            labels=labels,
            dense=dense,
            sparse=sparse,
        ),
        edges=edges,
        dense_names=["log_duration_s", *(f"log_{c}" for c in user_counts)],
        sparse_cardinality=cardinality,
        node_features=node_features,
    )
    ds.validate()
    return ds


def long_view_rule(play_time_ms: np.ndarray, duration_ms: np.ndarray) -> np.ndarray:
    """(N,) float64 KuaiRand ``long_view``: full play for videos up to 18 s, else at least 18 s played."""
    threshold = np.where(duration_ms <= LONG_VIEW_MS, duration_ms, LONG_VIEW_MS)
    out = (play_time_ms >= threshold).astype(np.float64)
    out[np.isnan(play_time_ms) | np.isnan(duration_ms)] = np.nan
    return out


def _timestamps(log: pd.DataFrame, file: str) -> np.ndarray:
    """(N,) int64: ``time_ms``, else ``date`` + ``hourmin`` as unix ms, else the row position."""
    if "time_ms" in log.columns:
        return to_timestamps(log["time_ms"], f"{file}: column 'time_ms'")
    if "date" in log.columns and "hourmin" in log.columns:
        try:
            day = pd.to_datetime(log["date"].astype(str), format="%Y%m%d", utc=True)
        except ValueError as err:
            raise ValueError(f"{file}: column 'date' must be YYYYMMDD: {err}") from err
        hm = log["hourmin"].to_numpy(np.int64)
        stamp = day + pd.to_timedelta(hm // 100, unit="h") + pd.to_timedelta(hm % 100, unit="m")
        return ((stamp - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)).to_numpy(np.int64)
    return np.arange(len(log), dtype=np.int64)


def _node_table(
    log: pd.DataFrame,
    key: str,
    index: pd.Index,
    side_path: Optional[str | Path],
    columns: List[str],
    required: List[str],
) -> pd.DataFrame:
    """Per-node table of the known ``columns`` found, row i = node i (NaN where unknown).

    From the side table if given (which must have ``key`` and ``required``), else from the log's
    first row per node.
    """
    if side_path is None:
        present = [c for c in columns if c in log.columns]
        source = log[[key, *present]].drop_duplicates(subset=key)
    else:
        side_path = Path(side_path)
        source = pd.read_csv(side_path)
        require_columns(side_path.name, source, [key, *required])
        if source[key].duplicated().any():
            raise ValueError(
                f"{side_path.name}: column {key!r} must be unique, {int(source[key].duplicated().sum())} repeats"
            )
        source = source[source[key].isin(index)]  # ids outside the log are not nodes
        source = source[[key, *(c for c in columns if c in source.columns)]]
    return source.set_axis(lookup_ids(index, source[key])).reindex(np.arange(len(index))).drop(columns=key)


def _log_count(values: pd.Series) -> np.ndarray:
    """(n,) log1p of a count column; negative or missing -> 0."""
    return np.log1p(np.clip(pd.to_numeric(values, errors="coerce").fillna(0).to_numpy(np.float64), 0, None))


def _explode(targets: pd.Series) -> Tuple[np.ndarray, pd.Series]:
    """Per-video raw target ids or lists of them (NaN = none) -> ((E,) int64 video ids, (E,) raw targets)."""
    flat = targets.dropna().explode().dropna()
    return flat.index.to_numpy(np.int64), flat.reset_index(drop=True)

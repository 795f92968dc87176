"""Tests of the random DLRM data set: reproducibility, TorchRec's DLRM schema, id ranges, the
random graph (relations, time window, power-law degrees), config errors and the registry hook."""

from __future__ import annotations

import dataclasses

from typing import Dict

import numpy as np
import pytest
import torch

from torchrec_gnn.config import DataConfig, load_config
from torchrec_gnn.data.dataset import GraphRecDataset
from torchrec_gnn.data.random_data import (
    CLICKS,
    IN_CATEGORY,
    RANDOM_EDGE_TYPES,
    RandomDataConfig,
    make_random,
)
from torchrec_gnn.data.registry import load_dataset
from torchrec_gnn.data.split import time_split

SMALL = dict(num_examples=2_000, num_users=100, num_items=150, num_categories=7, num_clicks=3_000,
             num_embeddings_per_feature=50)


@pytest.fixture(scope="module")
def small() -> GraphRecDataset:
    return make_random(RandomDataConfig(**SMALL))


def _flat(ds: GraphRecDataset) -> Dict[str, torch.Tensor]:
    ex = ds.examples
    out = {"user": ex.user, "item": ex.item, "timestamp": ex.timestamp, "labels": ex.labels, "dense": ex.dense}
    out.update({f"sparse.{k}": v for k, v in ex.sparse.items()})
    for et, e in ds.edges.items():
        out.update({f"{et}.{f}": getattr(e, f) for f in ("src", "dst", "time") if getattr(e, f) is not None})
    return out


def test_same_seed_same_tensors_different_seed_different(small: GraphRecDataset) -> None:
    ref, again = _flat(small), _flat(make_random(RandomDataConfig(**SMALL)))
    other = _flat(make_random(RandomDataConfig(**SMALL, seed=1)))
    assert ref.keys() == again.keys() == other.keys()
    for key in ref:
        assert torch.equal(ref[key], again[key]), key
    for key in ("user", "labels", "dense", "sparse.cat_0", f"{CLICKS}.src"):
        assert not torch.equal(ref[key], other[key]), key


def test_dlrm_schema_shapes_and_cardinalities(small: GraphRecDataset) -> None:
    ex = small.examples
    assert len(ex) == 2_000 and small.task_names == ["click"] and small.tasks[0].kind == "binary"
    assert small.dense_names == [f"int_{i}" for i in range(13)]  # TorchRec's Criteo names
    assert list(small.sparse_cardinality) == [f"cat_{i}" for i in range(26)] == list(ex.sparse)
    assert set(small.sparse_cardinality.values()) == {50}
    assert ex.dense.shape == (2_000, 13) and ex.dense.dtype == torch.float32
    assert ex.labels.shape == (2_000, 1) and set(ex.labels.unique().tolist()) == {0.0, 1.0}
    assert 0.4 < float(ex.labels.mean()) < 0.6  # click_rate 0.5, as RandomRecDataset
    assert abs(float(ex.dense.mean())) < 0.05 and abs(float(ex.dense.std()) - 1.0) < 0.05
    assert small.user_type == "user" and small.item_type == "item"
    assert small.num_nodes == {"user": 100, "item": 150, "category": 7}
    assert small.node_features == {}

    sizes = list(range(10, 36))  # one cardinality per feature, as --num_embeddings_per_feature
    per_feature = make_random(RandomDataConfig(**{**SMALL, "num_embeddings_per_feature": sizes, "num_dense": 4,
                                                  "num_sparse": 26}))
    assert list(per_feature.sparse_cardinality.values()) == sizes
    assert per_feature.examples.dense.shape == (2_000, 4)


def test_ids_in_range_and_every_id_drawn(small: GraphRecDataset) -> None:
    small.validate()
    ex = small.examples
    for name, ids in ex.sparse.items():
        assert ids.dtype == torch.int64 and int(ids.min()) >= 0 and int(ids.max()) < 50, name
        assert ids.unique().numel() == 50, name  # uniform: 2000 draws cover 50 ids
    assert 0 <= int(ex.user.min()) and int(ex.user.max()) < 100
    assert 0 <= int(ex.item.min()) and int(ex.item.max()) < 150
    for et, e in small.edges.items():
        src_t, _, dst_t = et
        assert int(e.src.max()) < small.num_nodes[src_t] and int(e.dst.max()) < small.num_nodes[dst_t], et


def test_graph_relations_time_window_and_split(small: GraphRecDataset) -> None:
    assert tuple(small.edges) == RANDOM_EDGE_TYPES
    clicks, in_category = small.edges[CLICKS], small.edges[IN_CATEGORY]
    start, end = RandomDataConfig(**SMALL).example_window
    assert len(clicks) == 3_000 and clicks.time is not None and int(clicks.time.max()) < start
    assert in_category.time is None and torch.equal(in_category.src, torch.arange(150))  # one category per item
    t = small.examples.timestamp
    assert int(t.min()) >= start and int(t.max()) < end and bool((t[1:] >= t[:-1]).all())  # sorted by time

    # Every click precedes every example, so the leak-free split keeps all of them (deduplicated).
    split = time_split(small)
    pairs = np.unique(clicks.src.numpy() * 150 + clicks.dst.numpy()).size
    assert split.graph.num_edges(CLICKS) == pairs
    assert split.graph.num_edges(IN_CATEGORY) == 150
    assert ("item", "rev_clicks", "user") in split.graph.edge_types


def test_power_law_degrees() -> None:
    base = dict(num_examples=100, num_users=1_000, num_items=1_000, num_clicks=50_000, num_embeddings_per_feature=10)
    def top_share(exponent: float) -> float:
        src = make_random(RandomDataConfig(**base, power_law_exponent=exponent)).edges[CLICKS].src.numpy()
        degree = np.sort(np.bincount(src, minlength=1_000))[::-1]
        return degree[:10].sum() / degree.sum()  # share of clicks by the top 1% of users
    assert top_share(1.0) > 0.25 and top_share(0.0) < 0.02
    # The popular users are spread over the ids (a random ranking), not the lowest ids.
    src = make_random(RandomDataConfig(**base)).edges[CLICKS].src.numpy()
    assert np.argsort(np.bincount(src, minlength=1_000))[-10:].max() > 100


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"num_embeddings_per_feature has 3 values but num_sparse=26"):
        RandomDataConfig(num_embeddings_per_feature=[10, 20, 30])
    with pytest.raises(ValueError, match=r"num_users must be >= 1, got 0; click_rate must be in \(0, 1\), got 1.5"):
        RandomDataConfig(num_users=0, click_rate=1.5)
    with pytest.raises(ValueError, match=r"data.random.num_user: unknown key; valid keys of data.random: \[.*'num_users'"):
        DataConfig(dataset="random", random={"num_user": 3})


def test_registry_and_config_hook() -> None:
    sizes = ["data.dataset=random", "data.random.num_examples=500", "data.random.num_users=20",
             "data.random.num_items=30", "data.random.num_clicks=100"]
    with pytest.raises(ValueError, match=r"data.random: RandomDataConfig: num_embeddings_per_feature has 1 values "
                                         r"but num_sparse=26"):  # at load, before any data is built
        load_config(None, [*sizes, "data.random.num_embeddings_per_feature=[5]"])
    config = load_config(None, sizes)
    assert config.data.random_config().num_examples == 500
    ds = load_dataset(dataclasses.replace(config.data, seed=3))
    assert ds.name == "random" and len(ds.examples) == 500
    assert torch.equal(ds.examples.user, load_dataset(DataConfig(dataset="random", random={**config.data.random, "seed": 3})).examples.user)
    assert not torch.equal(ds.examples.user, load_dataset(dataclasses.replace(config.data, seed=4)).examples.user)

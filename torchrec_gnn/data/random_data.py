"""Random DLRM data with a random heterogeneous graph: measures throughput and plumbing, not quality.

The ranker half is TorchRec's "random data DLRM" setting
(``torchrec.datasets.random.RandomRecDataset`` as used by TorchRec's DLRM example): F = 13 dense
features ``int_0 .. int_12`` drawn from N(0, 1), 26 sparse features ``cat_0 .. cat_25`` with one
id each, uniform in ``[0, num_embeddings)`` of that feature, and a binary ``click`` label that
is 1 with probability ``click_rate``. The names follow TorchRec's Criteo constants
(``DEFAULT_INT_NAMES``, ``DEFAULT_CAT_NAMES``), so table names match TorchRec's DLRM.

The graph half gives the GNN tower something to sample. Node types ``user``, ``item`` and
``category``; raw relations (the graph builder adds reverse edges):

====================================  =======  ==================================================
relation                              time     meaning
====================================  =======  ==================================================
``("user", "clicks", "item")``        event    ``num_clicks`` edges in the history window;
                                               user and item degrees are power-law
``("item", "in", "category")``        static   one edge per item; category sizes power-law
====================================  =======  ==================================================

Every example is an impression ``(user, item, timestamp)``: users and items drawn with the same
power laws as the click edges (so the seeds of a batch hit the graph's hubs as real traffic
does), timestamps uniform in the example window ``[history_fraction * T, T)`` with
``T = num_days`` days, sorted by time. Every click edge lies before the example window, so
:func:`torchrec_gnn.data.split.time_split` keeps all of them.

Nothing links the labels to the features or the graph: a trained model scores AUC ~0.5 on
this data, by design. Use it to measure examples/s, memory and sharding at a chosen scale (the
cardinalities are free, as in TorchRec's random DLRM) and to check that a job runs end to end;
use the synthetic platform (:mod:`torchrec_gnn.data.synthetic`) or real data to measure
quality. Everything is vectorised numpy seeded by ``config.seed`` (no global RNG state).

Example:
    >>> ds = make_random(RandomDataConfig(num_examples=1000, num_users=50, num_items=80,
    ...                                   num_clicks=2000, num_embeddings_per_feature=100))
    >>> ds.task_names, len(ds.dense_names), len(ds.sparse_cardinality)
    (['click'], 13, 26)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple, Union

import numpy as np
import torch

from torchrec_gnn.data.dataset import GraphRecDataset, Interactions, TaskSpec
from torchrec_gnn.typing import EdgeList, EdgeType

RANDOM_TASKS: Tuple[TaskSpec, ...] = (TaskSpec("click", "binary"),)
CLICKS: EdgeType = ("user", "clicks", "item")
IN_CATEGORY: EdgeType = ("item", "in", "category")
RANDOM_EDGE_TYPES: Tuple[EdgeType, ...] = (CLICKS, IN_CATEGORY)
_DAY = 86_400


@dataclass
class RandomDataConfig:
    """Sizes and seed of :func:`make_random`; defaults follow TorchRec's random-data DLRM.

    Args:
        num_examples (int): N labelled impressions. Default ``100_000``.
        num_users (int): user nodes. Default ``10_000``.
        num_items (int): item nodes. Default ``20_000``.
        num_categories (int): category nodes (each item is in one). Default ``100``.
        num_dense (int): F dense features. Default ``13`` (as Criteo/DLRM).
        num_sparse (int): sparse features. Default ``26`` (as Criteo/DLRM).
        num_embeddings_per_feature (Union[int, List[int]]): ids of each sparse feature: one
            int for all, or one per feature (``num_sparse`` values). Default ``100_000``
            (TorchRec's DLRM ``--num_embeddings``).
        num_clicks (int): raw ``("user", "clicks", "item")`` edges; repeats of a pair collapse
            to one when the graph is built (~310k of the default 500k remain). Default ``500_000``.
        power_law_exponent (float): degrees of users and items and sizes of categories follow
            P(rank r) ~ (1 + r)^-exponent over a random ranking (0 = uniform). Default ``1.0``.
        click_rate (float): P(click = 1). Default ``0.5`` (as ``RandomRecDataset``).
        num_days (int): length T of the time range, in days. Default ``30``.
        history_fraction (float): share of the time range before the first example, where the
            click edges lie. Default ``0.5``.
        seed (int): seed of every draw. Default ``0``.
    """

    num_examples: int = 100_000
    num_users: int = 10_000
    num_items: int = 20_000
    num_categories: int = 100
    num_dense: int = 13
    num_sparse: int = 26
    num_embeddings_per_feature: Union[int, List[int]] = 100_000
    num_clicks: int = 500_000
    power_law_exponent: float = 1.0
    click_rate: float = 0.5
    num_days: int = 30
    history_fraction: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        errors = []
        for name in ("num_examples", "num_users", "num_items", "num_categories", "num_dense", "num_sparse", "num_days"):
            if int(getattr(self, name)) < 1:
                errors.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_clicks < 0:
            errors.append(f"num_clicks must be >= 0, got {self.num_clicks}")
        if self.power_law_exponent < 0:
            errors.append(f"power_law_exponent must be >= 0, got {self.power_law_exponent}")
        for name in ("click_rate", "history_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                errors.append(f"{name} must be in (0, 1), got {getattr(self, name)}")
        sizes = self.num_embeddings_per_feature
        if isinstance(sizes, (list, tuple)):
            if len(sizes) != self.num_sparse:
                errors.append(
                    f"num_embeddings_per_feature has {len(sizes)} values but num_sparse={self.num_sparse}; "
                    f"give one int for all features or one per feature"
                )
            elif any(int(n) < 1 for n in sizes):
                errors.append(f"num_embeddings_per_feature must all be >= 1, got {list(sizes)}")
        elif int(sizes) < 1:
            errors.append(f"num_embeddings_per_feature must be >= 1, got {sizes}")
        if errors:
            raise ValueError("RandomDataConfig: " + "; ".join(errors))

    @property
    def cardinalities(self) -> List[int]:
        """Ids of each sparse feature, ``num_sparse`` values."""
        sizes = self.num_embeddings_per_feature
        return [int(n) for n in sizes] if isinstance(sizes, (list, tuple)) else [int(sizes)] * self.num_sparse

    @property
    def example_window(self) -> Tuple[int, int]:
        """``[start, end)`` in seconds of the examples; the click edges lie in ``[0, start)``."""
        end = self.num_days * _DAY
        return int(self.history_fraction * end), end


def make_random(config: RandomDataConfig) -> GraphRecDataset:
    """Build the random DLRM data set and its random graph (see the module docstring).

    Args:
        config (RandomDataConfig): sizes, power law, time range and seed.

    Returns:
        GraphRecDataset: ``user_type="user"``, ``item_type="item"``, one binary task ``click``,
        the relations of :data:`RANDOM_EDGE_TYPES`, dense features ``int_0 ..`` and sparse
        features ``cat_0 ..`` with ``config.cardinalities``, no node side features; validated.

    Example:
        >>> ds = make_random(RandomDataConfig(num_examples=500, num_users=20, num_items=30,
        ...                                   num_categories=4, num_clicks=200,
        ...                                   num_embeddings_per_feature=[10] * 26))
        >>> sorted(ds.num_nodes.items()), len(ds.examples)
        ([('category', 4), ('item', 30), ('user', 20)], 500)
    """
    rng = np.random.default_rng(config.seed)
    n, U, I, K = config.num_examples, config.num_users, config.num_items, config.num_categories
    a = config.power_law_exponent
    t_start, t_end = config.example_window

    # Random rankings: a node's id says nothing about its popularity (as after hashing).
    user_rank, item_rank, cat_rank = rng.permutation(U), rng.permutation(I), rng.permutation(K)

    clicks = EdgeList(
        src=_t(user_rank[_power_law(rng, U, config.num_clicks, a)]),
        dst=_t(item_rank[_power_law(rng, I, config.num_clicks, a)]),
        time=_t(rng.integers(0, max(t_start, 1), config.num_clicks)),
    )
    in_category = EdgeList(src=_t(np.arange(I)), dst=_t(cat_rank[_power_law(rng, K, I, a)]))

    times = np.sort(rng.integers(t_start, t_end, n))
    cardinalities = config.cardinalities
    sparse_names = [f"cat_{i}" for i in range(config.num_sparse)]
    # (num_sparse, N): each row uniform in [0, num_embeddings) of its feature, in one draw.
    sparse = (rng.random((config.num_sparse, n)) * np.asarray(cardinalities)[:, None]).astype(np.int64)
    examples = Interactions(
        user=_t(user_rank[_power_law(rng, U, n, a)]),
        item=_t(item_rank[_power_law(rng, I, n, a)]),
        timestamp=_t(times),
        labels=torch.from_numpy((rng.random((n, 1)) < config.click_rate).astype(np.float32)),
        dense=torch.from_numpy(rng.standard_normal((n, config.num_dense), dtype=np.float32)),
        sparse={name: _t(ids) for name, ids in zip(sparse_names, sparse)},
    )
    dataset = GraphRecDataset(
        name="random",
        tasks=list(RANDOM_TASKS),
        user_type="user",
        item_type="item",
        num_nodes={"user": U, "item": I, "category": K},
        examples=examples,
        edges={CLICKS: clicks, IN_CATEGORY: in_category},
        dense_names=[f"int_{i}" for i in range(config.num_dense)],
        sparse_cardinality=dict(zip(sparse_names, cardinalities)),
    )
    dataset.validate()
    return dataset


def _power_law(rng: np.random.Generator, n: int, size: int, exponent: float) -> np.ndarray:
    """(size,) ranks in ``[0, n)`` with P(rank ~ r) proportional to (1 + r)^-exponent."""
    u = rng.random(size)
    b = 1.0 - exponent
    if abs(b) < 1e-9:
        x = np.expm1(u * np.log1p(n))
    else:  # inverse CDF of the continuous law on [0, n)
        x = (1.0 + u * ((1.0 + n) ** b - 1.0)) ** (1.0 / b) - 1.0
    return np.clip(x.astype(np.int64), 0, n - 1)


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(x, dtype=np.int64))  # a copy: no two fields share memory

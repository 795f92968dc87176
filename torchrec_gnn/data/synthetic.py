"""Synthetic short-video platform: the built-in default dataset, with signal planted in its graph.

Node types: ``user``, ``video``, ``author``, ``query`` (search domain), ``product`` (e-commerce).
Raw relations (the graph builder may add reverse edges):

====================================  =======  ==================================================
relation                              time     meaning
====================================  =======  ==================================================
``("user", "watches", "video")``      event    a clicked impression; ``weight`` = watched fraction
``("user", "follows", "author")``     event    the user follows the author
``("user", "friend", "user")``        static   symmetric, stored once per pair with ``src < dst``
``("author", "creates", "video")``    static   one edge per video
``("user", "searches", "query")``     event    the user issued the query
``("query", "clicks", "video")``      event    a search result clicked after that query
``("user", "purchases", "product")``  event    the user bought the product
``("product", "related", "video")``   static   the video features the product (cross-domain)
====================================  =======  ==================================================

Examples are feed impressions ``(user, video, timestamp)`` with tasks, in label-column order,
``click``, ``long_view``, ``like``, ``skip`` (binary) and ``stay_duration`` (regression, seconds).
``long_view`` and ``like`` are 0 (not ``NaN``) on unclicked impressions; ``skip`` (left within
:data:`SKIP_SECONDS`) is 0 on clicked ones; ``stay_duration`` is ``NaN`` (missing label) on a
random ``missing_stay_fraction`` of impressions.

Time: ``[0, num_days)`` days in seconds. The first ``history_fraction`` is the history window,
the rest the labelled example window (every example lies in it). Most events lie in the history
window, but some follows/searches/purchases and the ``watches`` edge of every clicked example
(same timestamp as the example) lie in the example window, so a time split must filter them.

Graph signal (latent taste model). ``K = num_categories`` topic vectors live in R^latent_dim.
Each user belongs to a community whose centroid mixes a few topics; friendships are mostly
within a community (``homophily``). A user's taste is the community centroid plus a personal
component plus the mean of the *friends'* personal components (``social_weight``: taste shared
through the social graph). Each author has a category (topic) and a topic vector near it; a
video's vector is its author's plus noise; queries and products have category topic vectors too.
Click, watched fraction and like depend on the cosine ``<taste_u, topic_v>`` plus video quality,
hour-of-day, video age and user activity effects. Part of the signal reaches the labels only via
the graph: ``cold_user_fraction`` of users get ~``impressions_per_cold_user`` labelled
impressions, so their ID embeddings learn next to nothing, yet every user has a history of
watches (clicked history impressions), follows, friends, searches and purchases drawn from the
same taste; ``new_video_fraction`` of videos are uploaded inside the example window, so they have
no history watches, but their author's other videos, the author's followers and related products
reveal their topic. A ranker with ID embeddings only cannot recover these users' and videos'
tastes from the labels, whereas a GNN over the history graph can.

Interest drift (``taste_drift_fraction``, off by default). A share of users switch to another
community's topics at a uniform time inside the example window (their personal and social
components stay). From then on their clicks, watched fractions, likes, follows, searches,
purchases and search clicks follow the new taste, while the feed keeps choosing categories by
the old one (the platform's personalisation lags). Only edges created after the switch reveal
the new taste: a graph frozen at the start of the window never does, and for a cold user neither
do the labels. Drift draws come from their own random stream, so every other draw is unchanged.

Item popularity is power-law: within a category, items are ranked by a popularity key (partly
quality) and drawn with a Zipf-like law; authors' productivity is Zipf-like as well. Everything
is vectorised numpy seeded by ``config.seed`` (no global RNG state): the same config gives
identical tensors.

Example:
    >>> ds = make_synthetic(SyntheticConfig.preset("tiny"))
    >>> ds.task_names
    ['click', 'long_view', 'like', 'skip', 'stay_duration']
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from torchrec_gnn.data.dataset import GraphRecDataset, Interactions, TaskSpec
from torchrec_gnn.typing import EdgeList, EdgeType

SYNTHETIC_TASKS: Tuple[TaskSpec, ...] = (
    TaskSpec("click", "binary"),
    TaskSpec("long_view", "binary"),
    TaskSpec("like", "binary"),
    TaskSpec("skip", "binary"),
    TaskSpec("stay_duration", "regression"),
)
WATCHES: EdgeType = ("user", "watches", "video")
FOLLOWS: EdgeType = ("user", "follows", "author")
FRIEND: EdgeType = ("user", "friend", "user")
CREATES: EdgeType = ("author", "creates", "video")
SEARCHES: EdgeType = ("user", "searches", "query")
SEARCH_CLICKS: EdgeType = ("query", "clicks", "video")
PURCHASES: EdgeType = ("user", "purchases", "product")
RELATED: EdgeType = ("product", "related", "video")
SYNTHETIC_EDGE_TYPES: Tuple[EdgeType, ...] = (
    WATCHES, FOLLOWS, FRIEND, CREATES, SEARCHES, SEARCH_CLICKS, PURCHASES, RELATED,
)
DENSE_NAMES: Tuple[str, ...] = (
    "video_duration_log",  # log1p(video duration in seconds)
    "video_age_log",  # log1p(hours since upload at impression time)
    "video_popularity_log",  # log1p(history-window watches of the video)
    "user_activity_log",  # log1p(history-window watches of the user)
    "hour_sin",
    "hour_cos",
)
NUM_AGE_BUCKETS = 6
SKIP_SECONDS = 2.0  # an unclicked impression left faster than this is a skip
WATCH_LONG_FRACTION = 0.75  # a clicked impression watched at least this fraction is a long view
CLICK_NOISE = 0.3  # std of the per-impression click logit noise
WATCH_NOISE = 0.8  # std of the per-impression watched-fraction logit noise
_DAY = 86_400
_HOUR = 3_600
# Impressions simulated at once: bounds peak memory (the "large" preset simulates ~10^8).
_CHUNK = 1 << 21


@dataclass
class SyntheticConfig:
    """Sizes, rates and signal strengths of :func:`make_synthetic`; defaults are the "default" preset.

    Args:
        num_users (int): users. Default ``20_000``.
        num_videos (int): videos. Default ``30_000``.
        num_authors (int): authors. Default ``3_000``.
        num_queries (int): search queries. Default ``2_000``.
        num_products (int): products. Default ``5_000``.
        num_categories (int): K topics = video/author/query/product categories. Default ``20``.
        num_communities (int): user communities (taste clusters). Default ``24``.
        num_regions (int): user regions (weakly tied to communities). Default ``12``.
        latent_dim (int): dimension of taste/topic vectors. Default ``16``.
        num_days (int): length of the time range. Default ``30``.
        history_fraction (float): share of the time range before the first example. Default ``0.4``.
        cold_user_fraction (float): users with almost no labelled impressions. Default ``0.5``.
        new_video_fraction (float): videos uploaded inside the example window. Default ``0.4``.
        history_impressions_per_user (float): mean history-window feed impressions per user;
            only the clicked ones become ``watches`` edges. Default ``150``.
        impressions_per_warm_user (float): mean labelled impressions of a warm user. Default ``40``.
        impressions_per_cold_user (float): mean labelled impressions of a cold user. Default ``2``.
        follows_per_user (float): mean follow candidates per user (~70% kept). Default ``12``.
        friends_per_user (float): mean friendships per user. Default ``8``.
        searches_per_user (float): mean searches per user. Default ``10``.
        purchases_per_user (float): mean purchase candidates per user (~70% kept). Default ``4``.
        videos_per_product (float): mean related videos per product. Default ``4``.
        event_history_share (float): share of follow/search/purchase events in the history
            window (the rest fall in the example window). Default ``0.85``.
        base_ctr (float): target mean click rate of labelled impressions. Default ``0.2``.
        taste_strength (float): click logit per unit of taste/topic cosine. Default ``4.0``.
        taste_temperature (float): sharpness of a user's category preferences. Default ``6.0``.
        feed_personalization (float): share of feed impressions drawn from the user's
            preferred categories (the rest follow global category popularity). Default ``0.5``.
        taste_noise (float): weight of the personal taste component. Default ``0.7``.
        social_weight (float): weight of the friends' (shared) taste component. Default ``0.6``.
        homophily (float): share of friendships within the community. Default ``0.8``.
        item_noise (float): spread of author/query/product vectors around their topic. Default ``0.6``.
        video_noise (float): spread of a video's vector around its author's. Default ``0.35``.
        popularity_exponent (float): Zipf exponent of item popularity in a category. Default ``0.9``.
        author_productivity_exponent (float): Zipf exponent of videos per author. Default ``0.6``.
        missing_stay_fraction (float): impressions whose ``stay_duration`` is ``NaN``. Default ``0.01``.
        taste_drift_fraction (float): users whose taste moves to another community's topics at a
            uniform time inside the example window (interest drift). Default ``0.0``.
        seed (int): seed of every random draw. Default ``0``.

    Example:
        >>> SyntheticConfig.preset("tiny", seed=3).num_users
        400
    """

    num_users: int = 20_000
    num_videos: int = 30_000
    num_authors: int = 3_000
    num_queries: int = 2_000
    num_products: int = 5_000
    num_categories: int = 20
    num_communities: int = 24
    num_regions: int = 12
    latent_dim: int = 16
    num_days: int = 30
    history_fraction: float = 0.4
    cold_user_fraction: float = 0.5
    new_video_fraction: float = 0.4
    history_impressions_per_user: float = 150.0
    impressions_per_warm_user: float = 40.0
    impressions_per_cold_user: float = 2.0
    follows_per_user: float = 12.0
    friends_per_user: float = 8.0
    searches_per_user: float = 10.0
    purchases_per_user: float = 4.0
    videos_per_product: float = 4.0
    event_history_share: float = 0.85
    base_ctr: float = 0.2
    taste_strength: float = 4.0
    taste_temperature: float = 6.0
    feed_personalization: float = 0.5
    taste_noise: float = 0.7
    social_weight: float = 0.6
    homophily: float = 0.8
    item_noise: float = 0.6
    video_noise: float = 0.35
    popularity_exponent: float = 0.9
    author_productivity_exponent: float = 0.6
    missing_stay_fraction: float = 0.01
    taste_drift_fraction: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        errors = []
        for name in ("num_users", "num_videos", "num_authors", "num_queries", "num_products",
                     "num_categories", "num_communities", "num_regions", "num_days"):
            if int(getattr(self, name)) < 1:
                errors.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.latent_dim < 2:
            errors.append(f"latent_dim must be >= 2, got {self.latent_dim}")
        for name in ("history_fraction", "base_ctr"):
            if not 0.0 < getattr(self, name) < 1.0:
                errors.append(f"{name} must be in (0, 1), got {getattr(self, name)}")
        for name in ("cold_user_fraction", "new_video_fraction", "event_history_share",
                     "feed_personalization", "homophily", "missing_stay_fraction", "taste_drift_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                errors.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("history_impressions_per_user", "impressions_per_warm_user",
                     "impressions_per_cold_user", "follows_per_user", "friends_per_user",
                     "searches_per_user", "purchases_per_user", "videos_per_product", "taste_noise",
                     "social_weight", "item_noise", "video_noise", "popularity_exponent",
                     "author_productivity_exponent"):
            if getattr(self, name) < 0:
                errors.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if errors:
            raise ValueError("SyntheticConfig: " + "; ".join(errors))

    @property
    def example_window(self) -> Tuple[int, int]:
        """``[start, end)`` in seconds of the labelled examples; the history window is ``[0, start)``."""
        end = self.num_days * _DAY
        return int(self.history_fraction * end), end

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "SyntheticConfig":
        """The named preset (``"tiny"``, ``"default"``, ``"large"``) with ``overrides`` applied.

        ``"tiny"`` builds in well under a second (unit tests, ~3k examples); ``"default"`` is the
        demo dataset (~0.45M examples, ~1.4M edges); ``"large"`` has tens of millions of edges.
        """
        if name not in _PRESETS:
            raise ValueError(f"SyntheticConfig.preset: unknown preset {name!r}; valid presets: {sorted(_PRESETS)}")
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ValueError(f"SyntheticConfig.preset: unknown fields {unknown}; valid fields: {sorted(valid)}")
        return cls(**{**_PRESETS[name], **overrides})


_PRESETS: Dict[str, Dict[str, Any]] = {
    "tiny": dict(
        num_users=400, num_videos=500, num_authors=50, num_queries=40, num_products=80,
        num_categories=8, num_communities=6, num_regions=4, history_impressions_per_user=60.0,
        impressions_per_warm_user=16.0, follows_per_user=6.0, friends_per_user=6.0,
        searches_per_user=4.0, purchases_per_user=2.0, videos_per_product=3.0, missing_stay_fraction=0.02,
    ),
    "default": {},
    "large": dict(
        num_users=500_000, num_videos=600_000, num_authors=40_000, num_queries=30_000,
        num_products=100_000, num_categories=40, num_communities=64, num_regions=32,
        history_impressions_per_user=100.0,
    ),
}


def make_synthetic(config: SyntheticConfig) -> GraphRecDataset:
    """Build the synthetic short-video dataset described in the module docstring.

    Args:
        config (SyntheticConfig): sizes, rates, signal strengths and seed.

    Returns:
        GraphRecDataset: ``user_type="user"``, ``item_type="video"``, the 5 tasks of
        :data:`SYNTHETIC_TASKS`, the 8 relations of :data:`SYNTHETIC_EDGE_TYPES`, dense features
        :data:`DENSE_NAMES` and sparse features ``user_id``, ``video_id``, ``author_id``,
        ``video_category``, ``user_region``, ``user_age``, ``hour``; validated.

    Example:
        >>> ds = make_synthetic(SyntheticConfig.preset("tiny"))
        >>> ds.examples.labels.shape[1], len(ds.edges)
        (5, 8)
    """
    rng = np.random.default_rng(config.seed)
    w = _World.create(rng, config)
    U = config.num_users

    # Labelled impressions; the click bias is calibrated once so that the mean CTR is base_ctr.
    n_ex = np.where(
        w.cold,
        rng.poisson(config.impressions_per_cold_user, U),
        rng.poisson(config.impressions_per_warm_user * w.activity),
    )
    ex_users = np.repeat(np.arange(U), n_ex)
    all_pools = _Pools.build(w.video_cat, w.video_popularity, config.num_categories)
    old_pools = _Pools.build(w.video_cat, w.video_popularity, config.num_categories, mask=~w.video_new)
    feed = w.feed_probs()
    ex_probs, hist_probs = all_pools.mask(feed), old_pools.mask(feed)
    bias = _calibrate_bias(rng, w, ex_users, all_pools, ex_probs)

    n_hist = rng.poisson(config.history_impressions_per_user * w.activity)
    hist = _simulate(rng, w, np.repeat(np.arange(U), n_hist), old_pools, hist_probs, 0, w.t_start, bias, True)
    ex = _simulate(rng, w, ex_users, all_pools, ex_probs, w.t_start, w.t_end, bias, False)
    order = np.lexsort((ex["user"], ex["time"]))
    ex = {k: v[order] for k, v in ex.items()}

    clicked = ex["click"]
    watches = EdgeList(
        src=_t(np.concatenate([hist["user"], ex["user"][clicked]])),
        dst=_t(np.concatenate([hist["video"], ex["video"][clicked]])),
        time=_t(np.concatenate([hist["time"], ex["time"][clicked]])),
        weight=torch.from_numpy(np.concatenate([hist["frac"], ex["frac"][clicked]]).astype(np.float32)),
    )
    edges: Dict[EdgeType, EdgeList] = {WATCHES: watches}
    edges.update(_side_edges(rng, w))

    examples = _examples(rng, w, ex, hist)
    dataset = GraphRecDataset(
        name="synthetic",
        tasks=list(SYNTHETIC_TASKS),
        user_type="user",
        item_type="video",
        num_nodes={
            "user": U, "video": config.num_videos, "author": config.num_authors,
            "query": config.num_queries, "product": config.num_products,
        },
        examples=examples,
        edges={et: edges[et] for et in SYNTHETIC_EDGE_TYPES},
        dense_names=list(DENSE_NAMES),
        sparse_cardinality={
            "user_id": U, "video_id": config.num_videos, "author_id": config.num_authors,
            "video_category": config.num_categories, "user_region": config.num_regions,
            "user_age": NUM_AGE_BUCKETS, "hour": 24,
        },
        node_features=w.node_features(),
    )
    dataset.validate()
    return dataset


@dataclass
class _World:
    """Latent and observed per-node attributes; arrays are indexed by node id."""

    cfg: SyntheticConfig
    t_start: int  # first example time = end of the history window
    t_end: int
    topics: np.ndarray  # (K, d) unit topic vectors
    category_prior: np.ndarray  # (K,) global category popularity
    region: np.ndarray  # (U,)
    age: np.ndarray  # (U,)
    activity: np.ndarray  # (U,) lognormal activity multiplier, mean ~1
    cold: np.ndarray  # (U,) bool
    friends: Tuple[np.ndarray, np.ndarray]  # (E,), (E,) with src < dst
    z_taste: np.ndarray  # (2U, d) unit tastes; row u: user u's before its switch, row U + u: after it
    switch: np.ndarray  # (U,) time of the user's taste switch; int64 max if it never drifts
    author_cat: np.ndarray  # (A,)
    z_author: np.ndarray  # (A, d)
    video_author: np.ndarray  # (V,)
    video_cat: np.ndarray  # (V,)
    z_video: np.ndarray  # (V, d)
    quality: np.ndarray  # (V,)
    duration: np.ndarray  # (V,) seconds
    upload: np.ndarray  # (V,) upload time
    video_new: np.ndarray  # (V,) bool: uploaded inside the example window
    video_popularity: np.ndarray  # (V,) sort key, lower = more popular
    query_cat: np.ndarray  # (Q,)
    z_query: np.ndarray  # (Q, d)
    product_cat: np.ndarray  # (P,)
    z_product: np.ndarray  # (P, d)
    price: np.ndarray  # (P,)

    @classmethod
    def create(cls, rng: np.random.Generator, cfg: SyntheticConfig) -> "_World":
        U, V, A, K, G, d = (cfg.num_users, cfg.num_videos, cfg.num_authors, cfg.num_categories,
                            cfg.num_communities, cfg.latent_dim)
        t_start, t_end = cfg.example_window

        topics = _unit(rng.standard_normal((K, d)))
        prior = (np.arange(K) + 1.0) ** -0.7
        prior /= prior.sum()
        centroids = _unit(rng.dirichlet(np.full(K, 0.3), G) @ topics)  # (G, d): a few topics each

        community = rng.integers(0, G, U)
        tied = rng.random(U) < 0.3  # region carries a little community information
        region = np.where(tied, community % cfg.num_regions, rng.integers(0, cfg.num_regions, U))
        age = rng.integers(0, NUM_AGE_BUCKETS, U)
        activity = rng.lognormal(-0.18, 0.6, U)  # mean ~1
        cold = rng.random(U) < cfg.cold_user_fraction
        friends = _friendships(rng, community, G, cfg.friends_per_user, cfg.homophily)

        # Taste = community centroid + personal component + friends' mean personal component.
        personal = rng.standard_normal((U, d)) / math.sqrt(d)  # norm ~1
        src, dst = friends
        social = np.zeros((U, d))
        np.add.at(social, src, personal[dst])
        np.add.at(social, dst, personal[src])
        degree = np.bincount(src, minlength=U) + np.bincount(dst, minlength=U)
        social /= np.maximum(degree, 1)[:, None]
        z_user = _unit(centroids[community] + cfg.taste_noise * personal + cfg.social_weight * social)
        drift_rng = _drift_stream(cfg)
        drifts = drift_rng.random(U) < cfg.taste_drift_fraction
        new_community = (community + 1 + drift_rng.integers(0, max(G - 1, 1), U)) % G
        z_after = np.where(
            drifts[:, None],
            _unit(centroids[new_community] + cfg.taste_noise * personal + cfg.social_weight * social),
            z_user,
        )
        switch = np.where(
            drifts, t_start + (drift_rng.random(U) * (t_end - t_start)).astype(np.int64), np.iinfo(np.int64).max
        )

        author_cat = rng.choice(K, A, p=prior)
        z_author = _unit(topics[author_cat] + cfg.item_noise * rng.standard_normal((A, d)) / math.sqrt(d))
        author_quality = rng.normal(0.0, 0.6, A)
        author_rank = rng.permutation(A)  # productivity rank -> author id
        video_author = author_rank[_zipf_rank(rng, np.full(V, A), cfg.author_productivity_exponent)]
        video_cat = author_cat[video_author]
        z_video = _unit(z_author[video_author] + cfg.video_noise * rng.standard_normal((V, d)) / math.sqrt(d))
        quality = author_quality[video_author] + rng.normal(0.0, 0.5, V)
        duration = np.clip(rng.lognormal(math.log(25.0), 0.7, V), 3.0, 600.0)
        video_new = rng.random(V) < cfg.new_video_fraction
        video_new[0] = False  # history impressions need at least one video uploaded before them
        upload = np.where(
            video_new,
            t_start + rng.random(V) * 0.9 * (t_end - t_start),
            rng.random(V) * 0.9 * t_start,
        ).astype(np.int64)
        video_popularity = rng.standard_normal(V) - 0.5 * quality

        query_cat = rng.choice(K, cfg.num_queries, p=prior)
        z_query = _unit(topics[query_cat] + cfg.item_noise * rng.standard_normal((cfg.num_queries, d)) / math.sqrt(d))
        product_cat = rng.choice(K, cfg.num_products, p=prior)
        z_product = _unit(
            topics[product_cat] + cfg.item_noise * rng.standard_normal((cfg.num_products, d)) / math.sqrt(d)
        )
        price = rng.lognormal(3.0, 1.0, cfg.num_products)
        return cls(
            cfg=cfg, t_start=t_start, t_end=t_end, topics=topics, category_prior=prior,
            region=region, age=age, activity=activity, cold=cold, friends=friends,
            z_taste=np.concatenate([z_user, z_after]).astype(np.float32), switch=switch, author_cat=author_cat, z_author=z_author.astype(np.float32),
            video_author=video_author, video_cat=video_cat,
            z_video=z_video.astype(np.float32), quality=quality, duration=duration, upload=upload,
            video_new=video_new, video_popularity=video_popularity, query_cat=query_cat,
            z_query=z_query.astype(np.float32), product_cat=product_cat,
            z_product=z_product.astype(np.float32), price=price,
        )

    @property
    def z_user(self) -> np.ndarray:
        """(U, d) every user's taste before any drift."""
        return self.z_taste[: self.cfg.num_users]

    def taste_row(self, users: np.ndarray, times: np.ndarray) -> np.ndarray:
        """(M,) the row of :attr:`z_taste` holding each user's taste at the event's time."""
        return users + self.cfg.num_users * (times >= self.switch[users])

    def taste_probs(self, z: Optional[np.ndarray] = None) -> np.ndarray:
        """(R, K) category preferences of taste rows ``z`` (default: every user's taste before
        any drift): softmax(temperature * cos + log prior)."""
        z = self.z_user if z is None else z
        logits = self.cfg.taste_temperature * (z @ self.topics.T.astype(np.float32))
        logits = logits + np.log(self.category_prior)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def feed_probs(self) -> np.ndarray:
        """(U, K) category mix of feed impressions: personalised share + global popularity."""
        m = self.cfg.feed_personalization
        return m * self.taste_probs() + (1.0 - m) * self.category_prior[None, :]

    def node_features(self) -> Dict[str, torch.Tensor]:
        """Observable side features per node type, (num_nodes, F_t) float32."""
        K = self.cfg.num_categories
        eye_k = np.eye(K, dtype=np.float32)
        n_videos = np.bincount(self.video_author, minlength=self.cfg.num_authors)
        feats = {
            "user": np.concatenate(
                [np.eye(self.cfg.num_regions, dtype=np.float32)[self.region],
                 np.eye(NUM_AGE_BUCKETS, dtype=np.float32)[self.age]], axis=1),
            "video": np.concatenate([np.log1p(self.duration)[:, None], eye_k[self.video_cat]], axis=1),
            "author": np.concatenate([np.log1p(n_videos)[:, None], eye_k[self.author_cat]], axis=1),
            "query": eye_k[self.query_cat],
            "product": np.concatenate([np.log1p(self.price)[:, None], eye_k[self.product_cat]], axis=1),
        }
        return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in feats.items()}


@dataclass
class _Pools:
    """Items grouped by category, most popular first: ``order[start[k] : start[k] + size[k]]``."""

    order: np.ndarray  # (n_items_in_pools,)
    start: np.ndarray  # (K,)
    size: np.ndarray  # (K,)

    @classmethod
    def build(cls, category: np.ndarray, popularity: np.ndarray, K: int,
              mask: Optional[np.ndarray] = None) -> "_Pools":
        ids = np.arange(category.size) if mask is None else np.flatnonzero(mask)
        order = ids[np.lexsort((popularity[ids], category[ids]))]
        size = np.bincount(category[ids], minlength=K)
        return cls(order=order, start=np.cumsum(size) - size, size=size)

    def mask(self, probs: np.ndarray) -> np.ndarray:
        """(U, K) ``probs`` with empty categories removed and rows renormalised."""
        p = probs * (self.size > 0)[None, :]
        return p / p.sum(axis=1, keepdims=True)

    def draw(self, rng: np.random.Generator, cats: np.ndarray, exponent: float) -> np.ndarray:
        """One Zipf-distributed item of each category in ``cats`` (M,) -> (M,) item ids."""
        return self.order[self.start[cats] + _zipf_rank(rng, self.size[cats], exponent)]


def _simulate(rng: np.random.Generator, w: _World, users: np.ndarray, pools: _Pools, probs: np.ndarray,
              lo: int, hi: int, bias: float, clicked_only: bool) -> Dict[str, np.ndarray]:
    """Feed impressions of ``users`` (M,) in ``[lo, hi)`` with their outcomes, in chunks.

    Returns arrays ``user, video, time, click, frac, stay, long_view, like, skip`` (M,), or only
    ``user, video, time, frac`` of the clicked impressions if ``clicked_only`` (watch events).
    """
    parts: List[Dict[str, np.ndarray]] = []
    for s in range(0, max(users.size, 1), _CHUNK):  # one (maybe empty) chunk at least
        u = users[s:s + _CHUNK]
        v, t = _draw_impressions(rng, w, u, pools, probs, lo, hi)
        out = _outcomes(rng, w, u, v, t, bias)
        if clicked_only:
            out = {k: out[k][out["click"]] for k in ("user", "video", "time", "frac")}
        parts.append(out)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _draw_impressions(rng: np.random.Generator, w: _World, users: np.ndarray, pools: _Pools,
                      probs: np.ndarray, lo: int, hi: int) -> Tuple[np.ndarray, np.ndarray]:
    """Videos (M,) and times (M,) of feed impressions; each after its video's upload."""
    videos = pools.draw(rng, _sample_rows(rng, probs, users), w.cfg.popularity_exponent)
    start = np.maximum(lo, w.upload[videos] + 1)
    times = start + (rng.random(users.size) * (hi - start)).astype(np.int64)
    return videos, times


def click_base(w: _World, users: np.ndarray, videos: np.ndarray, times: np.ndarray, aff: np.ndarray,
               quality: np.ndarray) -> np.ndarray:
    """(M,) the click logit without bias and noise, given the taste/topic cosine ``aff`` and the
    videos' ``quality`` (the reaction model's formulas live here and in the two below; the oracle
    of ``docs/results/synthetic_oracle.py`` reuses them)."""
    hour = (times // _HOUR) % 24
    age_days = (times - w.upload[videos]) / _DAY
    return (
        w.cfg.taste_strength * aff
        + 0.5 * quality
        + 0.3 * np.cos(2 * np.pi * (hour - 21) / 24)  # evening peak
        - 0.2 * np.log1p(age_days)  # fresh videos are more attractive
        + 0.2 * np.log(w.activity[users])
    )


def watch_fraction_base(aff: np.ndarray, quality: np.ndarray, duration: np.ndarray) -> np.ndarray:
    """(M,) the watched fraction's logit without noise."""
    return 0.3 + 2.0 * aff + 0.3 * quality - 0.4 * np.log(duration / 30.0)


def like_logit(aff: np.ndarray, quality: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """(M,) the logit of a like given a click and its watched fraction."""
    return -2.5 + 3.0 * aff + 0.5 * quality + 2.0 * (frac - 0.5)


def skim_seconds(unit_exponential: np.ndarray, p_click: np.ndarray, duration: np.ndarray) -> np.ndarray:
    """(M,) seconds an unclicked impression is skimmed: ~1-3 s, longer when it is more attractive."""
    return np.minimum(unit_exponential * (1.0 + 2.0 * p_click), duration)


def affinity(w: _World, users: np.ndarray, videos: np.ndarray, times: np.ndarray) -> np.ndarray:
    """(M,) taste/topic cosine of each impression, with the user's taste at the impression's time."""
    return _rowdot(w.z_taste, w.z_video, w.taste_row(users, times), videos)


def _click_logit(rng: np.random.Generator, w: _World, users: np.ndarray, videos: np.ndarray,
                 times: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Click logit without bias (M,) and taste/topic cosine (M,) with the taste at the impression's time."""
    aff = affinity(w, users, videos, times)
    logit = click_base(w, users, videos, times, aff, w.quality[videos]) + rng.normal(0.0, CLICK_NOISE, users.size)
    return logit, aff


def _outcomes(rng: np.random.Generator, w: _World, users: np.ndarray, videos: np.ndarray,
              times: np.ndarray, bias: float) -> Dict[str, np.ndarray]:
    """Consistent outcomes of impressions: click, watched fraction, stay, long view, like, skip."""
    n = users.size
    logit, aff = _click_logit(rng, w, users, videos, times)
    p_click = _sigmoid(bias + logit)
    click = rng.random(n) < p_click
    duration, quality = w.duration[videos], w.quality[videos]
    frac = _sigmoid(watch_fraction_base(aff, quality, duration) + rng.normal(0.0, WATCH_NOISE, n))
    skim = skim_seconds(rng.exponential(1.0, n), p_click, duration)
    stay = np.where(click, duration * frac, skim)
    like = click & (rng.random(n) < _sigmoid(like_logit(aff, quality, frac)))
    return dict(
        user=users, video=videos, time=times, click=click, frac=frac, stay=stay,
        long_view=click & (frac >= WATCH_LONG_FRACTION), like=like, skip=~click & (stay < SKIP_SECONDS),
    )


def _calibrate_bias(rng: np.random.Generator, w: _World, users: np.ndarray, pools: _Pools,
                    probs: np.ndarray) -> float:
    """Click bias giving mean CTR ``base_ctr`` on a pilot sample of labelled impressions."""
    if users.size == 0:
        return 0.0
    pilot = users[rng.integers(0, users.size, min(users.size, 50_000))]
    v, t = _draw_impressions(rng, w, pilot, pools, probs, w.t_start, w.t_end)
    logit, _ = _click_logit(rng, w, pilot, v, t)
    lo, hi = -20.0, 20.0
    for _ in range(50):  # bisection: mean sigmoid is increasing in the bias
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _sigmoid(mid + logit).mean() < w.cfg.base_ctr else (lo, mid)
    return 0.5 * (lo + hi)


def _side_edges(rng: np.random.Generator, w: _World) -> Dict[EdgeType, EdgeList]:
    """Follows, friendships, authorship, searches, search clicks, purchases, product-video links."""
    cfg = w.cfg
    K = cfg.num_categories
    taste = w.taste_probs()
    taste_after = w.taste_probs(w.z_taste[cfg.num_users:])  # (U, K) the preferences after a switch
    zipf = cfg.popularity_exponent
    drift_rng = _drift_stream(cfg, 1)

    author_pools = _Pools.build(w.author_cat, rng.random(cfg.num_authors), K)
    f_users, f_authors = _taste_events(rng, w, rng.poisson(cfg.follows_per_user * w.activity),
                                       author_pools, taste, w.z_author)
    key = np.unique(f_users * cfg.num_authors + f_authors)  # follow each author at most once
    f_users, f_authors = key // cfg.num_authors, key % cfg.num_authors
    f_times = _event_times(rng, w, f_users.size)
    f_users, f_authors, f_times = _drifted_events(drift_rng, w, f_users, f_authors, f_times, author_pools,
                                                  taste_after, w.z_author)
    key, first = np.unique(f_users * cfg.num_authors + f_authors, return_index=True)  # again after the redraw
    f_users, f_authors, f_times = key // cfg.num_authors, key % cfg.num_authors, f_times[first]
    follows = EdgeList(src=_t(f_users), dst=_t(f_authors), time=_t(f_times))

    query_pools = _Pools.build(w.query_cat, rng.random(cfg.num_queries), K)
    s_users, s_queries = _taste_events(rng, w, rng.poisson(cfg.searches_per_user * w.activity),
                                       query_pools, taste, None)
    s_times = _event_times(rng, w, s_users.size)
    s_users, s_queries, s_times = _drifted_events(drift_rng, w, s_users, s_queries, s_times, query_pools,
                                                  taste_after, None)
    searches = EdgeList(src=_t(s_users), dst=_t(s_queries), time=_t(s_times))

    # A search may be followed by a click on a same-category video that matches both the query and
    # the searcher's taste and is already uploaded.
    video_pools = _Pools.build(w.video_cat, w.video_popularity, K)
    has_videos = video_pools.size[w.query_cat[s_queries]] > 0
    c_users, c_queries, c_times = s_users[has_videos], s_queries[has_videos], s_times[has_videos]
    c_videos = video_pools.draw(rng, w.query_cat[c_queries], zipf)
    c_times = np.minimum(c_times + rng.integers(5, 120, c_times.size), w.t_end - 1)
    match = _rowdot(w.z_taste, w.z_video, w.taste_row(c_users, c_times), c_videos) + _rowdot(w.z_query, w.z_video, c_queries, c_videos)
    keep = (w.upload[c_videos] < c_times) & (rng.random(c_times.size) < _sigmoid(2.0 * match))
    search_clicks = EdgeList(src=_t(c_queries[keep]), dst=_t(c_videos[keep]), time=_t(c_times[keep]))

    product_pools = _Pools.build(w.product_cat, rng.random(cfg.num_products), K)
    p_users, p_products = _taste_events(rng, w, rng.poisson(cfg.purchases_per_user * w.activity),
                                        product_pools, taste, w.z_product)
    p_times = _event_times(rng, w, p_users.size)
    p_users, p_products, p_times = _drifted_events(drift_rng, w, p_users, p_products, p_times, product_pools,
                                                   taste_after, w.z_product)
    purchases = EdgeList(src=_t(p_users), dst=_t(p_products), time=_t(p_times))

    r_products = np.repeat(np.arange(cfg.num_products), rng.poisson(cfg.videos_per_product, cfg.num_products))
    r_products = r_products[video_pools.size[w.product_cat[r_products]] > 0]
    r_videos = video_pools.draw(rng, w.product_cat[r_products], zipf)
    key = np.unique(r_products * cfg.num_videos + r_videos)
    related = EdgeList(src=_t(key // cfg.num_videos), dst=_t(key % cfg.num_videos))

    src, dst = w.friends
    return {
        FOLLOWS: follows,
        FRIEND: EdgeList(src=_t(src), dst=_t(dst)),
        CREATES: EdgeList(src=_t(w.video_author), dst=_t(np.arange(cfg.num_videos))),
        SEARCHES: searches,
        SEARCH_CLICKS: search_clicks,
        PURCHASES: purchases,
        RELATED: related,
    }


def _taste_events(rng: np.random.Generator, w: _World, counts: np.ndarray, pools: _Pools,
                  probs: np.ndarray, z_item: Optional[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Per-user events (user, item) (E,): category by taste, item by popularity, then kept with
    probability sigmoid(4 cos(taste, item)) when ``z_item`` is given."""
    users = np.repeat(np.arange(w.cfg.num_users), counts)
    items = pools.draw(rng, _sample_rows(rng, pools.mask(probs), users), w.cfg.popularity_exponent)
    if z_item is not None:
        keep = rng.random(users.size) < _sigmoid(4.0 * _rowdot(w.z_user, z_item, users, items))
        users, items = users[keep], items[keep]
    return users, items


def _drifted_events(rng: np.random.Generator, w: _World, users: np.ndarray, items: np.ndarray,
                    times: np.ndarray, pools: _Pools, taste_after: np.ndarray, z_item: Optional[np.ndarray]
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Events (E,) with the item of each one at or after its user's taste switch drawn again as in
    :func:`_taste_events`, from the preferences after the switch ``taste_after`` (U, K)
    (rejected redraws are dropped)."""
    late = np.flatnonzero(times >= w.switch[users])
    if late.size == 0:
        return users, items, times
    rows = w.taste_row(users[late], times[late])
    new_items = pools.draw(rng, _sample_rows(rng, pools.mask(taste_after), users[late]), w.cfg.popularity_exponent)
    keep = np.ones(users.size, dtype=bool)
    if z_item is not None:
        keep[late] = rng.random(late.size) < _sigmoid(4.0 * _rowdot(w.z_taste, z_item, rows, new_items))
    items = items.copy()
    items[late] = new_items
    return users[keep], items[keep], times[keep]


def _drift_stream(cfg: SyntheticConfig, stream: int = 0) -> np.random.Generator:
    """The random stream of interest drift (``stream`` numbers its uses), separate from the main one."""
    return np.random.default_rng([cfg.seed, 7919, stream])


def _event_times(rng: np.random.Generator, w: _World, n: int) -> np.ndarray:
    """(n,) times: a share ``event_history_share`` in the history window, the rest after it."""
    in_history = rng.random(n) < w.cfg.event_history_share
    lo = np.where(in_history, 0, w.t_start)
    hi = np.where(in_history, w.t_start, w.t_end)
    return lo + (rng.random(n) * (hi - lo)).astype(np.int64)


def _examples(rng: np.random.Generator, w: _World, ex: Dict[str, np.ndarray],
              hist: Dict[str, np.ndarray]) -> Interactions:
    """Ranker examples: labels (N, 5), dense (N, 6) from history-window statistics only, sparse ids."""
    cfg = w.cfg
    users, videos, times = ex["user"], ex["video"], ex["time"]
    stay = ex["stay"].copy()
    stay[rng.random(users.size) < cfg.missing_stay_fraction] = np.nan
    labels = np.stack([ex["click"], ex["long_view"], ex["like"], ex["skip"], stay], axis=1)
    hour = (times // _HOUR) % 24
    user_watches = np.bincount(hist["user"], minlength=cfg.num_users)
    video_watches = np.bincount(hist["video"], minlength=cfg.num_videos)
    dense = np.stack([
        np.log1p(w.duration[videos]),
        np.log1p((times - w.upload[videos]) / _HOUR),
        np.log1p(video_watches[videos]),
        np.log1p(user_watches[users]),
        np.sin(2 * np.pi * hour / 24),
        np.cos(2 * np.pi * hour / 24),
    ], axis=1)
    return Interactions(
        user=_t(users),
        item=_t(videos),
        timestamp=_t(times),
        labels=torch.from_numpy(labels.astype(np.float32)),
        dense=torch.from_numpy(dense.astype(np.float32)),
        sparse={
            "user_id": _t(users),
            "video_id": _t(videos),
            "author_id": _t(w.video_author[videos]),
            "video_category": _t(w.video_cat[videos]),
            "user_region": _t(w.region[users]),
            "user_age": _t(w.age[users]),
            "hour": _t(hour),
        },
    )


def _friendships(rng: np.random.Generator, community: np.ndarray, num_communities: int,
                 per_user: float, homophily: float) -> Tuple[np.ndarray, np.ndarray]:
    """Undirected friendships (src, dst) (E,), src < dst, deduplicated; mostly within a community."""
    U = community.size
    src = np.repeat(np.arange(U), rng.poisson(per_user / 2.0, U))  # each pair adds 2 to the degrees
    members = np.argsort(community, kind="stable")
    size = np.bincount(community, minlength=num_communities)
    start = np.cumsum(size) - size
    g = community[src]
    same = members[start[g] + (rng.random(src.size) * size[g]).astype(np.int64)]
    dst = np.where(rng.random(src.size) < homophily, same, rng.integers(0, U, src.size))
    ok = src != dst
    key = np.unique(np.minimum(src, dst)[ok] * U + np.maximum(src, dst)[ok])
    return key // U, key % U


def _zipf_rank(rng: np.random.Generator, n: np.ndarray, exponent: float) -> np.ndarray:
    """Ranks in ``[0, n)`` (elementwise over ``n`` (M,)) with P(rank ~ r) proportional to (1 + r)^-exponent."""
    u = rng.random(n.shape)
    a = 1.0 - exponent
    if abs(a) < 1e-9:
        x = np.expm1(u * np.log1p(n))
    else:  # inverse CDF of the continuous law on [0, n)
        x = (1.0 + u * ((1.0 + n) ** a - 1.0)) ** (1.0 / a) - 1.0
    return np.minimum(x.astype(np.int64), n - 1)


def _sample_rows(rng: np.random.Generator, probs: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One column per entry of ``rows`` (M,), drawn from ``probs[row]`` ((R, C) rows summing to 1)."""
    R, C = probs.shape
    cum = np.cumsum(probs, axis=1)
    cum /= cum[:, -1:]
    # Offsetting row r by r turns R searches into one search over a sorted flat array.
    flat = (cum + np.arange(R)[:, None]).ravel()
    idx = np.searchsorted(flat, rows + rng.random(rows.size), side="right")
    return np.clip(idx - rows * C, 0, C - 1)


def _rowdot(a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """(M,) dot products ``<a[ia], b[ib]>`` computed in chunks to bound memory."""
    out = np.empty(ia.size, dtype=np.float64)
    for s in range(0, ia.size, _CHUNK):
        out[s:s + _CHUNK] = np.einsum("md,md->m", a[ia[s:s + _CHUNK]], b[ib[s:s + _CHUNK]])
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(x, dtype=np.int64))  # a copy: no two fields share memory

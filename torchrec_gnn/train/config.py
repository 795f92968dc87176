"""Configs of the training stages (sharding, two-stage pre-training), importable without TorchRec
(experiment configs are read before the stack loads)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

TABLE_OPTIMIZER_NAMES = ("rowwise_adagrad", "adagrad", "sgd")


@dataclass
class ShardingConfig:
    """How tables are sharded and optimised.

    Args:
        node_sharding_types (List[str], optional): sharding types the planner may pick for node
            tables (CPU: table_wise, column_wise, table_column_wise; CUDA also row_wise).
            Default: every type the device can do.
        table_optimizer (str): fused in-backward optimizer of all tables:
            ``"rowwise_adagrad"`` (default), ``"adagrad"`` or ``"sgd"``.
        table_lr (float): its learning rate. Default 0.05.
        dense_lr (float): Adam learning rate of the dense parameters outside the graph tower
            (all of them when ``tower_lr`` is None). Default 3e-3 (at 1e-3 the
            default E2E recipe was still learning when its one epoch ended and its seeds spread
            widely; docs/RESULTS.md "Seed spread").
        tower_lr (float, optional): Adam learning rate of the graph tower's dense parameters
            (GNN, GFAE and edge decoders; none in a two-stage ranker's frozen tower); None =
            ``dense_lr``. Default 1e-3: the ranker learns faster than the tower should (a
            tower at 5e-3 lost validation AUC, one at 1e-3 under a 3e-3 ranker narrowed the seed
            spread; docs/RESULTS.md "Seed spread").
    """

    node_sharding_types: Optional[List[str]] = None
    table_optimizer: str = "rowwise_adagrad"
    table_lr: float = 0.05
    dense_lr: float = 3e-3
    tower_lr: Optional[float] = 1e-3

    def __post_init__(self) -> None:
        if self.table_optimizer not in TABLE_OPTIMIZER_NAMES:
            raise ValueError(
                f"ShardingConfig.table_optimizer must be one of {sorted(TABLE_OPTIMIZER_NAMES)}, got {self.table_optimizer!r}"
            )
        rates = {"table_lr": self.table_lr, "dense_lr": self.dense_lr, "tower_lr": self.tower_lr}
        bad = {name: lr for name, lr in rates.items() if lr is not None and not lr > 0}
        if bad:
            raise ValueError(f"sharding learning rates must be > 0, got {bad}")


@dataclass
class PretrainConfig:
    """Stage 1 of the two-stage baseline (``model.two_stage: true``) and of warm start
    (``model.warm_start: true``).

    Args:
        epochs (int): at most this many epochs. Default 8.
        patience (int): stop after this many epochs without a better held-out link AUC and
            keep the best epoch's tower (0 = run every epoch, keep the last). Default 1: on the
            default synthetic data the link AUC rises for 5-7 epochs (0.931 after one, 0.940-0.941
            at its best), and both two-stage and warm start score 0.002-0.0045 higher validation
            AUC for it than after one epoch (docs/RESULTS.md "Pre-training until its link AUC stops");
            two-stage's ranker gains nothing after the second epoch, warm start does
            (docs/results/synthetic_frontier.md).
        max_steps (int, optional): stop after this many steps.
        batch_size (int): links per batch: half held-out edges, half negatives. Default 1024.
        lr (float): Adam learning rate of the whole tower. Default 0.005.
        link_relation (str, optional): the relation to predict, ``"src__rel__dst"`` from the user
            to the item type; default: the user -> item relation with the most edges.
        supervision_fraction (float): share of that relation's edges predicted per epoch (a fresh
            random share each epoch; each held out of its own batch's message passing).
            Default 0.3.
        validation_fraction (float): share of its edges held out of the graph for good to score
            the link AUC. Default 0.03.
        link_weight (float): weight of the link-prediction loss (0 = GFAE-only pre-training).
            Default 1.0.
        gfae_weight (float): weight of the GFAE loss next to the link loss (with
            ``model.use_gfae``). Default 1.0.
        chunk_size (int): destination nodes per step of the full-graph export. Default 8192.
        refresh_every (int): under the streaming protocol, the two-stage baseline pre-trains
            again (from the previous tower) and re-exports on the graph as it stands every this
            many periods (0 = never refresh). Default 0.
        from_dir (str, optional): a finished pre-training directory (another run's
            ``pretrain/``: ``tower.pt``, ``node_embeddings.pt``, ``pretrain.json``) to start from
            instead of pre-training: what torchtune's fine-tuning recipes do with a checkpoint
            directory. Its recorded setup (``pretrain.json``'s ``signature``: data, graph, seed,
            fanouts, the tower's and pre-training's settings) must equal this run's, else the
            run stops naming each setting that differs. Its seconds are not this run's
            (``cost.json`` has none for pre-training). Default None (pre-train).
    """

    epochs: int = 8
    patience: int = 1
    max_steps: Optional[int] = None
    batch_size: int = 1024
    lr: float = 0.005
    link_relation: Optional[str] = None
    supervision_fraction: float = 0.3
    validation_fraction: float = 0.03
    link_weight: float = 1.0
    gfae_weight: float = 1.0
    chunk_size: int = 8192
    refresh_every: int = 0
    from_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if self.refresh_every < 0:
            raise ValueError(f"pretrain.refresh_every must be >= 0 (0 = never), got {self.refresh_every}")
        if not 0.0 < self.supervision_fraction <= 1.0:
            raise ValueError(f"pretrain.supervision_fraction must be in (0, 1], got {self.supervision_fraction}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ValueError(f"pretrain.validation_fraction must be in (0, 1), got {self.validation_fraction}")
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"pretrain.batch_size must be an even number >= 2 (links + negatives), got {self.batch_size}")
        if self.epochs < 1 or self.patience < 0:
            raise ValueError(f"pretrain.epochs must be >= 1 and pretrain.patience >= 0, got {self.epochs}, {self.patience}")

"""Experiment configs: YAML files loaded into nested dataclasses, strictly.

Every default lives in the dataclasses (here and next to the modules they configure); a YAML
file only overrides. Loading reports every problem at once: unknown keys (with the valid ones),
wrong types, and the dataclasses' own checks::

    config = load_config("configs/default.yaml", overrides=["loader.batch_size=512"])
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import yaml

from torchrec_gnn.data.random_data import RandomDataConfig
from torchrec_gnn.data.synthetic import SyntheticConfig
from torchrec_gnn.dataclass_yaml import build_dataclass
from torchrec_gnn.models.config import ModelConfig
from torchrec_gnn.train.balancing import BalancerConfig
from torchrec_gnn.train.config import PretrainConfig, ShardingConfig
from torchrec_gnn.train.early_stopping import METRICS as EARLY_STOPPING_METRICS
from torchrec_gnn.typing import TEMPORAL_STRATEGIES, is_fanout

DATASETS = ("synthetic", "ml100k", "kuairand", "tabular", "random")
DEVICES = ("auto", "cpu", "cuda")
PROTOCOLS = ("static", "streaming")
GRAPHS = ("frozen", "fresh")


@dataclass
class DataConfig:
    """Which data set and how it is split by time.

    Args:
        dataset (str): ``"synthetic"`` (built-in default), ``"ml100k"``, ``"kuairand"``,
            ``"tabular"`` (bring your own directory) or ``"random"`` (TorchRec's random-data
            DLRM setting plus a random graph: throughput and plumbing, AUC ~0.5).
        path (str, optional): data location for the file-based data sets (default: the
            shared data directory, see ``torchrec_gnn.data.paths``).
        preset (str): synthetic size preset: ``"tiny"``, ``"default"`` or ``"large"``.
        synthetic (Dict[str, Any]): overrides of the preset's ``SyntheticConfig`` fields (e.g.
            ``new_video_fraction``); checked against that dataclass when the config loads
            (unknown fields with the valid ones, wrong types, its own checks). The typed result
            is :meth:`synthetic_config`; a run's saved config keeps only the overrides.
        random (Dict[str, Any]): overrides of ``RandomDataConfig`` fields (e.g. ``num_examples``),
            checked the same way; typed: :meth:`random_config`.
        negatives_per_positive (int): MovieLens sampled negatives per rating (adds a task).
        seed (int): seed of the data generators and of negative sampling. Separate from
            ``train.seed`` so that runs with different training seeds see the same data.
        history_fraction (float): earliest share of examples kept only as graph history.
        val_fraction (float): share of examples for validation (after training ones).
        test_fraction (float): share of the latest examples for testing.
    """

    dataset: str = "synthetic"
    path: Optional[str] = None
    preset: str = "default"
    synthetic: Dict[str, Any] = field(default_factory=dict)
    random: Dict[str, Any] = field(default_factory=dict)
    negatives_per_positive: int = 0
    seed: int = 0
    history_fraction: float = 0.0
    val_fraction: float = 0.1
    test_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"data.dataset must be one of {DATASETS}, got {self.dataset!r}")
        self.synthetic_config()
        self.random_config()

    def synthetic_config(self) -> SyntheticConfig:
        """The synthetic generator's config: the preset, ``seed``, then the ``synthetic`` overrides."""
        preset = dataclasses.asdict(SyntheticConfig.preset(self.preset, seed=self.seed))
        return _typed(SyntheticConfig, {**preset, **self.synthetic}, "data.synthetic.")

    def random_config(self) -> RandomDataConfig:
        """The random data set's config: the defaults, ``seed``, then the ``random`` overrides."""
        return _typed(RandomDataConfig, {"seed": self.seed, **self.random}, "data.random.")


def _typed(cls: type, raw: Dict[str, Any], prefix: str) -> Any:
    """``cls`` built from ``raw`` by :func:`build_dataclass`, raising one error that lists every problem."""
    problems: List[str] = []
    built = build_dataclass(cls, raw, prefix, problems)
    if problems:
        raise ValueError("; ".join(problems))
    return built


@dataclass
class LoaderConfig:
    """Batching and subgraph sampling.

    Args:
        batch_size (int): training examples per batch and rank.
        eval_batch_size (int): examples per evaluation batch and rank.
        fanouts (List[int]): neighbours per hop (``-1`` = all); match ``model.gnn.num_layers``.
        relation_fanouts (Dict[str, List[int]]): per-relation fanouts that replace ``fanouts``
            for the relations named ``"src__rel__dst"`` (e.g. ``{"user__friend__user": [5, 0]}``;
            0 skips a hop). The sampled subgraph, and so the GNN's cost, shrinks with them.
        eval_fanouts (List[int], optional): neighbours per hop of the batches that score a
            model (validation, test, ``eval``, ``predict``, the streaming protocol's periods);
            ``[-1, -1]`` reads every neighbour, the neighbourhood ``export``'s full-graph
            inference gives a served model. A hop a relation skips in training (fanout 0) stays
            skipped. Default (None): the training fanouts, which a model sampled with the
            ``"last"`` temporal strategy should keep (it serves its nodes' most recent edges).
        replace (bool): sample with replacement.
        temporal (bool): only sample edges older than each example (on top of the time split).
        temporal_strategy (str): which older edges a node draws in temporal mode: ``"uniform"``
            or ``"last"`` (its ``fanout`` most recent ones: a node's current neighbourhood).
            ``"last"`` needs ``temporal`` (the streaming protocol turns it on) and no ``replace``.
        labor (bool): LABOR-0 neighbour sampling (``NeighborSampler(labor=True)``): the same
            fanout in expectation, fewer distinct nodes per batch where neighbourhoods overlap.
            Needs no ``replace`` and the uniform temporal strategy.
        num_workers (int): DataLoader worker processes building batches.
        num_threads (int, optional): intra-op threads of each training process; default: the
            host's cores minus ``num_workers`` (at least 1). Oversubscribing the cores makes
            OpenMP threads spin against the workers, which slows CPU steps down many times.
        prebuild_csr (bool, optional): the workers build each training batch's CSR arrays and
            their transposes (``GraphBatchBuilder(csr=True)``) for a GNN that aggregates by
            sparse products, so its step neither counts nor sorts edges; default (None): on when
            the job trains on a GPU, off on CPU, where the workers share the trainer's cores
            and the job measured no faster (docs/RESULTS.md, "Step cost").
    """

    batch_size: int = 1024
    eval_batch_size: int = 4096
    fanouts: List[int] = field(default_factory=lambda: [10, 5])
    relation_fanouts: Dict[str, List[int]] = field(default_factory=dict)
    eval_fanouts: Optional[List[int]] = None
    replace: bool = False
    temporal: bool = False
    temporal_strategy: str = "uniform"
    labor: bool = False
    num_workers: int = 2
    num_threads: Optional[int] = None
    prebuild_csr: Optional[bool] = None

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError(f"loader.batch_size and eval_batch_size must be >= 1, got {self.batch_size}, {self.eval_batch_size}")
        if self.eval_fanouts is not None and not all(map(is_fanout, self.eval_fanouts)):
            raise ValueError(f"loader.eval_fanouts: each fanout must be >= -1 (-1 = every neighbour), got {self.eval_fanouts}")
        if self.temporal_strategy not in TEMPORAL_STRATEGIES:
            raise ValueError(f"loader.temporal_strategy must be one of {list(TEMPORAL_STRATEGIES)}, got {self.temporal_strategy!r}")
        if self.temporal_strategy == "last" and self.replace:
            raise ValueError("loader.temporal_strategy 'last' takes each node's most recent edges; it needs loader.replace false")
        if self.labor and (self.replace or self.temporal_strategy == "last"):
            raise ValueError("loader.labor draws by shared random numbers per node; it needs loader.replace false and "
                             f"loader.temporal_strategy 'uniform', got {self.replace}, {self.temporal_strategy!r}")


@dataclass
class TrainConfig:
    """The training loop.

    Args:
        epochs (int): passes over the training split.
        max_steps (int, optional): stop after this many steps (all epochs counted); 0 trains
            nothing and scores the initial model (said in the log).
        log_every (int): steps between ``metrics.jsonl`` records.
        metrics_window (int): examples (all ranks together, at least one batch per rank) of the
            windowed training NE and AUC in each record (``torchrec.metrics`` window semantics).
        eval_every (int): steps between validation passes during training (0 = none; the
            final evaluation on validation and test always runs).
        early_stopping_patience (int): stop after this many validation passes without a better
            ``early_stopping_metric``, then restore the best step's weights before the final
            evaluation (0 = off; needs ``eval_every``). Only the validation split is used.
        early_stopping_metric (str): ``"auc"`` or ``"gauc"`` (mean over binary tasks, higher is
            better), ``"ne"``, ``"logloss"`` or ``"rmse"`` (lower is better).
        seed (int): seed of model init, shuffling, sampling and masking.
        device (str): ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        output_dir (str): where metrics, plots, eval results and the resolved config go.
        checkpoint_dir (str, optional): where checkpoints go (default ``output_dir/checkpoints``).
        checkpoint_every (int): steps between checkpoints (0 = only at the end).
        keep_checkpoints (int): how many recent checkpoints to keep.
        plots (bool): write PNG plots at the end.
        tensorboard (bool): also log every ``metrics.jsonl`` number to TensorBoard event files
            in ``output_dir/tensorboard`` (``tensorboard --logdir runs``). Default False.
        protocol (str): ``"static"`` (train on the training split over a graph frozen before
            it, score validation and test; default) or ``"streaming"`` (the labelled window in
            ``periods`` time-ordered parts, each scored before the model trains on it, over a
            graph that grows with time; see ``torchrec_gnn.recipes.stream``).
        periods (int): parts of the labelled window under the streaming protocol. Default 5.
        graph (str): under the static protocol, ``"frozen"`` (the graph holds only edges older
            than every example; default) or ``"fresh"`` (every edge with its time, and temporal
            sampling shows each batch only the edges older than its earliest example, as a model
            served on the live graph would see them; training batches keep consecutive
            examples so each spans a short time). The streaming protocol always reads it fresh.
    """

    epochs: int = 1
    max_steps: Optional[int] = None
    log_every: int = 20
    metrics_window: int = 102_400
    eval_every: int = 0
    early_stopping_patience: int = 0
    early_stopping_metric: str = "auc"
    seed: int = 0
    device: str = "auto"
    output_dir: str = "runs/default"
    checkpoint_dir: Optional[str] = None
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    plots: bool = True
    tensorboard: bool = False
    protocol: str = "static"
    periods: int = 5
    graph: str = "frozen"

    def __post_init__(self) -> None:
        if self.graph not in GRAPHS:
            raise ValueError(f"train.graph must be one of {GRAPHS}, got {self.graph!r}")
        if self.device not in DEVICES:
            raise ValueError(f"train.device must be one of {DEVICES}, got {self.device!r}")
        if self.early_stopping_patience and not self.eval_every:
            raise ValueError("train.early_stopping_patience needs train.eval_every > 0 (validation passes to watch)")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"train.protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.protocol == "streaming" and (self.max_steps is not None or self.epochs != 1):
            raise ValueError("train.max_steps and train.epochs do not apply to the streaming protocol "
                             "(one chronological pass over every period)")
        if self.epochs < 1 or (self.max_steps is not None and self.max_steps < 0):
            raise ValueError(f"train.epochs must be >= 1 and train.max_steps >= 0 (0: score the initial model only), "
                             f"got {self.epochs}, {self.max_steps}")
        if self.log_every < 1 or self.metrics_window < 1:
            raise ValueError(f"train.log_every and train.metrics_window must be >= 1, got {self.log_every}, {self.metrics_window}")
        if self.periods < 2:
            raise ValueError(f"train.periods must be >= 2 (the first period is only trained on), got {self.periods}")
        if self.early_stopping_metric not in EARLY_STOPPING_METRICS:
            raise ValueError(f"train.early_stopping_metric must be one of {sorted(EARLY_STOPPING_METRICS)}, "
                             f"got {self.early_stopping_metric!r}")


@dataclass
class ExperimentConfig:
    """One job: data, loader, model, loss balancing, sharding, the training loop, and the
    two-stage baseline's pre-training (used only with ``model.two_stage``)."""

    name: str = "default"
    data: DataConfig = field(default_factory=DataConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    balancer: BalancerConfig = field(default_factory=BalancerConfig)
    sharding: ShardingConfig = field(default_factory=ShardingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    def __post_init__(self) -> None:
        samples = self.model.use_graph and not self.model.two_stage
        hops = {len(self.loader.fanouts)} | {len(f) for f in self.loader.relation_fanouts.values()}
        if samples and hops != {self.model.gnn.num_layers}:
            raise ValueError(
                f"loader.fanouts (and loader.relation_fanouts) give {sorted(hops)} hop(s) but model.gnn.num_layers is "
                f"{self.model.gnn.num_layers}: each GNN layer needs one hop of neighbours; set one fanout per layer"
            )
        eval_fanouts = self.loader.eval_fanouts
        if samples and eval_fanouts is not None and len(eval_fanouts) != self.model.gnn.num_layers:
            raise ValueError(
                f"loader.eval_fanouts gives {len(eval_fanouts)} hop(s) but model.gnn.num_layers is "
                f"{self.model.gnn.num_layers}: set one fanout per layer ([-1, -1] reads every neighbour), or null"
            )
        if samples and self.model.gnn.outer_hop == "history" and (self.loader.temporal or self.fresh_graph):
            raise ValueError(
                "model.gnn.outer_hop 'history' is not supported with temporal sampling (loader.temporal, "
                "train.graph fresh or train.protocol streaming) yet: its full-graph refresh would read edges "
                "newer than an example"
            )
        if self.pretrain.from_dir is not None and not (self.model.two_stage or self.model.warm_start):
            raise ValueError(
                f"pretrain.from_dir ({self.pretrain.from_dir}) is read by a run that pre-trains: it needs "
                "model.two_stage or model.warm_start true"
            )
        if self.loader.temporal_strategy == "last" and not (self.loader.temporal or self.fresh_graph):
            raise ValueError(
                "loader.temporal_strategy 'last' picks each node's most recent edges before the example; "
                "it needs loader.temporal true, train.graph fresh or train.protocol streaming"
            )

    @property
    def fresh_graph(self) -> bool:
        """The graph holds every edge with its time and batches sample it temporally (the
        streaming protocol, or ``train.graph: fresh``)."""
        return self.train.protocol == "streaming" or self.train.graph == "fresh"


class ConfigError(ValueError):
    """A config with problems; the message lists all of them."""


def override_key(item: str) -> str:
    """The dotted key of a ``--set`` override ``"a.b=value"``; empty when it is not KEY=VALUE."""
    key, sep, _ = item.partition("=")
    return key.strip() if sep else ""


def load_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Load ``path`` (YAML) over the defaults, then apply ``overrides`` (``"a.b=value"``).

    Raises:
        ConfigError: listing every unknown key (with the valid keys), wrong type and failed check.
    """
    raw: Dict[str, Any] = {}
    where = str(path) if path is not None else "<defaults>"
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"{where}: cannot read config ({err})") from err
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: top level must be a mapping, got {type(raw).__name__}")
    problems: List[str] = []
    for item in overrides:
        key = override_key(item)
        if not key:
            problems.append(f"--set {item!r}: expected KEY=VALUE, e.g. loader.batch_size=512")
            continue
        _set_path(raw, key.split("."), yaml.safe_load(item.partition("=")[2]))
    config = build_dataclass(ExperimentConfig, raw, "", problems)
    if problems:
        raise ConfigError(f"{where}: {len(problems)} problem(s):\n  - " + "\n  - ".join(problems))
    return config


def config_to_dict(config: Any) -> Dict[str, Any]:
    """A plain dict of a config dataclass (for YAML/JSON)."""
    return dataclasses.asdict(config)


# Fields a resumed run may change: how long it trains and how it runs, not what it trains.
RESUMABLE_FIELDS = frozenset({
    "train.max_steps", "train.epochs", "train.output_dir", "train.checkpoint_dir", "train.device",
    "train.log_every", "train.metrics_window", "train.eval_every", "train.checkpoint_every",
    "train.keep_checkpoints", "train.plots", "train.tensorboard", "loader.num_workers", "loader.num_threads",
})


def flat_fields(config: Any, prefix: str = "") -> Dict[str, Any]:
    """``{"section.field": value}`` of every config field; nested config dataclasses are
    walked, free-form fields (dicts, lists) are values."""
    flat: Dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value, key = getattr(config, f.name), f"{prefix}{f.name}"
        flat.update(flat_fields(value, f"{key}.") if dataclasses.is_dataclass(value) else {key: value})
    return flat


def _identity(config: ExperimentConfig) -> Dict[str, Any]:
    """:func:`flat_fields` but :data:`RESUMABLE_FIELDS`."""
    return {key: value for key, value in flat_fields(config).items() if key not in RESUMABLE_FIELDS}


def differences(before: Dict[str, Any], after: Dict[str, Any]) -> List[str]:
    """``"key: before -> after"`` for every key whose value differs (``<missing>`` on the side
    that lacks it), in key order."""
    def shown(side: Dict[str, Any], key: str) -> str:
        return repr(side[key]) if key in side else "<missing>"

    return [f"{key}: {shown(before, key)} -> {shown(after, key)}" for key in sorted(set(before) | set(after))
            if key not in before or key not in after or before[key] != after[key]]


def config_differences(saved: ExperimentConfig, new: ExperimentConfig) -> List[str]:
    """``"key: saved -> new"`` for every field that differs and that a resume may not change
    (everything but :data:`RESUMABLE_FIELDS`), in key order."""
    return differences(_identity(saved), _identity(new))


def config_fingerprint(config: ExperimentConfig) -> str:
    """A short hash of what a run trains (every field but :data:`RESUMABLE_FIELDS`)."""
    return hashlib.sha1(json.dumps(_identity(config), sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_config(config: ExperimentConfig, path: Union[str, Path]) -> None:
    """Write the resolved config as YAML (it loads back to an equal config)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))


def _set_path(raw: Dict[str, Any], keys: List[str], value: Any) -> None:
    node = raw
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value

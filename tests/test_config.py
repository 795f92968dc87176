from pathlib import Path

import pytest

from torchrec_gnn.config import (
    ConfigError,
    ExperimentConfig,
    config_differences,
    config_fingerprint,
    differences,
    load_config,
    save_config,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
ALL_CONFIGS = sorted(CONFIG_DIR.rglob("*.yaml"))


def test_there_are_configs() -> None:
    assert CONFIG_DIR.is_dir() and len(ALL_CONFIGS) >= 1


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=[str(p.relative_to(CONFIG_DIR)) for p in ALL_CONFIGS])
def test_every_config_loads_and_round_trips(path: Path, tmp_path: Path) -> None:
    text = path.read_text()
    assert text.startswith("#"), f"{path}: start with a comment saying what it runs and how"
    assert "python -m torchrec_gnn" in text or "torchrun" in text, f"{path}: give the exact command"
    config = load_config(path)
    save_config(config, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == config


def test_defaults_and_overrides() -> None:
    config = load_config(None, ["loader.batch_size=512", "model.gnn.conv=gat", "loader.fanouts=[4, 2]",
                                "train.max_steps=7", "data.synthetic.seed=3"])
    assert isinstance(config, ExperimentConfig)
    assert config.loader.batch_size == 512 and config.model.gnn.conv == "gat"
    assert config.loader.fanouts == [4, 2] and config.train.max_steps == 7
    assert config.data.synthetic == {"seed": 3}
    assert load_config(None, ["sharding.dense_lr=1"]).sharding.dense_lr == 1.0  # int accepted for float
    assert load_config(None, ["sharding.tower_lr=null"]).sharding.tower_lr is None  # the tower at dense_lr
    with pytest.raises(ValueError, match=r"learning rates must be > 0, got \{'tower_lr': 0.0\}"):
        load_config(None, ["sharding.tower_lr=0.0"])


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("loader:\n  batch_sise: 3\n  fanouts: 5\nmodel:\n  gnn:\n    conv: gin\ntrainer: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ["train.epochs=two", "nonsense"])
    message = str(info.value)
    assert "6 problem(s)" in message
    assert "loader.batch_sise: unknown key; valid keys of loader: ['batch_size', 'eval_batch_size'," in message
    assert "trainer: unknown key; valid keys of the config: ['balancer', 'data', 'loader', 'model', 'name'," in message
    assert "loader.fanouts: expected a list, got 5" in message
    assert "model.gnn: GNNConfig.conv must be one of ('sage', 'gat', 'lightgcn'), got 'gin'" in message
    assert "train.epochs: expected int, got 'two'" in message and "--set 'nonsense': expected KEY=VALUE" in message


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")


def test_config_differences_and_fingerprint_ignore_resumable_fields() -> None:
    base = load_config(None)
    longer = load_config(None, ["train.max_steps=50", "loader.num_workers=0", "train.output_dir=elsewhere"])
    other = load_config(None, ["model.embedding_dim=8", "data.synthetic.seed=3"])
    assert config_differences(base, longer) == [] and config_fingerprint(base) == config_fingerprint(longer)
    assert config_differences(base, other) == ["data.synthetic: {} -> {'seed': 3}", "model.embedding_dim: 16 -> 8"]
    assert config_fingerprint(base) != config_fingerprint(other)


def test_data_set_overrides_are_typed_at_load() -> None:
    """``data.synthetic`` / ``data.random`` override typed dataclasses: bad keys, types and values
    fail when the config loads (not when the data set is built), and the typed configs apply
    preset, seed and overrides in that order."""
    config = load_config(None, ["data.preset=tiny", "data.seed=5", "data.synthetic.num_users=123"])
    synthetic = config.data.synthetic_config()
    assert (synthetic.num_users, synthetic.num_videos, synthetic.seed) == (123, 500, 5)  # override, tiny preset, seed
    assert load_config(None, ["data.synthetic.seed=9"]).data.synthetic_config().seed == 9
    assert load_config(None, ["data.seed=2"]).data.random_config().seed == 2
    with pytest.raises(ConfigError) as info:
        load_config(None, ["data.synthetic.num_user=5", "data.synthetic.num_videos=abc", "data.random.click_rate=1.5"])
    message = str(info.value)
    assert "data.synthetic.num_user: unknown key; valid keys of data.synthetic: [" in message
    assert "data.synthetic.num_videos: expected int, got 'abc'" in message
    with pytest.raises(ConfigError, match=r"data.random: RandomDataConfig: .*click_rate must be in \(0, 1\), got 1.5"):
        load_config(None, ["data.random.click_rate=1.5"])
    with pytest.raises(ConfigError, match=r"unknown preset 'huge'; valid presets: \['default', 'large', 'tiny'\]"):
        load_config(None, ["data.preset=huge"])


def test_runs_that_cannot_train_as_asked_fail_at_load() -> None:
    with pytest.raises(ConfigError, match=r"loader.fanouts \(and loader.relation_fanouts\) give \[1\] hop\(s\) but model.gnn.num_layers is 2"):
        load_config(None, ["loader.fanouts=[5]"])
    with pytest.raises(ConfigError, match=r"give \[2, 3\] hop\(s\)"):
        load_config(None, ["loader.relation_fanouts={user__friend__user: [1, 1, 1]}"])
    assert load_config(None, ["loader.fanouts=[5]", "model.two_stage=true"]).loader.fanouts == [5]  # samples no hop
    with pytest.raises(ConfigError, match=r"train.epochs must be >= 1 and train.max_steps >= 0 .* got 0, None"):
        load_config(None, ["train.epochs=0"])
    with pytest.raises(ConfigError, match=r"got 1, -1"):
        load_config(None, ["train.max_steps=-1"])
    # A value of the wrong type is one problem, not also a failed check downstream of it.
    with pytest.raises(ConfigError) as info:
        load_config(None, ["loader.batch_size=abc"])
    assert str(info.value).endswith("1 problem(s):\n  - loader.batch_size: expected int, got 'abc'")


def test_config_differences_name_the_missing_side() -> None:
    assert differences({"a": 1, "b": [2]}, {"b": [3], "c": None}) == [
        "a: 1 -> <missing>", "b: [2] -> [3]", "c: <missing> -> None"]


def test_reading_a_pretraining_needs_a_run_that_pretrains() -> None:
    assert load_config(None, ["model.warm_start=true", "pretrain.from_dir=runs/a/pretrain"]).pretrain.from_dir
    with pytest.raises(ConfigError, match=r"pretrain.from_dir \(runs/a/pretrain\) is read by a run that pre-trains"):
        load_config(None, ["pretrain.from_dir=runs/a/pretrain"])


def test_temporal_strategy_needs_temporal_sampling() -> None:
    assert load_config(None, ["loader.temporal_strategy=last", "loader.temporal=true"]).loader.temporal_strategy == "last"
    assert load_config(None, ["loader.temporal_strategy=last", "train.protocol=streaming"]).loader.temporal_strategy == "last"
    assert load_config(None, ["loader.temporal_strategy=last", "train.graph=fresh"]).fresh_graph
    with pytest.raises(ConfigError, match=r"temporal_strategy 'last' .* needs loader.temporal true, train.graph fresh "
                                          r"or train.protocol streaming"):
        load_config(None, ["loader.temporal_strategy=last"])
    with pytest.raises(ConfigError, match=r"loader.temporal_strategy must be one of \['uniform', 'last'\], got 'newest'"):
        load_config(None, ["loader.temporal_strategy=newest"])


def test_labor_sampling_needs_draws_without_replacement() -> None:
    assert load_config(None, ["loader.labor=true"]).loader.labor
    with pytest.raises(ConfigError, match=r"loader.labor .* needs loader.replace false and loader.temporal_strategy "
                                          r"'uniform', got True, 'uniform'"):
        load_config(None, ["loader.labor=true", "loader.replace=true"])


def test_fresh_graph_reads_the_graph_temporally() -> None:
    assert not load_config(None, []).fresh_graph
    assert load_config(None, ["train.protocol=streaming"]).fresh_graph
    with pytest.raises(ConfigError, match=r"train.graph must be one of \('frozen', 'fresh'\), got 'live'"):
        load_config(None, ["train.graph=live"])
    with pytest.raises(ConfigError, match=r"outer_hop 'history' is not supported with temporal sampling"):
        load_config(None, ["train.graph=fresh", "model.gnn.outer_hop=history"])

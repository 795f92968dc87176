"""examples/dlrm/dlrm_main.py: its flags map onto config overrides, and it runs end to end."""

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import pytest

from torchrec_gnn.recipes.train import build_parser, resolve_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "dlrm" / "dlrm_main.py"
TINY = [
    "--num-examples", "3000", "--batch-size", "256", "--num-embeddings-per-feature", "100",
    "--set", "data.random.num_users=300", "--set", "data.random.num_items=500",
    "--set", "data.random.num_clicks=5000", "--set", "loader.num_workers=0", "--set", "train.plots=false",
]


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dlrm_main", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flags_become_config_overrides() -> None:
    example = load_example()
    sizes = ",".join(str(n) for n in range(1, 27))
    argv = example.train_argv(example.parse_args([
        "--batch-size", "64", "--epochs", "2", "--max-steps", "5", "--num-embeddings-per-feature", sizes,
        "--num-examples", "900", "--no-graph", "--seed", "7", "--output-dir", "out", "--set", "loader.fanouts=[4, 2]",
        "--resume",
    ]))
    assert build_parser().parse_args(argv).resume
    config = resolve_config(build_parser().parse_args(argv))
    assert config.name == "dlrm_random" and config.data.dataset == "random"
    assert config.loader.batch_size == 64 and config.train.epochs == 2 and config.train.max_steps == 5
    assert config.data.random["num_embeddings_per_feature"] == list(range(1, 27))
    assert config.data.random["num_examples"] == 900 and config.loader.fanouts == [4, 2]
    assert not config.model.use_graph and config.train.seed == 7 and config.train.output_dir == "out"

    synthetic = resolve_config(build_parser().parse_args(example.train_argv(example.parse_args(["--dataset", "synthetic"]))))
    assert synthetic.data.dataset == "synthetic" and synthetic.train.output_dir == "runs/dlrm_synthetic"
    assert "data.random.num_embeddings_per_feature=1000" in example.train_argv(
        example.parse_args(["--num-embeddings-per-feature", "1000"]))


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "synthetic", "--num-examples", "10"], "--num-examples only apply to --dataset random"),
    (["--num-embeddings-per-feature", "10,x"], "expected ints separated by commas, got '10,x'"),
])
def test_bad_flags_fail_with_a_reason(argv, message, capsys) -> None:
    with pytest.raises(SystemExit):
        load_example().parse_args(argv)
    assert message in capsys.readouterr().err


@pytest.mark.timeout(300)
def test_single_process_run_writes_eval_and_metrics(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    returned = load_example().main(["--dataset", "random", "--max-steps", "3", *TINY, "--output-dir", str(out)])
    printed = capsys.readouterr()
    assert "equivalent to: python -m torchrec_gnn train --config configs/dlrm_random.yaml" in printed.out
    assert "dlrm_random: evaluation" in printed.out + printed.err
    results = json.loads((out / "eval.json").read_text())
    assert results == json.loads(json.dumps(returned))
    for split in ("val", "test"):
        auc = results[split]["click"]["auc"]
        assert isinstance(auc, float) and math.isfinite(auc) and 0.0 <= auc <= 1.0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "losses" in r]
    assert steps and steps[-1]["step"] == 3 and list(steps[-1]["losses"]) == ["click", "gfae"]
    assert all(math.isfinite(r["loss"]) for r in steps)

"""The compare job through its real entry point: runs, aggregation, report, resume, errors."""

import hashlib
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from torchrec_gnn.cli import main as cli_main
from torchrec_gnn.config import ConfigError, config_to_dict, load_config
from torchrec_gnn.recipes.compare import VARIANTS, CompareError, build_parser, main, plan_runs
from torchrec_gnn.recipes.report import markdown, mean_std, run_cost

TINY = [
    "--set", "data.preset=tiny", "--set", "loader.batch_size=256", "--set", "loader.eval_batch_size=512",
    "--set", "loader.num_workers=0", "--set", "train.log_every=1", "--set", "train.plots=false",
    "--set", "model.node_embedding_dim=16", "--set", "model.gnn.hidden_channels=16", "--set", "loader.num_threads=1",
]
# Variant -> the ablation config that must carry the same overrides.
ABLATION_CONFIGS = {
    "no_graph": "no_graph", "two_stage": "two_stage", "e2e_no_gfae": "no_gfae", "e2e_fixed_weights": "fixed_weights",
    "e2e_uncertainty": "uncertainty", "e2e_input_fusion_only": "input_fusion_only",
    "e2e_prehead_fusion_only": "prehead_fusion_only", "e2e_edge": "edge_objective", "e2e_warm": "warm_start",
    "e2e_warm_edge": "warm_start_edge", "two_stage_refresh": "two_stage_refresh", "e2e_history": "history",
    "e2e_fresh": "fresh_graph",
}


@pytest.mark.timeout(600)
def test_compare_two_variants_two_seeds(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "compare"
    base = ["--config", "configs/default.yaml", *TINY, "--output-dir", str(out)]
    # In this process (the child-process mode is the killed-compare test's).
    argv = [*base, "--variants", "no_graph,e2e", "--seeds", "2", "--max-steps", "3", "--in-process"]
    results = main(argv)
    printed = capsys.readouterr().out
    assert "[1/4] no_graph seed 0 ..." in printed and "[4/4] e2e seed 1 ..." in printed

    saved = json.loads((out / "results.json").read_text())
    assert saved["split"] == "test" and saved["seeds"] == [0, 1] and saved["config"] == "configs/default.yaml"
    assert list(saved["variants"]) == list(saved["cost"]) == ["no_graph", "e2e"]
    assert set(results) == set(saved)
    for variant in ("no_graph", "e2e"):
        evals = [json.loads((out / variant / f"seed_{s}" / "eval.json").read_text())["test"] for s in (0, 1)]
        assert list(saved["variants"][variant]) == list(evals[0])  # every task
        for task, metrics in evals[0].items():
            for metric in ("auc", "gauc", "logloss") if "auc" in metrics else ("rmse", "mae"):
                values = [e[task][metric] for e in evals]
                stats = saved["variants"][variant][task][metric]
                assert stats["n"] == 2
                assert stats["mean"] == pytest.approx(statistics.mean(values), rel=1e-12)
                assert stats["std"] == pytest.approx(statistics.stdev(values), rel=1e-9, abs=1e-15)
        for key in ("train_seconds", "peak_rss_mb"):
            stats = saved["cost"][variant][key]
            assert stats["n"] == 2 and stats["mean"] > 0 and stats["std"] >= 0
        for seed in (0, 1):
            config = load_config(out / variant / f"seed_{seed}" / "config.yaml")
            assert (config.train.seed, config.data.seed) == (seed, 0)
            assert config.model.use_graph == (variant == "e2e")
    # Only the training seed varies: every run trained on the same graph (and data set).
    graphs = {tuple((f.name, hashlib.sha1(f.read_bytes()).hexdigest()) for f in sorted((d / "graph").rglob("*"))
                    if f.is_file()) for d in out.glob("*/seed_*")}
    assert len(graphs) == 1 and len(next(iter(graphs))) > 1
    first_losses = [json.loads((out / "e2e" / f"seed_{s}" / "metrics.jsonl").read_text().splitlines()[0])["losses"]
                    for s in (0, 1)]
    assert first_losses[0] != first_losses[1]

    report = (out / "results.md").read_text()
    assert "| no_graph |" in report and "| e2e |" in report and "±" in report
    assert all(f"## {title}" in report for title in ("AUC", "GAUC", "LogLoss", "RMSE", "Cost"))
    assert report.strip() in printed
    for png in ("auc_by_variant.png", "learning_curves.png"):
        assert (out / png).stat().st_size > 1000

    # Rerunning resumes: every run is skipped, eval.json files untouched, same results.
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("*/seed_*/eval.json")}
    assert len(mtimes) == 4
    main(argv)
    printed = capsys.readouterr().out
    assert printed.count("skipped") == 4 and " ..." not in printed
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed_*/eval.json")} == mtimes
    assert json.loads((out / "results.json").read_text())["variants"] == saved["variants"]

    # Finished runs made with other settings are not silently reused.
    with pytest.raises(CompareError, match=r"no_graph/seed_0 holds a finished run with other arguments; rerun it with --force"):
        main([*base, "--variants", "no_graph", "--seeds", "1", "--max-steps", "4"])

    # --force reruns (here in this process); other runs' directories are left alone.
    forced = main([*base, "--variants", "e2e", "--seeds", "1", "--max-steps", "2", "--force", "--in-process"])
    assert "[1/1] e2e seed 0 ..." in capsys.readouterr().out
    assert (out / "e2e" / "seed_0" / "eval.json").stat().st_mtime_ns != mtimes[out / "e2e" / "seed_0" / "eval.json"]
    assert (out / "no_graph" / "seed_0" / "eval.json").stat().st_mtime_ns == mtimes[out / "no_graph" / "seed_0" / "eval.json"]
    assert list(forced["variants"]) == ["e2e"] and forced["seeds"] == [0]
    assert forced["variants"]["e2e"]["click"]["auc"]["std"] == 0.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child's death signal is Linux's prctl")
@pytest.mark.timeout(300)
def test_a_killed_compare_takes_its_child_along_and_a_rerun_redoes_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """SIGKILL to ``compare`` (which no handler sees) ends its training child too, and the rerun
    neither skips the half-written run nor finds it still being written."""
    import signal
    import subprocess
    import time

    import psutil

    out = tmp_path / "compare"
    argv = ["--config", "configs/default.yaml", *TINY, "--variants", "no_graph", "--seeds", "1", "--output-dir", str(out)]
    run_dir = out / "no_graph" / "seed_0"
    parent = subprocess.Popen([sys.executable, "-m", "torchrec_gnn", "compare", *argv, "--set", "train.epochs=100000"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "metrics.jsonl").is_file():  # the child is training
            assert parent.poll() is None and time.monotonic() < deadline, "the child never started training"
            time.sleep(0.2)
        children = psutil.Process(parent.pid).children(recursive=True)
        assert children
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, f"children outlived compare: {alive}"
    finally:
        parent.kill()
    assert not (run_dir / "cost.json").exists()
    steps = (run_dir / "metrics.jsonl").read_text().count("\n")
    time.sleep(1.0)
    assert (run_dir / "metrics.jsonl").read_text().count("\n") == steps  # nobody writes there any more

    main([*argv, "--max-steps", "2"])  # the rerun, in this process (its training child is a process again)
    printed = capsys.readouterr().out
    assert "[1/1] no_graph seed 0 ..." in printed and "skipped" not in printed
    assert len([line for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"losses"' in line]) == 2
    cost = json.loads((run_dir / "cost.json").read_text())
    assert cost["peak_rss_mb"] > 0 and 0 < cost["train_seconds"] < cost["process_seconds"]  # timed inside the child
    assert (run_dir / "train.log").read_text().startswith(f"{sys.executable} -m torchrec_gnn train")


def test_unknown_variants_fail_clearly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["--config", "configs/default.yaml", "--output-dir", str(tmp_path / "x")]
    with pytest.raises(CompareError, match=r"unknown variant 'e3e'; available variants: no_graph, two_stage, two_stage_refresh, e2e, "):
        main([*base, "--variants", "e3e"])
    with pytest.raises(SystemExit) as exit_info:  # the command line prints the message alone
        cli_main(["compare", *base, "--variants", ","])
    assert exit_info.value.code == 2
    assert "torchrec-gnn compare: error: --variants: no variant given" in capsys.readouterr().err
    with pytest.raises(CompareError, match=r"no variant given"):  # --debug: the exception itself
        cli_main(["compare", *base, "--variants", ",", "--debug"])
    with pytest.raises(CompareError, match=r"--seeds must be >= 1, got 0"):
        main([*base, "--seeds", "0"])
    # A config problem fails before any run starts.
    with pytest.raises(ConfigError, match=r"model.nope: unknown key"):
        main([*base, "--set", "model.nope=1"])
    assert not (tmp_path / "x").exists()


def test_variants_match_the_ablation_configs() -> None:
    assert set(ABLATION_CONFIGS.values()) == {p.stem for p in Path("configs/ablations").glob("*.yaml")}
    assert set(ABLATION_CONFIGS) | {"e2e"} == set(VARIANTS) and VARIANTS["e2e"] == []
    for variant, name in ABLATION_CONFIGS.items():
        ablation = config_to_dict(load_config(f"configs/ablations/{name}.yaml"))
        from_variant = config_to_dict(load_config(None, VARIANTS[variant]))
        for section in ("model", "balancer", "pretrain"):
            assert ablation[section] == from_variant[section], (variant, section)
        assert ablation["train"]["graph"] == from_variant["train"]["graph"], variant


def test_variants_may_not_change_the_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(VARIANTS, "e2e_other_data", ["data.seed=1"])
    with pytest.raises(CompareError, match=r"variant 'e2e_other_data' changes the data config \(\['data.seed=1'\]\)"):
        main(["--variants", "e2e,e2e_other_data", "--output-dir", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


def test_overrides_are_checked_with_each_variants_own(tmp_path: Path) -> None:
    """A ``--set`` that holds only with a variant's overrides is checked with them, per variant."""
    args = build_parser().parse_args(["--variants", "e2e_warm_edge", "--seeds", "1", "--output-dir", str(tmp_path / "x"),
                                      "--set", "model.freeze_node_tables=true"])
    (run,) = plan_runs(args)
    assert run.variant == "e2e_warm_edge"
    args.variants = "e2e,e2e_warm_edge"
    with pytest.raises(ConfigError, match="freeze_node_tables .* needs warm_start=True"):
        plan_runs(args)


def test_seed_in_an_override_becomes_each_runs_seed(tmp_path: Path) -> None:
    """``{seed}`` in a ``--set`` value: each run reads its own seed's pre-training."""
    args = build_parser().parse_args(["--variants", "e2e_warm", "--seeds", "2", "--output-dir", str(tmp_path / "x"),
                                      "--set", "pretrain.from_dir=runs/a/e2e_warm_edge/seed_{seed}/pretrain"])
    runs = plan_runs(args)
    assert [a for r in runs for a in r.argv if a.startswith("pretrain.from_dir=")] == [
        "pretrain.from_dir=runs/a/e2e_warm_edge/seed_0/pretrain", "pretrain.from_dir=runs/a/e2e_warm_edge/seed_1/pretrain"]


def test_mean_std_is_the_sample_std() -> None:
    assert mean_std([0.7]) == {"mean": 0.7, "std": 0.0, "n": 1}
    assert mean_std([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 3}
    assert mean_std([])["n"] == 0


def test_run_cost_charges_a_read_pretraining_apart(tmp_path: Path) -> None:
    shared = tmp_path / "shared" / "pretrain"
    shared.mkdir(parents=True)
    (shared / "pretrain.json").write_text(json.dumps({"pretrain_seconds": 300.0, "steps": 9}))
    run = tmp_path / "e2e_warm" / "seed_0"
    run.mkdir(parents=True)
    warm = "model:\n  warm_start: true\n"
    (run / "config.yaml").write_text(f"{warm}pretrain:\n  from_dir: {shared}\n")
    (run / "cost.json").write_text(json.dumps({"train_seconds": 80.0, "process_seconds": 85.0, "peak_rss_mb": 900.0}))
    assert run_cost(run) == {"train_seconds": 80.0, "read_pretrain_seconds": 300.0, "peak_rss_mb": 900.0}
    # A run that pre-trained itself records no read pre-training; one whose source is gone neither.
    (run / "config.yaml").write_text("pretrain:\n  from_dir: null\n")
    assert "read_pretrain_seconds" not in run_cost(run)
    (run / "config.yaml").write_text(f"{warm}pretrain:\n  from_dir: {tmp_path / 'gone'}\n")
    assert run_cost(run) == {"train_seconds": 80.0, "peak_rss_mb": 900.0}
    # results.md shows it in the pre-training column, marked as read (not in the run's seconds).
    stats = {"mean": 300.0, "std": 0.0, "n": 1}
    results = {"config": "c.yaml", "split": "val", "seeds": [0], "variants": {"e2e_warm": {}},
               "cost": {"e2e_warm": {"train_seconds": {"mean": 80.0, "std": 0.0, "n": 1}, "read_pretrain_seconds": stats}}}
    row = next(line for line in markdown(results).splitlines() if line.startswith("| e2e_warm |"))
    assert row.split(" | ")[1:3] == ["80.0 ± 0.0", "300.0 ± 0.0 (read)"]


@pytest.mark.timeout(600)
def test_two_stage_cost_counts_pretraining_and_export(tmp_path: Path) -> None:
    out = tmp_path / "compare"
    results = main(["--config", "configs/default.yaml", *TINY, "--set", "pretrain.batch_size=256",
                    "--variants", "two_stage", "--seeds", "1", "--max-steps", "2", "--in-process", "--output-dir", str(out)])
    report = json.loads((out / "two_stage" / "seed_0" / "pretrain" / "pretrain.json").read_text())
    cost = results["cost"]["two_stage"]
    assert cost["pretrain_seconds"]["mean"] == report["pretrain_seconds"]
    assert cost["export_seconds"]["mean"] == report["export_seconds"]
    # The run's seconds include both stages.
    assert cost["train_seconds"]["mean"] > report["pretrain_seconds"] + report["export_seconds"]
    assert load_config(out / "two_stage" / "seed_0" / "config.yaml").model.two_stage
    row = next(line for line in (out / "results.md").read_text().splitlines() if line.startswith("| two_stage |")
               and "±" in line and line.count("|") == 8)
    assert f"{report['pretrain_seconds']:.1f}" in row


def write_shop(root: Path, n: int = 1500, seed: int = 0, dense_features=("price",)) -> Path:
    """A bring-your-own data folder: users click items of their favourite brand."""
    import numpy as np
    import pandas as pd
    import yaml

    rng = np.random.default_rng(seed)
    users, items = rng.integers(0, 80, n), rng.integers(0, 60, n)
    brand_of_item, taste = np.arange(60) % 5, rng.integers(0, 5, 80)
    clicked = (brand_of_item[items] == taste[users]) | (rng.random(n) < 0.1)
    root.mkdir()
    (root / "dataset.yaml").write_text(yaml.safe_dump({
        "user_column": "user_id", "item_column": "item_id", "time_column": "ts",
        "tasks": [{"name": "click", "column": "clicked", "kind": "binary"}],
        "sparse_features": ["item_id", "brand"], "dense_features": list(dense_features), "edge_task": "click",
    }))
    pd.DataFrame({"user_id": users, "item_id": items, "ts": np.arange(n), "clicked": clicked.astype(float)}).to_csv(
        root / "interactions.csv", index=False)
    pd.DataFrame({"item_id": np.arange(60), "brand": [f"b{b}" for b in brand_of_item],
                  "price": rng.random(60)}).to_csv(root / "items.csv", index=False)
    (root / "edges").mkdir()
    pd.DataFrame({"src": np.arange(60), "dst": [f"b{b}" for b in brand_of_item]}).to_csv(
        root / "edges" / "item__made_by__brand.csv", index=False)
    return root


@pytest.mark.timeout(600)
def test_compare_on_a_bring_your_own_dataset(tmp_path: Path) -> None:
    shop = write_shop(tmp_path / "shop")
    small = ["--set", "data.dataset=tabular", "--set", f"data.path={shop}", "--set", "data.history_fraction=0.4",
             "--set", "loader.batch_size=128", "--set", "loader.eval_batch_size=256", "--set", "loader.fanouts=[5,3]",
             "--set", "loader.num_workers=0", "--set", "loader.num_threads=1", "--set", "train.plots=false",
             "--set", "pretrain.batch_size=128"]
    results = main([*small, "--variants", "no_graph,two_stage,e2e", "--seeds", "1", "--max-steps", "3",
                    "--in-process", "--output-dir", str(tmp_path / "compare")])
    assert list(results["variants"]) == ["no_graph", "two_stage", "e2e"]
    from torchrec_gnn.data.split import time_split
    from torchrec_gnn.data.tabular import load_tabular

    test_examples = len(time_split(load_tabular(shop), 0.4, 0.1, 0.1).test)
    for variant, per_task in results["variants"].items():  # every test example scored once, as the run scored it
        saved = json.loads((tmp_path / "compare" / variant / "seed_0" / "eval.json").read_text())["test"]["click"]
        assert per_task["click"]["count"]["mean"] == saved["count"] == test_examples, variant
        assert per_task["click"]["auc"]["mean"] == saved["auc"], variant
    report = json.loads((tmp_path / "compare" / "two_stage" / "seed_0" / "pretrain" / "pretrain.json").read_text())
    assert report["relation"] == "user__interacts__item"


@pytest.mark.timeout(600)
def test_id_only_data_without_dense_features_trains_and_evaluates(tmp_path: Path) -> None:
    from torchrec_gnn.recipes.train import main as train

    shop = write_shop(tmp_path / "shop", dense_features=())
    results = train(["--set", "data.dataset=tabular", "--set", f"data.path={shop}", "--set", "data.history_fraction=0.4",
                     "--set", "loader.batch_size=128", "--set", "loader.eval_batch_size=256",
                     "--set", "loader.fanouts=[5,3]", "--set", "loader.num_workers=0", "--set", "train.plots=false",
                     "--max-steps", "3", "--output-dir", str(tmp_path / "run")])
    from torchrec_gnn.data.split import time_split
    from torchrec_gnn.data.tabular import load_tabular

    assert results["test"]["click"]["count"] == len(time_split(load_tabular(shop), 0.4, 0.1, 0.1).test)
    state = torch.load(tmp_path / "run" / "model.pt")
    first_dense_layer = next(v for k, v in state.items() if ".dense_arch." in k and v.dim() == 2)
    assert first_dense_layer.shape[1] == 1  # the constant input


@pytest.mark.timeout(600)
def test_streaming_protocol_reports_periods_and_cumulative_cost(tmp_path: Path) -> None:
    out = tmp_path / "stream"
    results = main(["--config", "configs/default.yaml", *TINY, "--set", "pretrain.batch_size=256",
                    "--set", "train.periods=3", "--protocol", "streaming", "--variants", "two_stage,e2e",
                    "--seeds", "1", "--in-process", "--output-dir", str(out)])
    assert results["protocol"] == "streaming" and results["split"] == "stream"
    for variant in ("two_stage", "e2e"):
        stream = json.loads((out / variant / "seed_0" / "streaming.json").read_text())
        periods = results["periods"][variant]
        assert periods["auc"]["click"][0] is None  # period 1 is only trained on
        assert periods["auc"]["click"][2]["mean"] == stream["periods"][2]["metrics"]["click"]["auc"]
        assert [c["mean"] for c in periods["cumulative_seconds"]] == [p["cumulative_seconds"] for p in stream["periods"]]
        assert results["variants"][variant]["click"]["auc"]["mean"] == pytest.approx(
            np.mean([p["metrics"]["click"]["auc"] for p in stream["periods"][1:]]))
    table = (out / "results.md").read_text()
    assert "## click AUC per period (scored before training on it)" in table and "| e2e | " in table
    assert (out / "streaming.png").stat().st_size > 0
    with pytest.raises(ConfigError, match="do not apply to the streaming protocol"):
        main(["--config", "configs/default.yaml", *TINY, "--protocol", "streaming", "--max-steps", "2",
              "--output-dir", str(tmp_path / "bad")])

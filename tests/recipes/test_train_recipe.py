"""The training job through its real entry point: outputs, resume exactness, errors."""

import json
from pathlib import Path
from typing import List

import numpy as np
import pandas as pd
import pytest
import torch

from torchrec_gnn.modules.aggregation import CSRAdjacency
from torchrec_gnn.recipes.evaluate import evaluate_run
from torchrec_gnn.recipes.train import main
from torchrec_gnn.train.checkpoint import CheckpointError
from torchrec_gnn.train.run_dir import RunDirectoryError

TINY = [
    "--set", "data.preset=tiny", "--set", "loader.batch_size=256", "--set", "loader.eval_batch_size=512",
    "--set", "loader.num_workers=0", "--set", "train.log_every=1", "--set", "train.plots=false",
    "--set", "model.node_embedding_dim=16", "--set", "model.gnn.hidden_channels=16",
    "--set", "loader.num_threads=1",  # multi-threaded CPU backward kernels may sum in any order
]


def losses(run: Path) -> List[List[float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [list(r["losses"].values()) for r in records if "losses" in r]


@pytest.mark.timeout(600)
def test_outputs_and_exact_resume(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    results = main(["--config", "configs/default.yaml", *TINY, "--max-steps", "6", "--output-dir", str(straight)])
    assert set(results) == {"val", "test"} and "auc" in results["test"]["click"]
    assert json.loads((straight / "eval.json").read_text()) == json.loads(json.dumps(results))
    assert (straight / "config.yaml").is_file()
    record = json.loads((straight / "metrics.jsonl").read_text().splitlines()[0])
    assert {"step", "loss", "losses", "task_weights", "examples_per_s"} <= set(record)
    assert list(record["losses"]) == ["click", "long_view", "like", "skip", "stay_duration", "gfae"]

    # The exported single-process model (torchrec-gnn eval) reproduces the sharded model's metrics.
    metrics = evaluate_run(straight, "test")
    for task in ("click", "like"):
        assert metrics[task]["auc"] == pytest.approx(results["test"][task]["auc"], abs=1e-5)
    assert metrics["stay_duration"]["rmse"] == pytest.approx(results["test"]["stay_duration"]["rmse"], rel=1e-4)
    # --predictions: one row per test example in order, scores that give the same metrics.
    from torchrec_gnn.cli import main as cli
    from torchrec_gnn.train.metrics import roc_auc
    cli(["eval", "--run-dir", str(straight), "--split", "test", "--predictions", str(tmp_path / "test.parquet")])
    frame = pd.read_parquet(tmp_path / "test.parquet")
    assert list(frame.columns[:3]) == ["user", "item", "timestamp"] and len(frame) == metrics["click"]["count"]
    assert frame["timestamp"].is_monotonic_increasing
    for task in ("click", "like"):
        labelled = frame[f"{task}_label"].notna()
        assert roc_auc(frame[task][labelled].to_numpy(), frame[f"{task}_label"][labelled].to_numpy()) == pytest.approx(
            metrics[task]["auc"], abs=1e-9)
    stay = frame.dropna(subset=["stay_duration_label"])
    rmse = float(np.sqrt(((stay["stay_duration"] - stay["stay_duration_label"]) ** 2).mean()))
    assert rmse == pytest.approx(metrics["stay_duration"]["rmse"], rel=1e-6)
    with pytest.raises(SystemExit):  # a user error: message, exit status 2
        cli(["eval", "--run-dir", str(straight), "--predictions", str(tmp_path / "test.txt")])

    resumed = tmp_path / "resumed"
    main(["--config", "configs/default.yaml", *TINY, "--max-steps", "3", "--output-dir", str(resumed)])
    assert (resumed / "checkpoints" / "step_00000003").is_dir()
    main(["--config", "configs/default.yaml", *TINY, "--max-steps", "6", "--output-dir", str(resumed), "--resume"])
    assert len(losses(straight)) == len(losses(resumed)) == 6
    assert losses(resumed) == losses(straight)  # exact: same weights, optimizer states, data, RNG

    # A corrupt latest checkpoint fails with a message naming it, not deep inside DCP.
    latest = sorted((resumed / "checkpoints").glob("step_*"))[-1]
    for shard in latest.glob("*.distcp"):
        shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=rf"{latest.name}: cannot load checkpoint into this job"):
        main(["--config", "configs/default.yaml", *TINY, "--max-steps", "8", "--output-dir", str(resumed), "--resume"])


@pytest.mark.timeout(300)
def test_resume_without_a_run_fails_clearly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(RunDirectoryError, match=r"--resume: .* holds no run \(config.yaml is missing\)"):
        main(["--config", "configs/default.yaml", *TINY, "--max-steps", "2", "--output-dir", str(tmp_path), "--resume"])
    # At the command line: the message alone, status 2.
    from torchrec_gnn.cli import main as cli
    with pytest.raises(SystemExit) as exit_status:
        cli(["train", "--config", "configs/default.yaml", "--output-dir", str(tmp_path), "--resume"])
    stderr = capsys.readouterr().err
    assert exit_status.value.code == 2 and "Traceback" not in stderr, stderr[-2000:]
    assert "torchrec-gnn train: error: --resume:" in stderr and "holds no run" in stderr


@pytest.mark.timeout(600)
def test_one_directory_holds_one_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = ["--config", "configs/default.yaml", *TINY, "--max-steps", "3", "--output-dir", str(run)]
    results = main(argv)
    config_bytes = (run / "config.yaml").read_bytes()
    # A new run never lands in a directory that holds another one...
    with pytest.raises(RunDirectoryError, match=r"holds another run \(config.yaml, metrics.jsonl, .*checkpoints"):
        main([*argv, "--seed", "7"])
    # ...and a resume with other settings is refused before anything changes.
    with pytest.raises(RunDirectoryError, match=r"differs from the run .*model.embedding_dim: 16 -> 8"):
        main([*argv, "--resume", "--set", "model.embedding_dim=8"])
    assert (run / "config.yaml").read_bytes() == config_bytes
    assert evaluate_run(run, "test")["click"]["auc"] == pytest.approx(results["test"]["click"]["auc"], abs=1e-5)

    # --overwrite replaces it: none of the old run's checkpoints survive to be resumed later.
    main([*argv, "--seed", "7", "--max-steps", "2", "--overwrite"])
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_00000002"]
    assert "seed: 7" in (run / "config.yaml").read_text()

    # A run's graph corrupted on disk (ids out of range, same shape) fails by name, not by a crash.
    row_file = sorted((run / "graph").glob("*.row.npy"))[0]
    rows = np.load(row_file)
    rows[0] = 10**9
    np.save(row_file, rows)
    with pytest.raises(ValueError, match=rf"{row_file.name}: row of relation .* has source id 1000000000 at position 0"):
        evaluate_run(run, "test")

    # Checkpoints written by another run (a shared checkpoint directory) are never loaded.
    shared = tmp_path / "shared_checkpoints"
    first = ["--config", "configs/default.yaml", *TINY, "--max-steps", "2", "--checkpoint-dir", str(shared)]
    main([*first, "--output-dir", str(tmp_path / "a")])
    main([*first, "--output-dir", str(tmp_path / "b"), "--seed", "5", "--overwrite"])  # replaces a's checkpoints
    with pytest.raises(CheckpointError, match=r"written by another run: config_fingerprint"):
        main([*first, "--output-dir", str(tmp_path / "a"), "--max-steps", "4", "--resume"])


def test_eval_of_an_unfinished_run_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"not a finished training run, missing \['config.yaml', 'graph', 'model.pt'\]"):
        evaluate_run(tmp_path, "test")


@pytest.mark.timeout(600)
def test_two_stage_pretrains_once_and_serves_the_export(tmp_path: Path) -> None:
    run = tmp_path / "two_stage"
    argv = ["--config", "configs/ablations/two_stage.yaml", *TINY, "--set", "pretrain.batch_size=256",
            "--max-steps", "3", "--output-dir", str(run)]
    results = main(argv)
    assert "auc" in results["test"]["click"]
    report = json.loads((run / "pretrain" / "pretrain.json").read_text())
    assert report["steps"] > 0 and report["pretrain_seconds"] > 0 and 0 <= report["link_auc"] <= 1
    exported = torch.load(run / "pretrain" / "node_embeddings.pt")
    state = torch.load(run / "model.pt")
    # The ranker trained with the exported embeddings, unchanged (frozen), not the empty tables DMP built.
    for node_type in ("user", "video"):
        assert torch.equal(state[f"model.graph_tower.embeddings_{node_type}"], exported[node_type])
    assert not any(key.startswith("model.graph_tower.node_embeddings") for key in state)
    # Only the seeds are sampled for the ranker (the frozen table needs no neighbourhood).
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert list(record["losses"]) == ["click", "long_view", "like", "skip", "stay_duration"]  # no tower losses

    # A resumed run reuses stage 1 rather than pre-training again.
    stamp = (run / "pretrain" / "node_embeddings.pt").stat().st_mtime_ns
    main([*argv[:-4], "--max-steps", "5", "--output-dir", str(run), "--resume"])
    assert (run / "pretrain" / "node_embeddings.pt").stat().st_mtime_ns == stamp
    assert len(losses(run)) == 5

    metrics = evaluate_run(run, "test")  # the exported model.pt reproduces the run's metrics
    final = json.loads((run / "eval.json").read_text())["test"]
    assert metrics["click"]["auc"] == pytest.approx(final["click"]["auc"], abs=1e-5)


@pytest.mark.timeout(600)
def test_warm_start_trains_end_to_end_from_the_pretrained_tower(tmp_path: Path) -> None:
    run = tmp_path / "warm"
    argv = ["--config", "configs/ablations/warm_start_edge.yaml", *TINY, "--set", "pretrain.batch_size=256",
            "--set", "model.gfae.edge_links_per_batch=64", "--output-dir", str(run)]
    main([*argv, "--max-steps", "0"])
    pretrained = torch.load(run / "pretrain" / "tower.pt")
    state = torch.load(run / "model.pt")
    # Before any ranker step the model's tower is the pre-trained one, tables and GNN alike.
    assert len(pretrained) > 10
    for key, value in pretrained.items():
        assert torch.equal(state[f"model.graph_tower.{key}"], value), key
    assert json.loads((run / "pretrain" / "pretrain.json").read_text())["exported_nodes"] == 0  # no export needed
    # Every head starts from its training labels' constant best: log-odds, mean log1p.
    from torchrec_gnn.config import load_config
    from torchrec_gnn.data.registry import load_dataset
    from torchrec_gnn.data.split import time_split
    from torchrec_gnn.modules.heads import initial_output_bias
    config = load_config(run / "config.yaml")
    dataset = load_dataset(config.data)
    labels = time_split(dataset, config.data.history_fraction, config.data.val_fraction, config.data.test_fraction).train.labels
    expected = initial_output_bias(labels.nan_to_num(0.0), ~labels.isnan(), dataset.tasks)
    biases = torch.cat([state[f"model.task_heads.heads.{t}.1.bias"] for t in range(len(dataset.tasks))])
    torch.testing.assert_close(biases, expected)

    # Then the tower trains (it is not frozen), with the edge loss as its own task.
    trained = tmp_path / "trained"
    main([*argv[:-1], str(trained), "--max-steps", "2"])
    state = torch.load(trained / "model.pt")
    assert not torch.equal(state["model.graph_tower.node_embeddings.embedding_bags.node_user.weight"],
                           pretrained["node_embeddings.embedding_bags.node_user.weight"])
    record = json.loads((trained / "metrics.jsonl").read_text().splitlines()[0])
    assert list(record["losses"])[-2:] == ["gfae", "edge"] and record["losses"]["edge"] > 0

    # Another run can start from that pre-training (pretrain.from_dir): the model pre-training
    # itself would give, and no pre-training of its own.
    reused = tmp_path / "reused"
    from_dir = ["--set", f"pretrain.from_dir={run / 'pretrain'}"]
    results = main([*argv[:-1], str(reused), "--max-steps", "2", *from_dir])
    assert not (reused / "pretrain").exists()
    assert results == json.loads((trained / "eval.json").read_text())
    reused_state, trained_state = torch.load(reused / "model.pt"), torch.load(trained / "model.pt")
    assert reused_state.keys() == trained_state.keys()
    assert all(torch.equal(reused_state[k], trained_state[k]) for k in trained_state)
    # Other pre-training settings, or two-stage without the export it reads: a clear error.
    with pytest.raises(ValueError, match=r"other settings \(recorded -> this run\): pretrain\.lr: 0\.005 -> 0\.01$"):
        main([*argv[:-1], str(tmp_path / "other"), "--max-steps", "2", *from_dir, "--set", "pretrain.lr=0.01"])
    with pytest.raises(ValueError, match=r"pretrain.from_dir=.*nothing: not a finished pre-training"):
        main([*argv[:-1], str(tmp_path / "none"), "--max-steps", "2", "--set", f"pretrain.from_dir={tmp_path / 'nothing'}"])
    with pytest.raises(ValueError, match="no exported embeddings"):
        main([*argv[:-1], str(tmp_path / "two_stage"), "--max-steps", "2", *from_dir,
              "--set", "model.warm_start=false", "--set", "model.two_stage=true"])

    # With frozen node tables the rows stay pre-trained while the GNN trains.
    frozen = tmp_path / "frozen"
    main([*argv[:-1], str(frozen), "--max-steps", "2", "--set", "model.freeze_node_tables=true"])
    state = torch.load(frozen / "model.pt")
    tables = [key for key in pretrained if key.startswith("node_embeddings.")]
    gnn = [key for key in pretrained if key.startswith("encoder.gnn.") and key.endswith("weight")]
    assert len(tables) == 5 and gnn
    assert all(torch.equal(state[f"model.graph_tower.{key}"], pretrained[key]) for key in tables)
    assert not any(torch.equal(state[f"model.graph_tower.{key}"], pretrained[key]) for key in gnn)


@pytest.mark.timeout(600)
def test_csr_built_by_the_loader_trains_the_same_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``loader.prebuild_csr``: pre-training and the ranker read the batches' CSR arrays through
    TorchRec's pipeline, and train the model the step would train building them itself."""
    from torchrec_gnn.modules.gnn import HeteroSAGE

    read = {"true": 0, "false": 0}
    adjacency = HeteroSAGE.adjacency

    def counting(self, *args, **kwargs):  # noqa: ANN002, ANN003 - HeteroSAGE.adjacency's arguments
        matrix = adjacency(self, *args, **kwargs)
        read[flag] += isinstance(matrix, CSRAdjacency)  # a matrix with its transpose: read from the batch
        return matrix

    monkeypatch.setattr(HeteroSAGE, "adjacency", counting)
    argv = ["--config", "configs/ablations/warm_start_edge.yaml", *TINY, "--set", "pretrain.batch_size=256",
            "--set", "model.gfae.edge_links_per_batch=64", "--max-steps", "3"]
    results = {}
    for flag in ("true", "false"):
        results[flag] = main([*argv, "--set", f"loader.prebuild_csr={flag}", "--output-dir", str(tmp_path / flag)])
    assert read["true"] > 0 and read["false"] == 0
    assert results["true"] == results["false"]
    for name in ("pretrain/tower.pt", "model.pt"):
        built, read = torch.load(tmp_path / "false" / name), torch.load(tmp_path / "true" / name)
        assert built.keys() == read.keys() and all(torch.equal(built[k], read[k]) for k in built), name


@pytest.mark.timeout(600)
def test_fresh_graph_run_with_degrees_trains_and_evaluates_alike(tmp_path: Path) -> None:
    """``train.graph: fresh``: the run's graph holds the window's edges, batches sample it
    temporally, warm start pre-trains on the graph before the window, degree columns widen the
    side features, and ``eval`` scores exactly as the training job did."""
    from torchrec_gnn.config import load_config
    from torchrec_gnn.data.registry import load_dataset
    from torchrec_gnn.data.split import time_split
    from torchrec_gnn.graph.degree import degree_channels
    from torchrec_gnn.graph.hetero_graph import HeteroGraph

    run = tmp_path / "fresh"
    results = main(["--config", "configs/ablations/warm_start_edge.yaml", *TINY, "--set", "pretrain.batch_size=256",
                    "--set", "model.gfae.edge_links_per_batch=64", "--set", "train.graph=fresh",
                    "--set", "model.node_degree=true", "--max-steps", "3", "--output-dir", str(run)])
    config = load_config(run / "config.yaml")
    assert config.loader.temporal and config.fresh_graph
    dataset = load_dataset(config.data)
    frozen = time_split(dataset, config.data.history_fraction, config.data.val_fraction, config.data.test_fraction)
    graph = HeteroGraph.load(run / "graph")
    assert graph.num_edges() > frozen.graph.num_edges()  # the window's edges are in it, with their times
    state = torch.load(run / "model.pt")
    for t, extra in degree_channels(graph).items():
        width = dataset.node_features[t].shape[1] if t in dataset.node_features else 0
        assert state[f"model.graph_tower.encoder.feature_projection.{t}.weight"].shape[1] == width + extra, t
    pretrained = torch.load(run / "pretrain" / "tower.pt")
    assert pretrained["encoder.feature_projection.video.weight"].shape == state[
        "model.graph_tower.encoder.feature_projection.video.weight"].shape
    metrics = evaluate_run(run, "test")
    for task in ("click", "like"):
        assert metrics[task]["auc"] == pytest.approx(results["test"][task]["auc"], abs=1e-5)


@pytest.mark.timeout(600)
def test_early_stopping_restores_the_best_validation_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchrec_gnn.recipes.ranker import RankerRecipe

    # Scripted validation AUCs for the passes during training (steps 1-4): best at step 2, then
    # two passes without improvement -> stop at step 4 (patience 2). Later calls are real.
    scripted = iter([0.60, 0.70, 0.65, 0.64])
    real_evaluate = RankerRecipe.evaluate

    def evaluate(recipe, examples, refresh=True):
        auc = next(scripted, None)
        return {"click": {"auc": auc}} if auc is not None else real_evaluate(recipe, examples, refresh)

    monkeypatch.setattr(RankerRecipe, "evaluate", evaluate)
    stopped = tmp_path / "stopped"
    main(["--config", "configs/default.yaml", *TINY, "--set", "train.eval_every=1",
          "--set", "train.early_stopping_patience=2", "--max-steps", "10", "--output-dir", str(stopped)])
    records = [json.loads(line) for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in records if "losses" in r]) == 4  # stopped after step 4 of 10
    assert records[-1]["early_stopping"] == {"best": 0.70, "best_step": 2, "bad_evaluations": 2}

    monkeypatch.setattr(RankerRecipe, "evaluate", real_evaluate)
    two_steps = tmp_path / "two_steps"
    main(["--config", "configs/default.yaml", *TINY, "--max-steps", "2", "--output-dir", str(two_steps)])
    restored, reference = torch.load(stopped / "model.pt"), torch.load(two_steps / "model.pt")
    assert restored.keys() == reference.keys()
    assert all(torch.equal(restored[k], reference[k]) for k in reference)  # the step-2 weights, exactly


def test_early_stopping_needs_validation_passes() -> None:
    from torchrec_gnn.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="early_stopping_patience needs train.eval_every"):
        load_config("configs/default.yaml", ["train.early_stopping_patience=3"])
    with pytest.raises(ConfigError, match="early_stopping_metric must be one of"):
        load_config("configs/default.yaml", ["train.early_stopping_metric=mae"])


@pytest.mark.timeout(600)
def test_history_run_refreshes_resumes_exactly_and_evaluates_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchrec_gnn.config import load_config
    from torchrec_gnn.recipes.batches import batch_fanouts
    from torchrec_gnn.train import sharding

    refreshes: List[int] = []
    real = sharding.refresh_history
    monkeypatch.setattr(sharding, "refresh_history", lambda *a, **k: (refreshes.append(1), real(*a, **k))[1])
    history = [*TINY, "--set", "model.gnn.outer_hop=history", "--set", "model.gnn.history_refresh_every=3",
               "--set", "loader.fanouts=[4,3]"]
    straight = tmp_path / "straight"
    results = main(["--config", "configs/default.yaml", *history, "--max-steps", "7", "--output-dir", str(straight)])
    # At the start, after steps 3 and 6, and once before the final evaluations (test follows
    # validation with the same weights).
    assert len(refreshes) == 1 + 2 + 1
    # The batches sample one hop: the second comes from the history.
    fanouts = batch_fanouts(load_config(straight / "config.yaml"), _graph(straight))
    assert set(map(tuple, fanouts.values())) == {(4,)}

    # A checkpoint at a refresh step resumes exactly: the history is rebuilt from the same weights.
    resumed = tmp_path / "resumed"
    main(["--config", "configs/default.yaml", *history, "--max-steps", "3", "--output-dir", str(resumed)])
    main(["--config", "configs/default.yaml", *history, "--max-steps", "7", "--output-dir", str(resumed), "--resume"])
    assert losses(resumed) == losses(straight)

    # The exported model refreshes its own history from model.pt: the run's metrics again.
    metrics = evaluate_run(straight, "test")
    assert metrics["click"]["auc"] == pytest.approx(results["test"]["click"]["auc"], abs=1e-5)


def _graph(run: Path):
    from torchrec_gnn.graph.hetero_graph import HeteroGraph
    return HeteroGraph.load(run / "graph", mmap=True)


def test_scoring_groups_gauc_by_global_user_ids(tiny_split) -> None:
    """The recipe's scoring path groups GAUC by each example's global user id, across batches
    whose local rows mean different users."""
    from torchrec_gnn.data.loader import BatchPlan, BatchSchema, GraphBatchBuilder, GraphBatchDataset
    from torchrec_gnn.data.dataset import TaskSpec
    from torchrec_gnn.graph.sampler import NeighborSampler
    from torchrec_gnn.train.evaluation import score_batch
    from torchrec_gnn.train.metrics import MultiTaskEvaluator, group_auc

    examples = tiny_split.train
    data = GraphBatchDataset(
        examples,
        GraphBatchBuilder(
            NeighborSampler(tiny_split.graph, [2, 2]),
            BatchSchema("user", "item", tiny_split.graph.node_types, ["user_id", "item_id", "genre"]),
        ),
        BatchPlan(40),
    )
    tasks = [TaskSpec("click", "binary"), TaskSpec("stay", "regression")]
    evaluator = MultiTaskEvaluator(tasks)
    scores = torch.randn(len(examples), 2, generator=torch.Generator().manual_seed(0))
    for i in range(len(data)):
        batch = data[i]
        score_batch(evaluator, scores[i * 40:(i + 1) * 40], batch, "user")
    metrics = evaluator.compute()
    expected, used, skipped = group_auc(scores[:, 0].numpy(), examples.labels[:, 0].numpy(), examples.user.numpy())
    assert metrics["click"]["gauc"] == pytest.approx(expected, abs=1e-12)
    assert (metrics["click"]["gauc_users"], metrics["click"]["gauc_users_skipped"]) == (used, skipped)
    assert used > 5

"""A rank killed mid-run under ``torchrun --max-restarts 1`` comes back from the latest
complete checkpoint and finishes exactly as a run nobody killed; resumes across world sizes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
MAX_STEPS = 24
TINY = ["--config", "configs/default.yaml", "--set", "data.preset=tiny", "--set", "loader.batch_size=256",
        "--set", "loader.num_workers=0", "--set", "loader.num_threads=1", "--set", "train.plots=false",
        "--set", "train.log_every=1", "--set", "model.node_embedding_dim=16", "--set", "model.gnn.hidden_channels=16"]
# The runs that resume: 128 examples a batch on each of 2 ranks (an epoch is 10 steps), a
# checkpoint every 5 steps.
RESUMABLE = ["--set", "loader.batch_size=128", "--set", "train.epochs=3", "--set", "train.checkpoint_every=5"]


def _torchrun(ranks: int, max_restarts: int = 0) -> list:
    return [str(Path(sys.executable).with_name("torchrun")), "--standalone", f"--nproc_per_node={ranks}",
            f"--max-restarts={max_restarts}", "-m", "torchrec_gnn", "train", *TINY]


def _train(args: list, ranks: int) -> subprocess.CompletedProcess:
    return subprocess.run(_torchrun(ranks) + args, cwd=REPO, capture_output=True, text=True, timeout=400)


def _logged(run_dir: Path) -> list:
    """(step, losses, task weights) of every training record in the run's metrics.jsonl."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["losses"], r["task_weights"]) for r in records if "losses" in r]


@pytest.fixture(scope="module")
def straight_two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted 2-rank run that the killed and the resumed runs must reproduce."""
    run_dir = tmp_path_factory.mktemp("straight")
    run = _train(["--output-dir", str(run_dir), "--max-steps", str(MAX_STEPS), *RESUMABLE], ranks=2)
    assert run.returncode == 0, run.stderr[-3000:]
    return run_dir


def _children(pid: int) -> list:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.timeout(600)
def test_killed_rank_resumes_from_latest_checkpoint(tmp_path: Path, straight_two_ranks: Path) -> None:
    command = _torchrun(2, max_restarts=1) + ["--output-dir", str(tmp_path), "--max-steps", str(MAX_STEPS), *RESUMABLE]
    log = (tmp_path / "torchrun.log").open("w")
    agent = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        checkpoint = tmp_path / "checkpoints" / "step_00000010"
        deadline = time.time() + 300
        while not checkpoint.is_dir() and agent.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert checkpoint.is_dir(), "no checkpoint at step 10 before the deadline"
        workers = _children(agent.pid)
        assert len(workers) == 2, f"expected 2 worker processes, found {workers}"
        os.kill(workers[1], signal.SIGKILL)
        assert agent.wait(timeout=400) == 0, (tmp_path / "torchrun.log").read_text()[-3000:]
    finally:
        if agent.poll() is None:
            os.killpg(agent.pid, signal.SIGKILL)
        log.close()
    text = (tmp_path / "torchrun.log").read_text()
    assert "resumed from" in text and "restart 1 of this job" in text
    resumed_at = int(text.split("resumed from")[1].split("step ")[1].split(",")[0])
    assert 10 <= resumed_at < MAX_STEPS
    # The restarted job continues exactly: the same losses and task weights at every step as a
    # run nobody killed, each step logged once (the killed run's records past the checkpoint dropped).
    assert [step for step, *_ in _logged(tmp_path)] == list(range(1, MAX_STEPS + 1))
    assert _logged(tmp_path) == _logged(straight_two_ranks)
    assert json.loads((tmp_path / "eval.json").read_text()) == json.loads((straight_two_ranks / "eval.json").read_text())


@pytest.mark.timeout(600)
def test_two_rank_resume_is_exact(tmp_path: Path, straight_two_ranks: Path) -> None:
    """2 ranks resumed from step 15 give the uninterrupted 2-rank run's losses and task weights
    at every later step (GradNorm updates and the second epoch boundary included), each step logged once."""
    for args in (["--max-steps", "15"], ["--max-steps", str(MAX_STEPS), "--resume"]):
        run = _train(["--output-dir", str(tmp_path), *args, *RESUMABLE], ranks=2)
        assert run.returncode == 0, run.stderr[-3000:]
    assert [step for step, *_ in _logged(tmp_path)] == list(range(1, MAX_STEPS + 1))  # every step once
    assert _logged(tmp_path) == _logged(straight_two_ranks)


@pytest.mark.timeout(900)
def test_checkpoint_moves_between_world_sizes(tmp_path: Path) -> None:
    from torchrec_gnn.recipes.train import main as train_one_rank

    # 1 rank (in this process) stops mid-epoch: its data position cannot be mapped to 2 ranks.
    args = [*TINY, "--output-dir", str(tmp_path), "--set", "train.epochs=3"]
    train_one_rank([*args, "--max-steps", "4"])
    refused = _train(["--output-dir", str(tmp_path), "--set", "train.epochs=3", "--resume"], ranks=2)
    assert refused.returncode != 0
    assert "saved by 1 rank(s) in the middle of epoch 0" in refused.stderr and "--nproc_per_node=1" in refused.stderr
    # 1 rank resumes to the end of the epoch (9 batches of 256): that checkpoint sits at a boundary.
    train_one_rank([*args, "--max-steps", "9", "--resume"])
    assert json.loads((tmp_path / "checkpoints" / "step_00000009" / "trainer.json").read_text())["batch_in_epoch"] == 0
    # 2 ranks pick it up (tables resharded by DCP) and keep training from epoch 1.
    second = _train(["--output-dir", str(tmp_path), "--set", "train.epochs=3", "--resume"], ranks=2)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stderr and "(step 9, epoch 1, batch 0)" in second.stderr
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] > 9


@pytest.mark.timeout(600)
def test_two_stage_under_two_ranks(tmp_path: Path) -> None:
    # Rank 0 pre-trains and exports; both ranks wait for it, load the export into their replica
    # of the frozen tower and train the ranker together.
    run = _train(["--output-dir", str(tmp_path), "--set", "model.two_stage=true", "--set", "pretrain.batch_size=256",
                  "--max-steps", "3"], ranks=2)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stderr.count("pre-training: ") == 1  # once, on rank 0
    exported = torch.load(tmp_path / "pretrain" / "node_embeddings.pt")
    state = torch.load(tmp_path / "model.pt")
    for node_type, table in exported.items():
        assert torch.equal(state[f"model.graph_tower.embeddings_{node_type}"], table)
    results = json.loads((tmp_path / "eval.json").read_text())["test"]
    # Both ranks' predictions were gathered: every test example once, scored as one process scores model.pt.
    from torchrec_gnn.config import load_config
    from torchrec_gnn.data.registry import load_dataset
    from torchrec_gnn.data.split import time_split
    from torchrec_gnn.recipes.evaluate import evaluate_run

    config = load_config(tmp_path / "config.yaml")
    test_examples = len(time_split(load_dataset(config.data), config.data.history_fraction, config.data.val_fraction,
                                   config.data.test_fraction).test)
    single = evaluate_run(tmp_path, "test")
    assert results["click"]["count"] == single["click"]["count"] == test_examples
    assert results["click"]["auc"] == pytest.approx(single["click"]["auc"], abs=1e-6)
    assert results["click"]["gauc"] == pytest.approx(single["click"]["gauc"], abs=1e-6)

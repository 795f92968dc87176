"""A rank killed mid-run under ``torchrun --max-restarts 1`` comes back from the latest
complete checkpoint and the job finishes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAX_STEPS = 40


def _children(pid: int) -> list:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.timeout(600)
def test_killed_rank_resumes_from_latest_checkpoint(tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [
        str(torchrun), "--standalone", "--nproc_per_node=2", "--max-restarts=1", "-m", "torchrec_gnn", "train",
        "--config", "configs/default.yaml", "--output-dir", str(tmp_path), "--max-steps", str(MAX_STEPS),
        "--set", "data.preset=tiny", "--set", "loader.batch_size=64", "--set", "loader.num_workers=0",
        "--set", "loader.num_threads=1", "--set", "train.epochs=3", "--set", "train.checkpoint_every=5",
        "--set", "train.log_every=1", "--set", "train.plots=false",
        "--set", "model.node_embedding_dim=16", "--set", "model.gnn.hidden_channels=16",
    ]
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
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "losses" in r]
    assert steps[-1] == MAX_STEPS
    resumed_at = int(text.split("resumed from")[1].split("step ")[1].split(",")[0])
    assert 10 <= resumed_at < MAX_STEPS
    assert json.loads((tmp_path / "eval.json").read_text())["test"]["click"]["count"] > 0

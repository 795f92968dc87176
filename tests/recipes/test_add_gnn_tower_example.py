"""examples/add_gnn_tower.py: the tower added to each stock TorchRec DLRM trains, in one process
and on 2 gloo ranks."""

import math
import re
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "add_gnn_tower.py"


def step_losses(stdout: str) -> List[List[float]]:
    """The per-loss values of every 'step N: total=... | name=value, ...' line."""
    lines = re.findall(r"^step \d+: total=\S+ \| (.*)$", stdout, flags=re.MULTILINE)
    return [[float(part.split("=")[1]) for part in line.split(", ")] for line in lines]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("model", ["projection", "dcn"])
def test_example_trains_each_model(model: str) -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--steps", "3", "--model", model],
                          capture_output=True, text=True, timeout=280, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = step_losses(proc.stdout)
    assert len(losses) == 3 and all(len(step) == 5 and all(math.isfinite(v) and v > 0 for v in step) for step in losses)
    assert "Warning" not in proc.stderr and "gfae" not in proc.stdout  # no tower loss without a GFAE


@pytest.mark.multiprocess
@pytest.mark.timeout(300)
def test_example_under_torchrun_two_ranks() -> None:
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(EXAMPLE), "--steps", "3", "--model", "dcn"],
                          capture_output=True, text=True, timeout=280, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = step_losses(proc.stdout)
    assert len(losses) == 3  # rank 0 prints, once per step
    assert all(math.isfinite(v) for step in losses for v in step)

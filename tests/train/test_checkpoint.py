"""CheckpointManager in one process: rotation keeps the newest K complete checkpoints, ignores
half-written ones, and a load restores weights, optimizer state and trainer state."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from torchrec_gnn.train.checkpoint import TRAINER_FILE, CheckpointError, CheckpointManager


def model_and_optimizer(seed: int):
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_rotation_keeps_the_newest_complete_checkpoints_and_ignores_half_written_ones(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep=2)
    model, optimizer = model_and_optimizer(0)
    for step in (5, 10, 15):
        manager.save(step, {"model": model}, {}, {"epoch": 0})
    assert [p.name for p in manager.complete()] == ["step_00000010", "step_00000015"]
    assert not (tmp_path / "step_00000005").exists()  # rotated out
    # A crash while writing step 20 leaves a .tmp directory; one without trainer.json is not complete.
    (tmp_path / "step_00000020.tmp").mkdir()
    shutil.copytree(tmp_path / "step_00000015", tmp_path / "step_00000025")
    (tmp_path / "step_00000025" / TRAINER_FILE).unlink()
    assert manager.latest() == tmp_path / "step_00000015"
    # The next save rotates among complete checkpoints only and keeps the newest.
    manager.save(30, {"model": model}, {}, {"epoch": 1})
    assert [p.name for p in manager.complete()] == ["step_00000015", "step_00000030"]
    with pytest.raises(CheckpointError, match=r"step_00000025: not a complete checkpoint"):
        manager.load(tmp_path / "step_00000025", {"model": model}, {})


def test_load_restores_weights_optimizer_and_trainer_state(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep=1)
    model, optimizer = model_and_optimizer(0)
    manager.save(7, {"model": model, "optimizer": optimizer}, {}, {"epoch": 2, "batch_in_epoch": 3})
    other, other_optimizer = model_and_optimizer(1)
    assert not torch.equal(other.weight, model.weight)
    state = manager.load(manager.latest(), {"model": other, "optimizer": other_optimizer}, {})
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (7, 2, 3)
    assert torch.equal(other.weight, model.weight) and torch.equal(other.bias, model.bias)
    saved, loaded = optimizer.state_dict()["state"][0], other_optimizer.state_dict()["state"][0]
    assert torch.equal(saved["exp_avg"], loaded["exp_avg"]) and torch.equal(saved["exp_avg_sq"], loaded["exp_avg_sq"])
    assert json.loads((manager.latest() / TRAINER_FILE).read_text())["world_size"] == 1

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


def test_load_restores_replicated_objects_and_the_rng(tmp_path: Path) -> None:
    """The balancer-like replicated module comes back, and the CPU RNG continues where the saved
    run was (a resumed run draws the same dropout and masks)."""
    manager = CheckpointManager(tmp_path)
    model, _ = model_and_optimizer(0)
    balancer = nn.Linear(2, 1)
    torch.manual_seed(123)
    manager.save(3, {"model": model}, {"balancer": balancer}, {"epoch": 0})
    expected = torch.rand(4)  # what the saved run draws next
    other_balancer = nn.Linear(2, 1)
    torch.manual_seed(999)
    manager.load(manager.latest(), {"model": model_and_optimizer(1)[0]}, {"balancer": other_balancer})
    assert torch.equal(other_balancer.weight, balancer.weight) and torch.equal(other_balancer.bias, balancer.bias)
    assert torch.equal(torch.rand(4), expected)
    assert sorted(p.name for p in manager.latest().iterdir() if p.suffix != ".distcp") == [
        ".metadata", "replicated.pt", "rng_rank0.pt", TRAINER_FILE]


def test_load_refuses_other_runs_and_broken_checkpoints(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    model, _ = model_and_optimizer(0)
    manager.save(4, {"model": model}, {}, {"epoch": 0, "config_fingerprint": "abc"})
    path = manager.latest()
    with pytest.raises(CheckpointError, match=r"step_00000004: written by another run: config_fingerprint 'abc' "
                                              r"\(this run: 'xyz'\)"):
        manager.load(path, {"model": model}, {}, expect={"config_fingerprint": "xyz", "absent_key": 1})
    assert manager.load(path, {"model": model}, {}, expect={"config_fingerprint": "abc", "absent_key": 1})["step"] == 4
    with pytest.raises(CheckpointError, match=r"step_00000004: cannot load checkpoint into this job \(\w+"):
        manager.load(path, {"model": nn.Linear(5, 5)}, {})
    with pytest.raises(CheckpointError, match=r"step_00000004: cannot load checkpoint into this job"):
        manager.load(path, {"model": model}, {"balancer": nn.Linear(2, 1)})  # saved without one
    (path / TRAINER_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match=rf"{TRAINER_FILE}: corrupt trainer state"):
        manager.load(path, {"model": model}, {})
    with pytest.raises(CheckpointError, match=r"step_00000009: not a complete checkpoint .* in .*: none"):
        CheckpointManager(tmp_path / "empty").load(tmp_path / "empty" / "step_00000009", {"model": model}, {})
    with pytest.raises(ValueError, match="keep must be >= 1, got 0"):
        CheckpointManager(tmp_path, keep=0)
    assert CheckpointManager(tmp_path / "fresh").latest() is None


def test_default_keeps_two_and_orders_by_step(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    model, _ = model_and_optimizer(0)
    for step in (900, 80, 7000):  # saved out of order: the newest by step number is kept
        manager.save(step, {"model": model}, {}, {"epoch": 0})
    assert [p.name for p in manager.complete()] == ["step_00000900", "step_00007000"]
    (tmp_path / "step_00008000").write_text("a file, not a checkpoint")
    (tmp_path / "other_00009000").mkdir()
    assert manager.latest().name == "step_00007000"

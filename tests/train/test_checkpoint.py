"""CheckpointManager in one process: rotation keeps the newest K complete checkpoints, ignores
half-written ones, and a load restores weights, optimizer state and trainer state."""

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest
import torch
from torch import nn
from torchrec.optim.keyed import KeyedOptimizerWrapper

from threaded_ranks import on_threaded_ranks

from torchrec_gnn.train.checkpoint import TRAINER_FILE, CheckpointError, CheckpointManager, resume_latest


def model_and_optimizer(seed: int) -> Tuple[nn.Linear, torch.optim.Adam]:
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


def test_only_renamed_step_directories_count_and_others_survive_rotation(tmp_path: Path) -> None:
    """A crash between writing trainer.json and the rename leaves a .tmp with trainer.json: not
    complete. A user's copy under another name is neither listed nor rotated away."""
    manager = CheckpointManager(tmp_path, keep=1)
    model, _ = model_and_optimizer(0)
    manager.save(5, {"model": model}, {}, {"epoch": 0})
    shutil.copytree(tmp_path / "step_00000005", tmp_path / "step_00000010.tmp")
    shutil.copytree(tmp_path / "step_00000005", tmp_path / "best")
    assert [p.name for p in manager.complete()] == ["step_00000005"]
    manager.save(6, {"model": model}, {}, {"epoch": 0})
    assert [p.name for p in manager.complete()] == ["step_00000006"]
    assert (tmp_path / "best" / TRAINER_FILE).is_file() and (tmp_path / "step_00000010.tmp").is_dir()


class Crash(RuntimeError):
    """Raised by :class:`Crashing` in the middle of a save."""


class Crashing:
    """A sharded object whose ``state_dict`` fails, as a rank dying mid-save would."""

    def state_dict(self) -> Dict[str, Any]:
        raise Crash("died while saving")


def test_save_creates_its_directory_recovers_from_a_crash_and_replaces_a_step(tmp_path: Path) -> None:
    root = tmp_path / "runs" / "x" / "checkpoints"  # nothing of it exists yet
    manager = CheckpointManager(root)
    model, _ = model_and_optimizer(0)
    with pytest.raises(Crash):
        manager.save(3, {"model": model, "broken": Crashing()}, {}, {"epoch": 0})
    assert [p.name for p in root.iterdir()] == ["step_00000003.tmp"] and manager.latest() is None
    (root / "step_00000003.tmp" / "stale.distcp").write_text("left by the crashed save")
    manager.save(3, {"model": model}, {}, {"epoch": 0})  # the retry starts from an empty directory
    assert sorted(p.name for p in root.iterdir()) == ["step_00000003"]
    assert not (root / "step_00000003" / "stale.distcp").exists()
    newer, _ = model_and_optimizer(1)
    manager.save(3, {"model": newer}, {}, {"epoch": 1})  # the same step again: replaced
    target = nn.Linear(3, 2)
    assert manager.load(manager.latest(), {"model": target}, {})["epoch"] == 1
    assert torch.equal(target.weight, newer.weight)


def test_save_logs_where_the_checkpoint_went(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model, _ = model_and_optimizer(0)
    with caplog.at_level(logging.INFO, logger="torchrec_gnn.train.checkpoint"):
        final = CheckpointManager(tmp_path).save(2, {"model": model}, {}, {"epoch": 0})
    messages = [r.getMessage() for r in caplog.records if r.name == "torchrec_gnn.train.checkpoint"]
    assert len(messages) == 1 and str(final) in messages[0] and "saved" in messages[0]


def test_load_errors_name_every_mismatch_and_the_cause(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    model, _ = model_and_optimizer(0)
    manager.save(4, {"model": model}, {}, {"epoch": 0, "config_fingerprint": "abc", "seed": 1})
    with pytest.raises(CheckpointError) as info:
        manager.load(manager.latest(), {"model": model}, {}, expect={"config_fingerprint": "xyz", "seed": 2})
    assert str(info.value).endswith(
        "step_00000004: written by another run: config_fingerprint 'abc' (this run: 'xyz'), seed 1 (this run: 2)")
    with pytest.raises(CheckpointError, match=r"cannot load checkpoint into this job \(KeyError: 'balancer'\)"):
        manager.load(manager.latest(), {"model": model}, {"balancer": nn.Linear(2, 1)})


def test_load_fills_a_torchrec_optimizer_whose_state_is_still_empty(tmp_path: Path) -> None:
    """A fresh KeyedOptimizer has no state until its ``init_state``; load must create it first."""

    def keyed(seed: int, trained: bool) -> Tuple[nn.Linear, KeyedOptimizerWrapper]:
        torch.manual_seed(seed)
        model = nn.Linear(3, 2)
        optimizer = KeyedOptimizerWrapper(dict(model.named_parameters()), lambda ps: torch.optim.Adam(ps, lr=0.1))
        if trained:
            model(torch.randn(4, 3)).sum().backward()
            optimizer.step()
        return model, optimizer

    manager = CheckpointManager(tmp_path)
    model, optimizer = keyed(0, trained=True)
    manager.save(1, {"model": model, "optimizer": optimizer}, {}, {"epoch": 0})
    fresh_model, fresh = keyed(1, trained=False)
    assert fresh.state_dict()["state"] == {}
    manager.load(manager.latest(), {"model": fresh_model, "optimizer": fresh}, {})
    saved, loaded = optimizer.state_dict()["state"]["weight"], fresh.state_dict()["state"]["weight"]
    assert torch.equal(loaded["exp_avg"], saved["exp_avg"]) and torch.equal(loaded["exp_avg_sq"], saved["exp_avg_sq"])


@dataclass
class RunningStats:
    """Plain Python state a replicated module may keep (not a tensor)."""

    count: int
    mean: float


class WithPythonState(nn.Module):
    """A replicated module whose extra state is a Python object."""

    def __init__(self, stats: RunningStats) -> None:
        super().__init__()
        self.stats = stats

    def get_extra_state(self) -> RunningStats:
        return self.stats

    def set_extra_state(self, state: RunningStats) -> None:
        self.stats = state


def test_replicated_modules_may_keep_python_state(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path)
    model, _ = model_and_optimizer(0)
    manager.save(1, {"model": model}, {"stats": WithPythonState(RunningStats(7, 0.25))}, {"epoch": 0})
    restored = WithPythonState(RunningStats(0, 0.0))
    manager.load(manager.latest(), {"model": model}, {"stats": restored})
    assert restored.stats == RunningStats(7, 0.25)


def test_rng_is_restored_only_from_a_same_size_run_that_saved_it(tmp_path: Path) -> None:
    """Another world size's per-rank RNG does not map onto this run; an older checkpoint without
    RNG files still loads. Either way the RNG is left as it was."""
    manager = CheckpointManager(tmp_path)
    model, _ = model_and_optimizer(0)
    torch.manual_seed(123)
    path = manager.save(3, {"model": model}, {}, {"epoch": 0})
    trainer = json.loads((path / TRAINER_FILE).read_text())
    (path / TRAINER_FILE).write_text(json.dumps({**trainer, "world_size": 2}))
    torch.manual_seed(999)
    expected = torch.rand(4)
    torch.manual_seed(999)
    manager.load(path, {"model": model}, {})
    assert torch.equal(torch.rand(4), expected)
    (path / TRAINER_FILE).write_text(json.dumps(trainer))
    (path / "rng_rank0.pt").unlink()
    torch.manual_seed(999)
    assert manager.load(path, {"model": model}, {})["step"] == 3
    assert torch.equal(torch.rand(4), expected)


def test_two_ranks_save_their_own_rng_and_resume_it(tmp_path: Path) -> None:
    """On 2 ranks (threads of this process) each rank writes its RNG file and the trainer state
    records the world size; a 2-rank load continues the saved random stream. (The threads share
    one CPU RNG, so this cannot tell the ranks' files apart.)"""
    manager = CheckpointManager(tmp_path)
    model, _ = model_and_optimizer(0)
    torch.manual_seed(123)
    on_threaded_ranks(2, lambda rank: manager.save(4, {"model": model}, {"balancer": nn.Linear(2, 1)}, {"epoch": 0}))
    expected = torch.rand(4)  # what the saved run draws next
    path = manager.latest()
    assert {"rng_rank0.pt", "rng_rank1.pt"} <= {p.name for p in path.iterdir()}
    assert json.loads((path / TRAINER_FILE).read_text())["world_size"] == 2
    torch.manual_seed(999)
    states = on_threaded_ranks(2, lambda rank: manager.load(path, {"model": nn.Linear(3, 2)}, {"balancer": nn.Linear(2, 1)}))
    assert [state["world_size"] for state in states] == [2, 2]
    assert torch.equal(torch.rand(4), expected)


def test_resume_latest_loads_this_runs_newest_and_refuses_an_unmappable_position(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep=2)
    model, optimizer = model_and_optimizer(0)
    with pytest.raises(CheckpointError, match=r"--resume: no complete checkpoint in"):
        resume_latest(manager, {"model": model}, {}, "abc", world_size=1)
    for step, in_epoch in ((4, 4), (8, 0)):
        manager.save(step, {"model": model}, {}, {"epoch": 1, "batch_in_epoch": in_epoch, "config_fingerprint": "abc"})
    other, _ = model_and_optimizer(1)
    state = resume_latest(manager, {"model": other}, {}, "abc", world_size=1)
    assert state["step"] == 8 and torch.equal(other.weight, model.weight)
    with pytest.raises(CheckpointError, match=r"config_fingerprint"):
        resume_latest(manager, {"model": other}, {}, "another run", world_size=1)
    # Written by 2 ranks: an epoch boundary maps to any world size, the middle of an epoch does not.
    trainer = manager.latest() / TRAINER_FILE
    trainer.write_text(json.dumps({**json.loads(trainer.read_text()), "world_size": 2}))
    assert resume_latest(manager, {"model": other}, {}, "abc", world_size=1)["batch_in_epoch"] == 0
    trainer.write_text(json.dumps({**json.loads(trainer.read_text()), "batch_in_epoch": 3}))
    with pytest.raises(CheckpointError, match=r"saved by 2 rank\(s\) in the middle of epoch 1; .* mapped to 1 rank\(s\). "
                                              r"Resume with --nproc_per_node=2"):
        resume_latest(manager, {"model": other}, {}, "abc", world_size=1)

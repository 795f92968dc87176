"""metrics.jsonl and TensorBoard: the same numbers, and no step logged twice after a resume."""

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from torchrec_gnn.train.run_log import METRICS_FILE, TENSORBOARD_DIR, RunLog, scalars


def board(run_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(run_dir / TENSORBOARD_DIR))
    events.Reload()
    return events


def test_scalars_are_every_finite_number_by_path() -> None:
    record = {"step": 3, "epoch": 0, "loss": 2.5, "losses": {"click": 0.5, "gfae": float("nan")},
              "eval": {"val": {"click": {"auc": 0.7, "count": 10}}}, "flag": True, "name": "x"}
    assert dict(scalars(record)) == {"epoch": 0.0, "loss": 2.5, "losses/click": 0.5, "eval/val/click/auc": 0.7,
                                     "eval/val/click/count": 10.0}


def test_resume_drops_the_records_after_its_step_and_tensorboard_gets_the_same_numbers(tmp_path: Path) -> None:
    log = RunLog(tmp_path, tensorboard=True)
    for step in range(1, 11):  # the interrupted run logged up to step 10, its checkpoint is at 6
        log.write({"step": step, "losses": {"click": 1.0 / step}})
        if step == 5:
            log.write({"step": 5, "eval": {"val": {"click": {"auc": 0.6}}}})
    log.close()
    log = RunLog(tmp_path, resume_step=6, tensorboard=True)
    for step in range(7, 9):
        log.write({"step": step, "losses": {"click": 2.0 / step}})
    log.close()
    records = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 5, 6, 7, 8]
    assert records[-1]["losses"]["click"] == pytest.approx(0.25)
    events = board(tmp_path)
    clicks = events.Scalars("losses/click")
    assert [e.step for e in clicks] == [1, 2, 3, 4, 5, 6, 7, 8]  # purged after 6, then continued
    assert clicks[-1].value == pytest.approx(0.25) and clicks[0].value == pytest.approx(1.0)
    assert [(e.step, round(e.value, 6)) for e in events.Scalars("eval/val/click/auc")] == [(5, 0.6)]


@pytest.mark.timeout(300)
def test_training_job_logs_losses_weights_and_validation_to_tensorboard(tmp_path: Path) -> None:
    from torchrec_gnn.recipes.train import main

    main(["--config", "configs/default.yaml", "--set", "data.preset=tiny", "--set", "loader.batch_size=256",
          "--set", "loader.num_workers=0", "--set", "train.plots=false", "--set", "train.tensorboard=true",
          "--set", "train.eval_every=2", "--max-steps", "4", "--output-dir", str(tmp_path)])
    records = [json.loads(line) for line in (tmp_path / METRICS_FILE).read_text().splitlines()]
    events = board(tmp_path)
    tags = set(events.Tags()["scalars"])
    assert {"loss", "losses/click", "task_weights/gfae", "eval/val/click/auc", "window/click/window_auc"} <= tags
    trained = [r for r in records if "losses" in r]
    assert [e.value for e in events.Scalars("losses/click")] == pytest.approx([r["losses"]["click"] for r in trained])
    assert [e.step for e in events.Scalars("eval/val/click/auc")] == [2, 4]

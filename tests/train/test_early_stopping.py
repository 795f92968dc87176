import math

import pytest

from torchrec_gnn.train.early_stopping import EarlyStopping


def test_patience_and_direction() -> None:
    stopper = EarlyStopping(patience=2, metric="auc")
    results = lambda a, b: {"click": {"auc": a}, "like": {"auc": b}, "stay": {"rmse": 3.0}}  # noqa: E731
    assert stopper.update(1, results(0.6, 0.8))  # mean 0.7
    assert not stopper.update(2, results(0.6, 0.7)) and not stopper.should_stop
    assert stopper.update(3, results(0.7, 0.8)) and stopper.best_step == 3 and stopper.bad_evaluations == 0
    assert not stopper.update(4, results(0.7, 0.8)) and not stopper.update(5, results(0.5, 0.5))
    assert stopper.should_stop and stopper.best == pytest.approx(0.75)

    lower = EarlyStopping(patience=1, metric="rmse")
    assert lower.update(1, {"stay": {"rmse": 3.0}}) and lower.update(2, {"stay": {"rmse": 2.5}})
    assert not lower.update(3, {"stay": {"rmse": 2.6}}) and lower.should_stop


def test_nan_tasks_are_left_out_and_state_round_trips() -> None:
    stopper = EarlyStopping(patience=3, metric="gauc")
    assert stopper.score({"a": {"gauc": math.nan}, "b": {"gauc": 0.6}}) == 0.6
    stopper.update(7, {"b": {"gauc": 0.6}})
    copy = EarlyStopping(patience=3, metric="gauc")
    copy.load_state_dict(stopper.state_dict())
    assert copy.state_dict() == {"best": 0.6, "best_step": 7, "bad_evaluations": 0}


def test_bad_arguments_fail_clearly() -> None:
    with pytest.raises(ValueError, match="patience must be >= 1"):
        EarlyStopping(0)
    with pytest.raises(ValueError, match="metric must be one of"):
        EarlyStopping(1, metric="mae")
    with pytest.raises(ValueError, match="no task reports 'auc'"):
        EarlyStopping(1).score({"stay": {"rmse": 1.0}})

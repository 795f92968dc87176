"""Early stopping on the validation split (the test split never chooses anything)."""

from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional

# metric -> True when higher is better
METRICS: Dict[str, bool] = {"auc": True, "gauc": True, "ne": False, "logloss": False, "rmse": False}


class EarlyStopping:
    """Track a validation score and say when it has stopped improving.

    The score is the mean of ``metric`` over the tasks that report it (e.g. the mean validation
    AUC of the binary tasks); NaN task values (a task without both classes) are left out.

    Args:
        patience (int): evaluations without improvement before stopping (>= 1).
        metric (str): ``"auc"``, ``"gauc"`` (higher is better), ``"ne"``, ``"logloss"`` or
            ``"rmse"`` (lower is better).
        min_delta (float): smallest change that counts as an improvement. Default 0.

    Example::

        stopper = EarlyStopping(patience=3, metric="auc")
        if stopper.update(step, val_metrics):   # True: a new best, save it
            ...
        if stopper.should_stop:
            ...
    """

    def __init__(self, patience: int, metric: str = "auc", min_delta: float = 0.0) -> None:
        if patience < 1:
            raise ValueError(f"EarlyStopping: patience must be >= 1, got {patience}")
        if metric not in METRICS:
            raise ValueError(f"EarlyStopping: metric must be one of {sorted(METRICS)}, got {metric!r}")
        self.patience, self.metric, self.min_delta = patience, metric, min_delta
        self.best: Optional[float] = None
        self.best_step: Optional[int] = None
        self.bad_evaluations = 0

    def score(self, results: Mapping[str, Mapping[str, float]]) -> float:
        """Mean of the metric over tasks; raises if no task reports it."""
        values = [m[self.metric] for m in results.values() if self.metric in m and not math.isnan(m[self.metric])]
        if not values:
            raise ValueError(f"EarlyStopping: no task reports {self.metric!r}; tasks and metrics: "
                             f"{ {task: sorted(m) for task, m in results.items()} }")
        return sum(values) / len(values)

    def update(self, step: int, results: Mapping[str, Mapping[str, float]]) -> bool:
        """Record the validation ``results`` (``{task: {metric: value}}``) of ``step``; True if
        they are the best so far."""
        score = self.score(results)
        higher = METRICS[self.metric]
        improved = self.best is None or (score > self.best + self.min_delta if higher else score < self.best - self.min_delta)
        if improved:
            self.best, self.best_step, self.bad_evaluations = score, step, 0
        else:
            self.bad_evaluations += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.bad_evaluations >= self.patience

    def state_dict(self) -> Dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad_evaluations": self.bad_evaluations}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.best_step, self.bad_evaluations = state["best"], state["best_step"], state["bad_evaluations"]

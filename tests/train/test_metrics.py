"""MultiTaskEvaluator and its metric functions against sklearn, numpy and brute force."""

import itertools
import json
import math
import warnings
from typing import Dict, Tuple

import numpy as np
import pytest
import torch
import torch.distributed as dist
from sklearn.metrics import log_loss, roc_auc_score
from torchrec.metrics.calibration import CalibrationMetric
from torchrec.metrics.metrics_config import RecTaskInfo
from torchrec.metrics.ne import NEMetric

from threaded_ranks import on_threaded_ranks
from torchrec_gnn.data.dataset import TaskSpec
from torchrec_gnn.train.metrics import (
    MultiTaskEvaluator,
    TrainingWindowMetrics,
    binary_log_loss,
    calibration,
    format_table,
    group_auc,
    normalized_entropy,
    roc_auc,
)

TASKS = [TaskSpec("click", "binary"), TaskSpec("like", "binary"), TaskSpec("stay", "regression")]


def brute_force_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """P(score_pos > score_neg) + 1/2 P(tie) over every positive/negative pair."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def sklearn_gauc(scores: np.ndarray, labels: np.ndarray, users: np.ndarray) -> Tuple[float, int, int]:
    """Per-user roc_auc_score weighted by impressions, single-class users skipped."""
    total, weight, used, skipped = 0.0, 0, 0, 0
    for user in np.unique(users):
        rows = users == user
        if len(np.unique(labels[rows])) < 2:
            skipped += 1
            continue
        total += rows.sum() * roc_auc_score(labels[rows], scores[rows])
        weight += rows.sum()
        used += 1
    return total / weight, used, skipped


def make_data(n: int = 500, seed: int = 0, num_users: int = 100) -> Dict[str, torch.Tensor]:
    """Three tasks (two binary, one regression), ties in the scores, ~20% missing labels."""
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(0, num_users, (n,), generator=g) * 1000 + 7  # sparse, large ids
    outputs = torch.randn(n, 3, generator=g)
    outputs[:, :2] = torch.round(outputs[:, :2] * 4) / 4  # many tied scores
    click = (torch.rand(n, generator=g) < torch.sigmoid(outputs[:, 0])).float()
    like = (torch.rand(n, generator=g) < 0.3).float()
    stay = torch.expm1(outputs[:, 2] + 0.5 * torch.randn(n, generator=g)).clamp(min=0)
    labels = torch.stack([click, like, stay], dim=1)
    mask = torch.rand(n, 3, generator=g) > 0.2
    return {"outputs": outputs, "labels": labels, "mask": mask, "users": users}


def reference_metrics(data: Dict[str, torch.Tensor]) -> Dict[str, Dict[str, float]]:
    """The metrics computed one task at a time with sklearn and numpy."""
    outputs, labels, mask, users = (data[k].numpy() for k in ("outputs", "labels", "mask", "users"))
    result = {}
    for t, task in enumerate(TASKS):
        rows = mask[:, t]
        out, lab = outputs[rows, t].astype(np.float64), labels[rows, t].astype(np.float64)
        if task.kind == "binary":
            gauc, used, skipped = sklearn_gauc(out, lab, users[rows])
            rate = lab.mean()
            entropy = -rate * np.log(rate) - (1 - rate) * np.log(1 - rate)
            logloss = log_loss(lab, 1 / (1 + np.exp(-out)), labels=[0, 1])
            result[task.name] = {
                "auc": roc_auc_score(lab, out),
                "gauc": gauc,
                "logloss": logloss,
                "ne": logloss / entropy,
                "calibration": (1 / (1 + np.exp(-out))).sum() / lab.sum(),
                "count": int(rows.sum()),
                "gauc_users": used,
                "gauc_users_skipped": skipped,
            }
        else:
            error = np.maximum(np.expm1(out), 0) - lab
            result[task.name] = {
                "rmse": np.sqrt(np.mean(error**2)),
                "mae": np.mean(np.abs(error)),
                "count": int(rows.sum()),
            }
    return result


def torchrec_lifetime_metrics(data: Dict[str, torch.Tensor], world_size: int = 1,
                              rank: int = 0) -> Dict[str, Dict[str, float]]:
    """NE and calibration of the binary tasks from ``torchrec.metrics`` (lifetime values, reduced
    over the ranks when a process group exists): missing labels get weight 0."""
    binary = [(t, task.name) for t, task in enumerate(TASKS) if task.kind == "binary"]
    infos = [RecTaskInfo(name=name, label_name=name, prediction_name=name, weight_name=name) for _, name in binary]
    n = max(data["users"].numel(), 1)
    metrics = [cls(world_size=world_size, my_rank=rank, batch_size=n, tasks=infos, window_size=n * world_size,
                   compute_on_all_ranks=True)
               for cls in (NEMetric, CalibrationMetric)]
    predictions = {name: torch.sigmoid(data["outputs"][:, t].double()) for t, name in binary}
    labels = {name: data["labels"][:, t].double() for t, name in binary}
    weights = {name: data["mask"][:, t].double() for t, name in binary}
    for metric in metrics:
        metric.update(predictions=predictions, labels=labels, weights=weights)
    values = {k: float(v) for metric in metrics for k, v in metric.compute().items()}
    return {name: {"ne": values[f"ne-{name}|lifetime_ne"], "calibration": values[f"calibration-{name}|lifetime_calibration"]}
            for _, name in binary}


def assert_metrics_equal(actual, expected, rel: float = 1e-9) -> None:
    assert actual.keys() == expected.keys()
    for task in expected:
        assert actual[task].keys() == expected[task].keys(), task
        for name, value in expected[task].items():
            assert actual[task][name] == pytest.approx(value, rel=rel, abs=1e-12, nan_ok=True), (task, name)


def evaluate(data: Dict[str, torch.Tensor], batch_size: int = 10**9) -> Dict[str, Dict[str, float]]:
    evaluator = MultiTaskEvaluator(TASKS)
    for start in range(0, data["users"].numel(), batch_size):
        rows = slice(start, start + batch_size)
        evaluator.update(data["outputs"][rows], data["labels"][rows], data["mask"][rows], data["users"][rows])
    return evaluator.compute()


@pytest.mark.parametrize("seed", range(6))
def test_auc_matches_sklearn_and_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    scores = np.round(rng.normal(size=n), 1).astype(np.float32)  # ties
    labels = (rng.random(n) < 0.4).astype(np.int64)
    labels[:2] = [0, 1]
    auc = roc_auc(scores, labels)
    assert auc == pytest.approx(roc_auc_score(labels, scores), rel=1e-12)
    assert auc == pytest.approx(brute_force_auc(scores, labels), rel=1e-12)


def test_auc_all_tied_is_half_and_one_class_is_nan() -> None:
    assert roc_auc(np.zeros(6), np.array([0, 1, 0, 1, 1, 0])) == 0.5
    assert roc_auc(np.array([0.875, 0.1]), np.array([1, 0])) == 1.0
    assert math.isnan(roc_auc(np.array([0.1, 0.5]), np.array([1, 1])))
    assert math.isnan(roc_auc(np.zeros(0), np.zeros(0)))


@pytest.mark.parametrize("seed", range(4))
def test_group_auc_matches_per_user_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    users = rng.integers(0, 60, n) * 13 - 100  # negative and sparse ids are fine
    scores = np.round(rng.normal(size=n), 1)
    labels = (rng.random(n) < 0.35).astype(np.int64)
    gauc, used, skipped = group_auc(scores, labels, users)
    expected, expected_used, expected_skipped = sklearn_gauc(scores, labels, users)
    assert gauc == pytest.approx(expected, rel=1e-12)
    assert (used, skipped) == (expected_used, expected_skipped)
    assert skipped > 0 and used + skipped == len(np.unique(users))


def test_group_auc_docstring_example_and_no_usable_user() -> None:
    assert group_auc(np.array([0.2, 0.9, 0.5, 0.1]), np.array([0, 1, 1, 1]), np.array([7, 7, 3, 3])) == (1.0, 1, 1)
    gauc, used, skipped = group_auc(np.array([0.2, 0.9]), np.array([1, 0]), np.array([1, 2]))
    assert math.isnan(gauc) and (used, skipped) == (0, 2)


def test_binary_log_loss_matches_sklearn_and_is_stable() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=200) * 3
    labels = (rng.random(200) < 0.5).astype(np.int64)
    assert binary_log_loss(logits, labels) == pytest.approx(log_loss(labels, 1 / (1 + np.exp(-logits))), rel=1e-9)
    # Logits far past float's sigmoid range: exact from the logits, no inf and no log(0).
    assert binary_log_loss(np.array([-800.0, 800.0]), np.array([1, 0])) == pytest.approx(800.0)


def test_ne_and_calibration_by_hand_and_against_torchrec() -> None:
    # Predicting the base rate gives NE 1 and calibration 1; a perfect-ish model NE near 0.
    labels = np.array([0, 0, 0, 1])
    base = np.full(4, math.log(0.25 / 0.75))
    assert normalized_entropy(base, labels) == pytest.approx(1.0)
    assert calibration(base, labels) == pytest.approx(1.0)
    assert normalized_entropy(np.array([-20.0, -20.0, -20.0, 20.0]), labels) < 1e-7
    assert calibration(np.zeros(4), labels) == pytest.approx(2.0)  # predicts 4 * 0.5 for 1 positive
    assert math.isnan(normalized_entropy(np.zeros(3), np.ones(3))) and math.isnan(calibration(np.zeros(3), np.zeros(3)))
    data = make_data(seed=4)
    ours = evaluate(data)
    for task, expected in torchrec_lifetime_metrics(data).items():
        assert ours[task]["ne"] == pytest.approx(expected["ne"], rel=1e-6), task
        assert ours[task]["calibration"] == pytest.approx(expected["calibration"], rel=1e-6), task


def window_reference(batches, tasks=TASKS) -> Dict[str, Dict[str, float]]:
    """NE and AUC of each binary task over ``batches`` [(outputs, labels)] computed by hand."""
    outputs = torch.cat([o for o, _ in batches]).double().numpy()
    labels = torch.cat([y for _, y in batches]).double().numpy()
    result = {}
    for t, task in enumerate(tasks):
        if task.kind != "binary":
            continue
        present = np.isfinite(labels[:, t])
        out, lab = outputs[present, t], labels[present, t]
        result[task.name] = {"window_ne": normalized_entropy(out, lab), "window_auc": roc_auc_score(lab, out)}
    return result


def window_batches(seed: int, num_batches: int, batch_size: int):
    """(outputs, labels) per batch; missing labels are NaN, as the model hands them over. Scores
    are untied: torchrec's AUC orders tied scores arbitrarily where ours averages their ranks."""
    data = make_data(n=num_batches * batch_size, seed=seed)
    labels = data["labels"].masked_fill(~data["mask"], float("nan"))
    outputs = data["outputs"] + 1e-3 * torch.randn(data["outputs"].shape, generator=torch.Generator().manual_seed(seed))
    return [(outputs[i * batch_size:(i + 1) * batch_size], labels[i * batch_size:(i + 1) * batch_size])
            for i in range(num_batches)]


def test_training_window_metrics_cover_the_latest_batches() -> None:
    batches = window_batches(seed=2, num_batches=7, batch_size=40)
    window = TrainingWindowMetrics(TASKS, batch_size=40, window_size=120)
    for outputs, labels in batches:
        window.update(outputs, labels)
    got = window.compute()
    assert set(got) == {"click", "like"}  # regression tasks have neither
    expected = window_reference(batches[-3:])  # 120 examples = the last 3 batches
    everything = window_reference(batches)
    for task, values in expected.items():
        for name, value in values.items():
            assert got[task][name] == pytest.approx(value, rel=1e-5), (task, name)
        assert got[task]["window_ne"] != pytest.approx(everything[task]["window_ne"], rel=1e-5)


def test_evaluator_matches_reference() -> None:
    data = make_data()
    metrics = evaluate(data)
    expected = reference_metrics(data)
    assert_metrics_equal(metrics, expected)
    assert expected["click"]["gauc_users_skipped"] > 0, "the data should contain single-class users"
    assert all(isinstance(metrics[t.name]["count"], int) for t in TASKS)
    json.dumps(metrics)  # JSON-serialisable


def test_regression_uses_original_scale_clamped_at_zero() -> None:
    evaluator = MultiTaskEvaluator([TaskSpec("stay", "regression")])
    outputs = torch.tensor([[math.log1p(3.0)], [-2.0], [0.0]])  # predictions 3, 0 (clamped), 0
    labels = torch.tensor([[5.0], [1.0], [0.0]])
    evaluator.update(outputs, labels, None, torch.tensor([1, 2, 3]))
    metrics = evaluator.compute()["stay"]
    assert metrics["mae"] == pytest.approx((2 + 1 + 0) / 3, rel=1e-6)
    assert metrics["rmse"] == pytest.approx(math.sqrt((4 + 1 + 0) / 3), rel=1e-6)
    assert metrics["count"] == 3


def test_masked_and_nan_labels_are_ignored() -> None:
    data = make_data(seed=1)
    expected = evaluate(data)
    # Garbage under the mask changes nothing.
    noisy = dict(data)
    noisy["outputs"] = torch.where(data["mask"], data["outputs"], torch.full_like(data["outputs"], 1e6))
    noisy["labels"] = torch.where(data["mask"], data["labels"], torch.full_like(data["labels"], 0.5))
    assert_metrics_equal(evaluate(noisy), expected, rel=0)
    # NaN labels with no mask are the same as the mask.
    nan_labels = torch.where(data["mask"], data["labels"], torch.full_like(data["labels"], float("nan")))
    evaluator = MultiTaskEvaluator(TASKS)
    evaluator.update(data["outputs"], nan_labels, None, data["users"])
    assert_metrics_equal(evaluator.compute(), expected, rel=0)
    # A NaN label under a True mask entry is still missing.
    evaluator.reset()
    evaluator.update(data["outputs"], nan_labels, torch.ones_like(data["mask"]), data["users"])
    assert_metrics_equal(evaluator.compute(), expected, rel=0)


def test_several_updates_equal_one_big_update() -> None:
    data = make_data(seed=2)
    one = evaluate(data)
    for batch_size in (1, 7, 64):
        assert_metrics_equal(evaluate(data, batch_size), one)


def test_reset_forgets_batches() -> None:
    data, other = make_data(seed=3), make_data(seed=4)
    evaluator = MultiTaskEvaluator(TASKS)
    evaluator.update(other["outputs"], other["labels"], other["mask"], other["users"])
    evaluator.reset()
    assert evaluator.num_examples == 0
    evaluator.update(data["outputs"], data["labels"], data["mask"], data["users"])
    assert_metrics_equal(evaluator.compute(), evaluate(data), rel=0)


def test_one_class_missing_task_and_empty_evaluator_give_nan() -> None:
    evaluator = MultiTaskEvaluator(TASKS)
    outputs = torch.randn(4, 3)
    labels = torch.tensor([[1.0, 0, 1], [1, 0, 2], [1, 0, 3], [1, 0, 4]])
    mask = torch.tensor([[True, False, True]] * 4)
    evaluator.update(outputs, labels, mask, torch.tensor([0, 0, 1, 1]))
    metrics = evaluator.compute()
    assert math.isnan(metrics["click"]["auc"]) and math.isnan(metrics["click"]["gauc"])
    assert (metrics["click"]["gauc_users"], metrics["click"]["gauc_users_skipped"]) == (0, 2)
    assert math.isfinite(metrics["click"]["logloss"]) and metrics["click"]["count"] == 4
    assert metrics["like"]["count"] == 0
    assert math.isnan(metrics["like"]["auc"]) and math.isnan(metrics["like"]["logloss"])
    assert metrics["stay"]["count"] == 4 and math.isfinite(metrics["stay"]["rmse"])

    empty = MultiTaskEvaluator(TASKS).compute()
    assert [empty[t.name]["count"] for t in TASKS] == [0, 0, 0]
    assert math.isnan(empty["click"]["auc"]) and math.isnan(empty["stay"]["rmse"])


def test_non_finite_outputs_give_nan_metrics() -> None:
    data = make_data(seed=5)
    data["outputs"][3, 0] = float("nan")
    data["mask"][3, 0] = True
    metrics = evaluate(data)
    assert all(math.isnan(metrics["click"][m]) for m in ("auc", "gauc", "logloss"))
    assert metrics["click"]["count"] == int(data["mask"][:, 0].sum())
    assert math.isfinite(metrics["like"]["auc"]), "other tasks are unaffected"


def test_update_and_compute_errors_name_the_problem() -> None:
    evaluator = MultiTaskEvaluator(TASKS)
    with pytest.raises(ValueError, match=r"outputs must have shape \(B, T\) = \(4, 3\), got \(4, 2\)"):
        evaluator.update(torch.zeros(4, 2), torch.zeros(4, 3), None, torch.arange(4))
    with pytest.raises(ValueError, match="label_mask must be bool, got torch.float32"):
        evaluator.update(torch.zeros(4, 3), torch.zeros(4, 3), torch.ones(4, 3), torch.arange(4))
    with pytest.raises(ValueError, match=r"user_ids must be a \(B,\) integer tensor"):
        evaluator.update(torch.zeros(4, 3), torch.zeros(4, 3), None, torch.zeros(4))
    evaluator.update(torch.zeros(2, 3), torch.tensor([[0.0, 1, 1], [0.7, 0, 1]]), None, torch.arange(2))
    with pytest.raises(ValueError, match=r"binary task 'click' needs 0/1 labels, found \[0\.7"):
        evaluator.compute()
    with pytest.raises(ValueError, match="unique names"):
        MultiTaskEvaluator([TaskSpec("a", "binary"), TaskSpec("a", "regression")])


def test_format_table_shows_every_number() -> None:
    metrics = evaluate(make_data(seed=6))
    table = format_table(metrics, title="val")
    lines = table.splitlines()
    assert lines[0] == "val"
    header = lines[1].split()
    assert header[:4] == ["task", "auc", "gauc", "logloss"] and "rmse" in header and "count" in header
    assert f"{metrics['click']['auc']:.4f}" in table and f"{metrics['stay']['rmse']:.4f}" in table
    assert str(metrics["like"]["count"]) in table and str(metrics["click"]["gauc_users_skipped"]) in table
    assert len({len(line) for line in lines[1:3]}) == 1, "header and rule have the same width"

    nested = format_table({"baseline": metrics, "gnn": {"click": {"auc": 0.81234, "count": 9}}})
    rows = nested.splitlines()
    assert rows[0].split()[:3] == ["split", "task", "auc"]
    assert any(r.startswith("gnn") and "0.8123" in r for r in rows)
    assert sum(r.startswith("baseline") for r in rows) == len(TASKS)
    assert "nan" in format_table({"click": {"auc": float("nan")}})


def test_single_examples_and_single_classes() -> None:
    """The smallest inputs each metric defines, and the ones it must call undefined."""
    from torchrec_gnn.train.metrics import _regression_metrics, binary_log_loss, calibration, group_auc, normalized_entropy

    assert binary_log_loss(np.array([0.0]), np.array([1.0])) == pytest.approx(math.log(2.0))
    assert math.isnan(binary_log_loss(np.array([]), np.array([])))
    gauc, used, skipped = group_auc(np.array([0.3]), np.array([1]), np.array([5]))
    assert math.isnan(gauc) and (used, skipped) == (0, 1)  # one example: one single-class group
    assert math.isnan(normalized_entropy(np.array([0.2, -1.0]), np.array([0.0, 0.0])))  # no positive: no entropy
    assert math.isnan(normalized_entropy(np.array([0.2, -1.0]), np.array([1.0, 1.0])))
    assert calibration(np.array([0.0, 0.0]), np.array([1.0, 0.0])) == pytest.approx(1.0)  # 0.5 + 0.5 over 1
    one = _regression_metrics(np.array([math.log1p(3.0)]), np.array([1.0]))
    assert one == pytest.approx({"rmse": 2.0, "mae": 2.0, "count": 1})
    assert math.isnan(_regression_metrics(np.array([]), np.array([]))["mae"])


def test_group_auc_keeps_tied_scores_of_neighbouring_groups_apart() -> None:
    """User 1's top score equals user 2's lowest: each user still ranks only its own scores."""
    scores, labels, users = np.array([0.1, 0.5, 0.5, 0.9]), np.array([0, 1, 0, 1]), np.array([1, 1, 2, 2])
    assert group_auc(scores, labels, users) == (1.0, 2, 0)
    assert group_auc(np.zeros(0), np.zeros(0), np.zeros(0)) == pytest.approx((math.nan, 0, 0), nan_ok=True)


def test_undefined_metrics_raise_no_numpy_warnings() -> None:
    """Single-class users, one-class tasks and empty inputs give NaN quietly (no RuntimeWarning
    in every evaluation log)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gauc, used, skipped = group_auc(np.array([0.2, 0.9, 0.4]), np.array([1, 1, 0]), np.array([1, 1, 2]))
        assert math.isnan(gauc) and (used, skipped) == (0, 2)
        assert math.isnan(roc_auc(np.array([0.1, 0.3]), np.array([0, 0])))
        assert math.isnan(normalized_entropy(np.zeros(0), np.zeros(0)))
        metrics = evaluate(make_data(n=60, seed=7))
    assert metrics["click"]["gauc_users_skipped"] > 0


def test_diverged_task_reports_the_same_metrics_all_nan_but_count() -> None:
    """A task with a non-finite output has the same keys as a healthy one (tables and loggers
    need no special case): every value NaN but the count, and no GAUC user."""
    data = make_data(n=200, seed=5)
    healthy = evaluate(data)
    data["outputs"][0, :] = float("inf")
    data["mask"][0, :] = True
    diverged = evaluate(data)
    for task in TASKS:
        values = diverged[task.name]
        assert values.keys() == healthy[task.name].keys(), task.name
        assert values["count"] == int(data["mask"][:, TASKS.index(task)].sum())
        counts = {"count", "gauc_users", "gauc_users_skipped"}
        assert all(math.isnan(v) for k, v in values.items() if k not in counts), values
    assert (diverged["click"]["gauc_users"], diverged["click"]["gauc_users_skipped"]) == (0, 0)


def test_update_errors_name_every_wrong_field_at_once() -> None:
    evaluator = MultiTaskEvaluator(TASKS)
    with pytest.raises(ValueError) as info:
        evaluator.update(torch.zeros(4, 3), torch.zeros(4, 2), torch.ones(3, 3, dtype=torch.bool), torch.arange(4))
    assert str(info.value) == ("MultiTaskEvaluator.update: labels must have shape (B, T) = (4, 3), got (4, 2); "
                               "label_mask must have shape (B, T) = (4, 3), got (3, 3)")
    with pytest.raises(ValueError, match=r"user_ids must be a \(B,\) integer tensor, got \(\) torch.int64"):
        evaluator.update(torch.zeros(1, 3), torch.zeros(1, 3), None, torch.tensor(5))  # a scalar id
    assert evaluator.num_examples == 0


def test_update_keeps_its_own_copy_of_the_batch() -> None:
    """A pipeline refilling the batch's buffers in place after update changes nothing."""
    data = make_data(n=120, seed=8)
    expected = evaluate(data)
    outputs, labels, mask, users = (data[k].clone() for k in ("outputs", "labels", "mask", "users"))
    evaluator = MultiTaskEvaluator(TASKS)
    evaluator.update(outputs, labels, mask, users)
    for buffer in (outputs, labels, users):
        buffer.zero_()
    assert_metrics_equal(evaluator.compute(), expected, rel=0)


@pytest.mark.parametrize("num_bad, shown", [(5, "0.1, 0.2, 0.3, 0.4, 0.5"), (6, "0.1, 0.2, 0.3, 0.4, 0.5, ...")])
def test_bad_label_error_lists_at_most_five_values(num_bad: int, shown: str) -> None:
    evaluator = MultiTaskEvaluator([TaskSpec("click", "binary")])
    labels = torch.tensor([[0.1 * (i + 1)] for i in range(num_bad)] + [[1.0]])
    evaluator.update(torch.zeros(num_bad + 1, 1), labels, None, torch.arange(num_bad + 1))
    with pytest.raises(ValueError) as info:
        evaluator.compute()
    assert str(info.value).endswith(f"binary task 'click' needs 0/1 labels, found [{shown}]")


def test_training_window_metrics_without_binary_tasks_and_with_a_small_window() -> None:
    regression_only = TrainingWindowMetrics([TaskSpec("stay", "regression")], batch_size=4, window_size=8)
    regression_only.update(torch.zeros(4, 1), torch.ones(4, 1))
    assert regression_only.compute() == {}
    batches = window_batches(seed=2, num_batches=3, batch_size=40)
    window = TrainingWindowMetrics(TASKS, batch_size=40, window_size=10)  # raised to one batch
    for outputs, labels in batches:
        window.update(outputs, labels)
    got, expected = window.compute(), window_reference(batches[-1:])
    for task, values in expected.items():
        for name, value in values.items():
            assert got[task][name] == pytest.approx(value, rel=1e-5), (task, name)


def test_format_table_exact_layout() -> None:
    """Names left-aligned, numbers right-aligned, a missing metric blank (no trailing spaces),
    None as "-", booleans and strings as they are, unknown metrics after the known ones."""
    metrics = {"click": {"auc": 0.5, "count": 3, "window_auc": None, "ok": True}, "stay": {"rmse": 1.25, "note": "x"}}
    assert format_table(metrics).splitlines() == [
        "task      auc    rmse  count  window_auc    ok  note",
        "-----  ------  ------  -----  ----------  ----  ----",
        "click  0.5000              3           -  True",
        "stay           1.2500                              x",
    ]
    assert format_table({"val": {"click": {"auc": 0.71, "count": 812}}}, title="epoch 3").splitlines() == [
        "epoch 3",
        "split  task      auc  count",
        "-----  -----  ------  -----",
        "val    click  0.7100    812",
    ]


@pytest.mark.parametrize("split", ["shared_users", "rank_1_empty"])
def test_compute_on_two_ranks_returns_the_metrics_of_all_examples(split: str) -> None:
    """Every rank gets the single-process metrics of both ranks' examples; a user seen on both
    ranks is one GAUC group, and a rank without examples contributes nothing."""
    data = make_data(n=300, seed=11, num_users=30)
    expected = evaluate(data)
    row = torch.arange(300)

    def rank_metrics(rank: int) -> Dict[str, Dict[str, float]]:
        keep = row % 2 == rank if split == "shared_users" else torch.full((300,), rank == 0)
        evaluator = MultiTaskEvaluator(TASKS)
        if keep.any():
            evaluator.update(data["outputs"][keep], data["labels"][keep], data["mask"][keep], data["users"][keep])
        return evaluator.compute()

    for metrics in on_threaded_ranks(2, rank_metrics):
        assert_metrics_equal(metrics, expected, rel=1e-12)


def test_compute_gathers_over_its_process_group_only() -> None:
    """Ranks 0 and 1 evaluate together in one group, rank 2 alone in another: each group's
    ranks get the metrics of that group's examples only."""
    data = make_data(n=300, seed=12)
    thirds = [{k: v[i::3] for k, v in data.items()} for i in range(3)]
    pair = {k: torch.cat([thirds[0][k], thirds[1][k]]) for k in data}
    expected = [evaluate(pair), evaluate(pair), evaluate(thirds[2])]

    def rank_metrics(rank: int) -> Dict[str, Dict[str, float]]:
        groups = [dist.new_group([0, 1]), dist.new_group([2])]  # collective: every rank creates both
        evaluator = MultiTaskEvaluator(TASKS, process_group=groups[rank // 2])
        third = thirds[rank]
        evaluator.update(third["outputs"], third["labels"], third["mask"], third["users"])
        return evaluator.compute()

    for rank, metrics in enumerate(on_threaded_ranks(3, rank_metrics)):
        assert_metrics_equal(metrics, expected[rank], rel=1e-12)


def test_training_window_metrics_on_two_ranks_cover_both_ranks_latest_batches() -> None:
    """The window (raised to one batch per rank) holds every rank's latest batch; both ranks
    compute the same values."""
    batches = window_batches(seed=3, num_batches=4, batch_size=40)  # rank r takes batches r, r + 2

    def rank_window(rank: int) -> Dict[str, Dict[str, float]]:
        window = TrainingWindowMetrics(TASKS, batch_size=40, window_size=10, world_size=2, rank=rank)
        for outputs, labels in batches[rank::2]:
            window.update(outputs, labels)
        return window.compute()

    expected = window_reference(batches[2:])  # the last batch of each rank
    for got in on_threaded_ranks(2, rank_window):
        for task, values in expected.items():
            for name, value in values.items():
                assert got[task][name] == pytest.approx(value, rel=1e-5), (task, name)


def test_repr_names_the_tasks_and_the_examples_held() -> None:
    evaluator = MultiTaskEvaluator(TASKS)
    evaluator.update(torch.zeros(3, 3), torch.zeros(3, 3), None, torch.arange(3))
    assert repr(evaluator) == "MultiTaskEvaluator(tasks=[click:binary, like:binary, stay:regression], examples=3)"

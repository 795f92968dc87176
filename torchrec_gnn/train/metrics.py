"""Evaluation metrics of the multi-task ranker: exact AUC, GAUC, log loss, NE, calibration, RMSE
and MAE per task, and TorchRec's windowed training metrics.

:class:`MultiTaskEvaluator` accumulates the head outputs of an evaluation pass and computes,
for every task of the ranker::

    binary      auc, gauc, logloss, ne, calibration, count, gauc_users, gauc_users_skipped
    regression  rmse, mae, count

Notation: B examples in a batch, T tasks, N examples accumulated over the pass.

* ``auc``: exact ROC AUC (no bins), the Mann-Whitney statistic with tied scores given their
  average rank (a tied positive/negative pair counts 1/2), so it equals
  ``sklearn.metrics.roc_auc_score``.
* ``gauc``: group AUC, the AUC of every user's impressions weighted by the user's number of
  labelled impressions, ``sum_u n_u * auc_u / sum_u n_u``. Users whose labels are all one
  class have no AUC: they are left out and counted in ``gauc_users_skipped``; ``gauc_users``
  counts the users that took part.
* ``logloss``: mean binary cross-entropy of ``sigmoid(output)`` against the 0/1 label.
* ``ne``: normalized entropy, ``logloss / H(p)`` with ``H(p) = -p log p - (1-p) log(1-p)`` the
  entropy of the evaluated labels' positive rate ``p``: the log loss relative to predicting the
  base rate for everyone (< 1 is better than that constant), as ``torchrec.metrics.NEMetric``.
* ``calibration``: ``sum(sigmoid(output)) / sum(label)``, predicted over actual positives (1 is
  calibrated, > 1 over-predicts), as ``torchrec.metrics.CalibrationMetric``.
* ``rmse`` / ``mae``: on the label's ORIGINAL scale. Regression heads predict ``log1p(label)``
  (see :func:`torchrec_gnn.modules.heads.task_losses`), so the prediction compared to the
  label is ``max(expm1(output), 0)``.
* ``count``: examples with a label for the task (an ``int``).

A metric that is undefined is ``float("nan")`` (JSON writes it as ``NaN``, and the value stays a
float so tables and loggers need no special case): ``auc`` when the task's labels are all one
class, ``gauc`` when no user has both classes, every metric of a task with no label, and every
metric but ``count`` of a task whose outputs hold a non-finite value (a diverged model).

The computation is vectorised with sorts and ``np.bincount`` (no Python loop over examples or
users): a binary task of 1M examples from 100k users takes about a second on one CPU core.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist

from torchrec_gnn.data.dataset import TaskSpec

Metrics = Dict[str, Dict[str, float]]

# Column order of format_table; metrics not listed follow in first-seen order.
_METRIC_ORDER = ("auc", "gauc", "logloss", "ne", "calibration", "rmse", "mae", "count", "gauc_users", "gauc_users_skipped")


def _grouped_auc(scores: np.ndarray, positive: np.ndarray, groups: np.ndarray) -> Tuple[np.ndarray, ...]:
    """Mann-Whitney AUC of every group at once, with one lexsort.

    Args:
        scores (ndarray): (N,) scores (higher = more likely positive).
        positive (ndarray): (N,) bool, the 0/1 labels.
        groups (ndarray): (N,) int64 group id of each example (e.g. the user).

    Returns:
        Tuple[ndarray, ndarray, ndarray]: per distinct group (in increasing id order) the
        number of positives (G,), of negatives (G,) and the AUC (G,) float64, NaN where the
        group has a single class.
    """
    n = scores.shape[0]
    order = np.lexsort((scores, groups))  # by group, then by score inside the group
    s, g, p = scores[order], groups[order], positive[order]
    group_start = np.ones(n, dtype=bool)
    group_start[1:] = g[1:] != g[:-1]
    tie_start = group_start.copy()  # a tie run never crosses a group boundary
    tie_start[1:] |= s[1:] != s[:-1]
    group_id = np.cumsum(group_start) - 1  # (N,) 0..G-1
    tie_id = np.cumsum(tie_start) - 1  # (N,)
    first = np.flatnonzero(tie_start)  # (R,) first position of every tie run
    last = np.append(first[1:], n) - 1  # (R,) last position
    # Average 1-based rank inside the group: tied scores share the mean of their positions.
    rank = (first + last)[tie_id] / 2.0 + 1.0 - np.flatnonzero(group_start)[group_id]  # (N,)
    num_groups = int(group_id[-1]) + 1 if n else 0
    num_pos = np.bincount(group_id, weights=p, minlength=num_groups)  # (G,) float64
    num_neg = np.bincount(group_id, minlength=num_groups) - num_pos
    pos_rank_sum = np.bincount(group_id, weights=np.where(p, rank, 0.0), minlength=num_groups)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (pos_rank_sum - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg)
    auc[(num_pos == 0) | (num_neg == 0)] = np.nan
    return num_pos.astype(np.int64), num_neg.astype(np.int64), auc


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact ROC AUC with ties as the Mann-Whitney statistic (average ranks).

    Args:
        scores (ndarray): (N,) scores or logits.
        labels (ndarray): (N,) 0/1 labels.

    Returns:
        float: the AUC, ``nan`` if the labels are all one class (or N = 0).

    Example::

        roc_auc(np.array([0.1, 0.4, 0.4, 0.8]), np.array([0, 0, 1, 1]))  # 0.875
    """
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(labels) > 0.5
    if scores.size == 0:
        return float("nan")
    _, _, auc = _grouped_auc(scores, positive, np.zeros(scores.shape[0], dtype=np.int64))
    return float(auc[0])


def group_auc(scores: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> Tuple[float, int, int]:
    """GAUC: per-group AUC weighted by the group's size; single-class groups are skipped.

    Args:
        scores (ndarray): (N,) scores or logits.
        labels (ndarray): (N,) 0/1 labels.
        groups (ndarray): (N,) integer group ids (e.g. user ids).

    Returns:
        Tuple[float, int, int]: ``(gauc, used, skipped)``: the weighted mean AUC (``nan`` when
        no group has both classes), the number of groups that took part and the number of
        single-class groups left out.

    Example::

        group_auc(np.array([0.2, 0.9, 0.5, 0.1]), np.array([0, 1, 1, 1]), np.array([7, 7, 3, 3]))
        # (1.0, 1, 1): user 7 has AUC 1 over 2 impressions, user 3 has only positives
    """
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(labels) > 0.5
    if scores.size == 0:
        return float("nan"), 0, 0
    num_pos, num_neg, auc = _grouped_auc(scores, positive, np.asarray(groups, dtype=np.int64))
    used = ~np.isnan(auc)
    weights = (num_pos + num_neg)[used].astype(np.float64)
    gauc = float((weights * auc[used]).sum() / weights.sum()) if used.any() else float("nan")
    return gauc, int(used.sum()), int((~used).sum())


def binary_log_loss(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy of ``sigmoid(logits)``, computed stably from the logits.

    Args:
        logits (ndarray): (N,) logits.
        labels (ndarray): (N,) 0/1 labels.

    Returns:
        float: the mean loss, ``nan`` if N = 0.
    """
    x, y = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if x.size == 0:
        return float("nan")
    return float(np.mean(np.logaddexp(0.0, x) - y * x))  # -y log s(x) - (1-y) log(1-s(x))


def normalized_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """NE: the mean log loss over the entropy of the labels' positive rate (TorchRec's NE).

    Args:
        logits (ndarray): (N,) logits.
        labels (ndarray): (N,) 0/1 labels.

    Returns:
        float: the NE, ``nan`` if N = 0 or the labels are all one class (entropy 0).

    Example::

        normalized_entropy(np.zeros(4), np.array([0, 0, 1, 1]))  # 1.0: the base rate 0.5 predicted
    """
    rate = float(np.mean(labels, dtype=np.float64)) if np.size(labels) else math.nan
    if not 0.0 < rate < 1.0:
        return float("nan")
    entropy = -rate * math.log(rate) - (1.0 - rate) * math.log(1.0 - rate)
    return binary_log_loss(logits, labels) / entropy


def calibration(logits: np.ndarray, labels: np.ndarray) -> float:
    """Predicted over actual positives, ``sum(sigmoid(logits)) / sum(labels)`` (TorchRec's).

    Args:
        logits (ndarray): (N,) logits.
        labels (ndarray): (N,) 0/1 labels.

    Returns:
        float: the ratio, ``nan`` without a positive label.
    """
    positives = float(np.sum(labels, dtype=np.float64))
    if positives <= 0:
        return float("nan")
    return float(np.sum(0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits, dtype=np.float64))))) / positives


def _binary_metrics(logits: np.ndarray, labels: np.ndarray, users: np.ndarray) -> Dict[str, float]:
    gauc, used, skipped = group_auc(logits, labels, users)
    return {
        "auc": roc_auc(logits, labels),
        "gauc": gauc,
        "logloss": binary_log_loss(logits, labels),
        "ne": normalized_entropy(logits, labels),
        "calibration": calibration(logits, labels),
        "count": int(logits.size),
        "gauc_users": used,
        "gauc_users_skipped": skipped,
    }


def _regression_metrics(outputs: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    if outputs.size == 0:
        return {"rmse": float("nan"), "mae": float("nan"), "count": 0}
    # The head predicts log1p(label): back to the label's scale, and a duration is never < 0.
    error = np.maximum(np.expm1(outputs.astype(np.float64)), 0.0) - labels.astype(np.float64)
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "count": int(outputs.size),
    }


def _undefined(kind: str, count: int) -> Dict[str, float]:
    """The metrics of a task whose outputs hold a non-finite value: all NaN but ``count``."""
    if kind == "binary":
        return {"auc": math.nan, "gauc": math.nan, "logloss": math.nan, "ne": math.nan, "calibration": math.nan,
                "count": count,
                "gauc_users": 0, "gauc_users_skipped": 0}
    return {"rmse": math.nan, "mae": math.nan, "count": count}


class MultiTaskEvaluator:
    """Accumulates an evaluation pass and computes exact per-task metrics (see the module doc).

    :meth:`update` keeps the batch tensors (detached, on their device) in lists; :meth:`compute`
    concatenates them, copies them to the CPU and computes every metric over all N examples,
    exactly (AUC needs every score, so memory grows as O(N * T)). Labels may be missing:
    ``label_mask`` False or a ``NaN`` label both drop the entry from that task only.

    On several ranks (torch.distributed initialised with world size > 1) :meth:`compute` is a
    collective: every rank must call it, it all-gathers every rank's examples (gloo on CPU, or
    nccl with the tensors on the current CUDA device) and every rank returns the same global
    metrics; a user seen on several ranks is one GAUC group. Each rank then holds all N
    examples while computing.

    Args:
        tasks (Sequence[TaskSpec]): the T tasks, in output-column order.
        process_group (ProcessGroup, optional): group to gather over. Default the global group.

    Example::

        evaluator = MultiTaskEvaluator([TaskSpec("click", "binary"), TaskSpec("stay", "regression")])
        for batch in val_batches:
            _, (_, outputs, labels) = model(batch)                       # outputs: (B, T)
            users = batch.graph_features.global_ids("user", batch.graph_features.user_index)  # (B,)
            evaluator.update(outputs, labels, batch.label_mask, users)
        metrics = evaluator.compute()   # {"click": {"auc": ..., "gauc": ...}, "stay": {"rmse": ...}}
        print(format_table(metrics, title="val"))
        evaluator.reset()
    """

    def __init__(self, tasks: Sequence[TaskSpec], process_group: Optional[dist.ProcessGroup] = None) -> None:
        self.tasks = list(tasks)
        names = [t.name for t in self.tasks]
        if not self.tasks or len(set(names)) != len(names):
            raise ValueError(f"MultiTaskEvaluator: tasks must be non-empty with unique names, got {names}")
        self.process_group = process_group
        self._outputs: List[torch.Tensor] = []
        self._labels: List[torch.Tensor] = []
        self._present: List[torch.Tensor] = []
        self._users: List[torch.Tensor] = []

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def num_examples(self) -> int:
        """Examples accumulated on this rank since the last :meth:`reset`."""
        return sum(u.numel() for u in self._users)

    def update(
        self,
        outputs: torch.Tensor,
        labels: torch.Tensor,
        label_mask: Optional[torch.Tensor],
        user_ids: torch.Tensor,
    ) -> None:
        """Add one batch. Nothing is synchronised with the device here.

        Args:
            outputs (Tensor): (B, T) head outputs: logits for binary tasks, predictions of
                ``log1p(label)`` for regression tasks.
            labels (Tensor): (B, T) labels (0/1 for binary tasks, original scale for regression
                tasks); ``NaN`` = missing.
            label_mask (Tensor, optional): (B, T) bool, True where the label is present.
                ``None``: present wherever the label is not ``NaN``.
            user_ids (Tensor): (B,) integer user id of every example (the GAUC groups; use
                global ids, e.g. ``graph_features.global_ids("user", graph_features.user_index)``).
        """
        shape = (user_ids.shape[0] if user_ids.dim() == 1 else -1, self.num_tasks)
        problems = []
        if user_ids.dim() != 1 or user_ids.is_floating_point() or user_ids.is_complex():
            problems.append(f"user_ids must be a (B,) integer tensor, got {tuple(user_ids.shape)} {user_ids.dtype}")
        for name, tensor in (("outputs", outputs), ("labels", labels), ("label_mask", label_mask)):
            if tensor is not None and tuple(tensor.shape) != shape:
                problems.append(f"{name} must have shape (B, T) = {shape}, got {tuple(tensor.shape)}")
        if label_mask is not None and label_mask.dtype != torch.bool:
            problems.append(f"label_mask must be bool, got {label_mask.dtype}")
        if problems:
            raise ValueError("MultiTaskEvaluator.update: " + "; ".join(problems))
        # Copies: a pipeline may refill the batch's buffers in place after this call.
        labels = labels.detach().to(torch.float32, copy=True)
        present = ~torch.isnan(labels)
        if label_mask is not None:
            present &= label_mask
        self._outputs.append(outputs.detach().to(torch.float32, copy=True))
        self._labels.append(labels)
        self._present.append(present)
        self._users.append(user_ids.detach().to(torch.int64, copy=True))

    def reset(self) -> None:
        """Forget every accumulated batch."""
        self._outputs, self._labels, self._present, self._users = [], [], [], []

    def compute(self) -> Metrics:
        """The metrics over every batch since the last :meth:`reset` (on all ranks).

        Returns:
            Dict[str, Dict[str, float]]: ``{task name: {metric: value}}``; counts are ints,
            undefined metrics ``float("nan")`` (see the module doc).

        Raises:
            ValueError: a binary task has a present label other than 0 or 1.
        """
        outputs, labels, present, users = self._gathered()
        metrics: Metrics = {}
        for t, task in enumerate(self.tasks):
            rows = present[:, t]
            out, lab = outputs[rows, t], labels[rows, t]
            bad = np.unique(lab[(lab != 0) & (lab != 1)]) if task.kind == "binary" else lab[:0]
            if bad.size:
                # Every rank holds the same gathered labels, so all ranks raise together.
                raise ValueError(
                    f"MultiTaskEvaluator: binary task {task.name!r} needs 0/1 labels, "
                    f"found [{', '.join(f'{v:g}' for v in bad[:5])}{', ...' if bad.size > 5 else ''}]"
                )
            if not np.isfinite(out).all():
                metrics[task.name] = _undefined(task.kind, int(out.size))
            elif task.kind == "binary":
                metrics[task.name] = _binary_metrics(out, lab, users[rows])
            else:
                metrics[task.name] = _regression_metrics(out, lab)
        return metrics

    def _local(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """This rank's examples as a float32 (N, 3T) block [outputs | labels | present] and (N,) users."""
        if not self._users:
            return torch.zeros(0, 3 * self.num_tasks), torch.zeros(0, dtype=torch.long)
        block = torch.cat(
            [torch.cat(self._outputs), torch.cat(self._labels), torch.cat(self._present).float()], dim=1
        )  # (N, 3T)
        return block, torch.cat(self._users)

    def _gathered(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        block, users = self._local()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size(self.process_group) > 1:
            device = self._collective_device()
            block = _all_gather_rows(block.to(device), self.process_group)
            users = _all_gather_rows(users.to(device), self.process_group)
        block = block.cpu().numpy()
        t = self.num_tasks
        return block[:, :t], block[:, t : 2 * t], block[:, 2 * t :] > 0.5, users.cpu().numpy()

    def _collective_device(self) -> torch.device:
        backend = str(dist.get_backend(self.process_group)).lower()
        if "nccl" in backend:  # nccl only moves CUDA tensors
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def __repr__(self) -> str:
        tasks = ", ".join(f"{t.name}:{t.kind}" for t in self.tasks)
        return f"{self.__class__.__name__}(tasks=[{tasks}], examples={self.num_examples})"


class TrainingWindowMetrics:
    """Windowed NE and AUC of every binary task over the latest training batches, computed by
    ``torchrec.metrics`` (``NEMetric``, ``AUCMetric``) with TorchRec's window semantics.

    :meth:`update` takes each step's outputs and labels (NaN = missing, weight 0);
    :meth:`compute` returns ``{task: {"window_ne", "window_auc"}}`` over the last
    ``window_size`` examples of all ranks. On several ranks :meth:`compute` is a collective
    (every rank calls it and gets the same values).

    Args:
        tasks (Sequence[TaskSpec]): the T tasks in output-column order (regression ones are skipped).
        batch_size (int): training examples per batch and rank.
        window_size (int): examples in the window, over all ranks; raised to one batch per rank.
        world_size (int): ranks. Default 1.
        rank (int): this rank. Default 0.
        device (torch.device, optional): where the metric states live (the collectives' device:
            CUDA under nccl). Default CPU.

    Example::

        window = TrainingWindowMetrics(tasks, batch_size=1024, window_size=102_400)
        window.update(out.outputs, out.labels)  # every step: (B, T) each
        window.compute()  # {"click": {"window_ne": 0.87, "window_auc": 0.71}, ...}
    """

    def __init__(self, tasks: Sequence[TaskSpec], batch_size: int, window_size: int, world_size: int = 1,
                 rank: int = 0, device: Optional[torch.device] = None) -> None:
        from torchrec.metrics.auc import AUCMetric
        from torchrec.metrics.metrics_config import RecTaskInfo
        from torchrec.metrics.ne import NEMetric

        self.columns = {task.name: t for t, task in enumerate(tasks) if task.kind == "binary"}
        self.device = device or torch.device("cpu")
        infos = [RecTaskInfo(name=name, label_name=name, prediction_name=name, weight_name=name) for name in self.columns]
        window_size = max(int(window_size), batch_size * world_size)
        self._metrics = [
            cls(world_size=world_size, my_rank=rank, batch_size=batch_size, tasks=infos, window_size=window_size,
                compute_on_all_ranks=True).to(self.device)
            for cls in (NEMetric, AUCMetric)
        ] if infos else []

    def update(self, outputs: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a step: ``outputs`` (B, T) logits, ``labels`` (B, T) with NaN where missing."""
        if not self._metrics:
            return
        predictions, targets, weights = {}, {}, {}
        for name, t in self.columns.items():
            label = labels[:, t].detach().to(self.device, torch.float64)
            present = torch.isfinite(label)
            predictions[name] = torch.sigmoid(outputs[:, t].detach().to(self.device, torch.float64))
            targets[name] = torch.where(present, label, torch.zeros_like(label))
            weights[name] = present.double()
        for metric in self._metrics:
            metric.update(predictions=predictions, labels=targets, weights=weights)

    def compute(self) -> Metrics:
        """``{task: {"window_ne": ..., "window_auc": ...}}`` (a collective on several ranks)."""
        values = {k: float(v) for metric in self._metrics for k, v in metric.compute().items()}
        # torchrec's keys: "<metric>-<task>|window_<metric>"
        return {name: {f"window_{m}": values[f"{m}-{name}|window_{m}"] for m in ("ne", "auc")} for name in self.columns}


def _all_gather_rows(tensor: torch.Tensor, group: Optional[dist.ProcessGroup]) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0 in rank order; ranks may hold different N."""
    world = dist.get_world_size(group)
    size = torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size, group=group)
    counts = [int(s) for s in sizes]
    longest = max(max(counts), 1)  # never gather empty tensors
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded, group=group)
    return torch.cat([part[:count] for part, count in zip(parts, counts)])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4f}"
    return str(value)


def format_table(metrics: Mapping[str, Mapping[str, Any]], title: Optional[str] = None) -> str:
    """Render metrics as a fixed-width text table: one row per task, one column per metric.

    Accepts ``{task: {metric: value}}`` (what :meth:`MultiTaskEvaluator.compute` returns) or
    ``{split or variant: {task: {metric: value}}}``, which adds a first column with the split.
    Floats get 4 decimals, ints print as ints, a metric a task lacks is blank.

    Args:
        metrics (Mapping): the metrics, two or three levels deep.
        title (str, optional): a line printed above the table. Default none.

    Returns:
        str: the table, lines joined by ``"\\n"``, no trailing newline.

    Example::

        print(format_table({"val": {"click": {"auc": 0.71, "count": 812}}}, title="epoch 3"))
        # epoch 3
        # split  task      auc  count
        # -----  -----  ------  -----
        # val    click  0.7100    812
    """
    nested = bool(metrics) and all(
        isinstance(tasks, Mapping) and tasks and all(isinstance(m, Mapping) for m in tasks.values())
        for tasks in metrics.values()
    )
    rows: List[Tuple[List[str], Mapping[str, Any]]] = []
    if nested:
        for split, tasks in metrics.items():
            rows.extend(([str(split), str(task)], values) for task, values in tasks.items())
        keys = ["split", "task"]
    else:
        rows = [([str(task)], values) for task, values in metrics.items()]
        keys = ["task"]
    seen: List[str] = []
    for _, values in rows:
        seen.extend(name for name in values if name not in seen)
    columns = [m for m in _METRIC_ORDER if m in seen] + [m for m in seen if m not in _METRIC_ORDER]
    header = keys + columns
    body = [labels + [_cell(values[c]) if c in values else "" for c in columns] for labels, values in rows]
    widths = [max([len(h)] + [len(r[i]) for r in body]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        # Row labels left-aligned, numbers right-aligned.
        return "  ".join(
            c.ljust(w) if i < len(keys) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    lines = [title] if title else []
    lines += [line(header), line(["-" * w for w in widths])] + [line(r) for r in body]
    return "\n".join(lines)

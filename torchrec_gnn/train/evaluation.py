"""The one evaluation loop: a model's outputs over batches, scored per task and per user.

The training job (every rank, through a DataLoader) and a finished run read back for scoring
(``eval``, ``predict``, ``export``) both run :func:`evaluate_batches`, so a run's final
evaluation and a later ``eval`` of its exported model see the same batches and the same code.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from torchrec_gnn.data.batch import GraphBatch
from torchrec_gnn.data.dataset import TaskSpec
from torchrec_gnn.train.metrics import MultiTaskEvaluator


def score_batch(evaluator: MultiTaskEvaluator, outputs: torch.Tensor, batch: GraphBatch, user_type: str) -> None:
    """Add one batch's outputs (B, T) to ``evaluator``, grouped by the examples' global user
    ids (GAUC)."""
    users = batch.graph_features.global_ids(user_type, batch.graph_features.user_index)
    evaluator.update(outputs, batch.labels, batch.label_mask, users)


@torch.no_grad()
def evaluate_batches(
    model: torch.nn.Module,
    batches: Iterable[GraphBatch],
    tasks: Sequence[TaskSpec],
    user_type: str,
    device: Optional[torch.device] = None,
    keep_outputs: bool = False,
) -> Tuple[Dict[str, Dict[str, float]], Optional[torch.Tensor]]:
    """Run ``model`` (a ``GraphDLRMTrain``-style module returning ``(losses, (_, outputs, _))``)
    over ``batches`` and score its outputs.

    Args:
        model (nn.Module): the model, already in eval mode.
        batches (Iterable[GraphBatch]): the batches, moved to ``device`` here when given
            (non-blocking from pinned memory on CUDA).
        tasks (Sequence[TaskSpec]): the T tasks, in output order.
        user_type (str): node type of the examples' users (GAUC groups).
        device (torch.device, optional): where the model runs.
        keep_outputs (bool): also return the outputs. Default False.

    Returns:
        ``({task: {metric: value}}, (N, T) outputs or None)``; with several ranks every rank
        returns the global metrics (the evaluator gathers them).
    """
    evaluator = MultiTaskEvaluator(tasks)
    outputs: List[torch.Tensor] = []
    non_blocking = device is not None and device.type == "cuda"
    for batch in batches:
        if device is not None:
            batch = batch.to(device, non_blocking=non_blocking)
        _, (_, batch_outputs, _) = model(batch)
        score_batch(evaluator, batch_outputs, batch, user_type)
        if keep_outputs:
            outputs.append(batch_outputs)
    return evaluator.compute(), torch.cat(outputs) if keep_outputs else None

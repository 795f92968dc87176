"""Names shared by every layer: node and relation types, an edge list, a relation's string form.

PyG's conventions: a node type is a string, a relation (edge type) is the triple
``(source type, relation, destination type)`` and messages flow source -> destination.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

NodeType = str
EdgeType = Tuple[str, str, str]
# Which of a node's older edges temporal sampling draws (PyG's names): a uniform sample, or the most recent.
TEMPORAL_STRATEGIES = ("uniform", "last")


def is_fanout(value: object) -> bool:
    """Whether ``value`` is one hop's fanout: an int >= -1 (-1 = every neighbour, 0 = skip the hop);
    the sampler and the config check every fanout by it."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= -1


@dataclass
class EdgeList:
    """Edges of one relation in COO form.

    Args:
        src (Tensor): (E,) int64 source node ids.
        dst (Tensor): (E,) int64 destination node ids.
        time (Tensor, optional): (E,) int64 event time; ``None`` = static edge.
        weight (Tensor, optional): (E,) float32 edge weight.
    """

    src: torch.Tensor
    dst: torch.Tensor
    time: Optional[torch.Tensor] = None
    weight: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return self.src.numel()


def edge_type_str(edge_type: EdgeType) -> str:
    """``("user", "watches", "video") -> "user__watches__video"`` (file names, table names)."""
    return "__".join(edge_type)

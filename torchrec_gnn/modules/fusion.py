"""Two-level fusion of graph embeddings into the ranker (E2E-GRec).

* input level (:class:`InputFusionArch`): the user's and the item's graph embeddings, projected
  to the sparse embedding dim D, join the feature interaction as two extra features:
  sparse (B, F, D) -> (B, F + 2, D);
* pre-head level (:class:`ConcatFusionArch`, :class:`GatedFusionArch`): the graph embeddings
  are concatenated with the representation entering the task heads:
  (B, R) -> (B, R + 2H).

A new kind of fusion is a new arch with the same ``forward`` signature, not a flag.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.profiler import record_function


class InputFusionArch(nn.Module):
    """Projects graph embeddings to two extra interaction features.

    Args:
        graph_channels (int): H, width of the graph embeddings.
        embedding_dim (int): D, width of the ranker's sparse embeddings.

    Example::

        fusion = InputFusionArch(64, 16)
        extra = fusion(user_emb, item_emb)   # (B, 2, 16)
    """

    def __init__(self, graph_channels: int, embedding_dim: int) -> None:
        super().__init__()
        self.graph_channels, self.embedding_dim = graph_channels, embedding_dim
        self.user_projection = nn.Linear(graph_channels, embedding_dim)
        self.item_projection = nn.Linear(graph_channels, embedding_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.user_projection.reset_parameters()
        self.item_projection.reset_parameters()

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """
        Args:
            user (Tensor): (B, H) graph embedding of each example's user.
            item (Tensor): (B, H) graph embedding of each example's item.

        Returns:
            Tensor: (B, 2, D) features to concatenate with the sparse features.
        """
        with record_function("## input_fusion ##"):
            return torch.stack([self.user_projection(user), self.item_projection(item)], dim=1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.graph_channels} -> 2 x {self.embedding_dim})"


class ConcatFusionArch(nn.Module):
    """Concatenates the graph embeddings to the task-head input.

    Args:
        graph_channels (int): H.
        representation_channels (int): R, width of the representation entering the heads.
    """

    def __init__(self, graph_channels: int, representation_channels: int) -> None:
        super().__init__()
        self.graph_channels, self.representation_channels = graph_channels, representation_channels

    @property
    def out_channels(self) -> int:
        return self.representation_channels + 2 * self.graph_channels

    def forward(self, representation: torch.Tensor, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """
        Args:
            representation (Tensor): (B, R).
            user (Tensor): (B, H).
            item (Tensor): (B, H).

        Returns:
            Tensor: (B, R + 2H).
        """
        with record_function("## prehead_fusion ##"):
            return torch.cat([representation, user, item], dim=1)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.representation_channels} + 2 x {self.graph_channels} -> {self.out_channels})"


class GatedFusionArch(ConcatFusionArch):
    """Like :class:`ConcatFusionArch`, but a learned sigmoid gate, computed from all three
    inputs, scales each graph-embedding channel: ``[r, g ⊙ [u; i]]``. The gate starts near 0.5.

    Args:
        graph_channels (int): H.
        representation_channels (int): R.
    """

    def __init__(self, graph_channels: int, representation_channels: int) -> None:
        super().__init__(graph_channels, representation_channels)
        self.gate = nn.Linear(self.out_channels, 2 * graph_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.gate.weight, gain=0.1)
        nn.init.zeros_(self.gate.bias)

    def forward(self, representation: torch.Tensor, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """
        Args:
            representation (Tensor): (B, R).
            user (Tensor): (B, H).
            item (Tensor): (B, H).

        Returns:
            Tensor: (B, R + 2H) with gated graph channels.
        """
        with record_function("## prehead_fusion ##"):
            graph = torch.cat([user, item], dim=1)  # (B, 2H)
            gate = torch.sigmoid(self.gate(torch.cat([representation, graph], dim=1)))  # (B, 2H)
            return torch.cat([representation, gate * graph], dim=1)

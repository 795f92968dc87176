"""GraphDLRM in the form serving needs: graph embeddings as inputs, sparse tables as plain lookups.

At serving time nothing samples a subgraph: every user's and item's graph embedding is
computed once over the whole graph (layer-wise full-graph inference) and looked up by id, and
the ranker takes them as inputs next to the example's own features. :class:`ServingRanker` is
that ranker, ready for ``torch.export``::

    ranker = ServingRanker(model).eval()
    program = torch.export.export(ranker, ranker.example_inputs(8), dynamic_shapes=ranker.dynamic_shapes())
    outputs = program.module()(dense, sparse_ids, embeddings["user"][users], embeddings["video"][items])
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from torchrec_gnn.models.graph_dlrm import GraphDLRM, RankingArches


class ServingRanker(RankingArches):
    """A trained :class:`GraphDLRM` without its tower and its sharded tables.

    Shares the model's arches (:attr:`RankingArches.ARCH_NAMES`, with their weights) and holds a
    plain copy of each sparse feature's table: every example has one id per sparse feature, so
    the ``EmbeddingBagCollection``'s pooled row is that id's row.

    Args:
        model (GraphDLRM): the trained ranker (unsharded, e.g. loaded from a run's ``model.pt``).

    ``forward(dense_features (B, F_dense), sparse_ids (B, F) int64 in
    :attr:`sparse_feature_names` order, user (B, H), item (B, H))`` returns the per-task
    outputs (B, T), equal to ``model`` on a batch whose sampled subgraph gave those embeddings.
    A model without a graph tower takes no embeddings.
    """

    def __init__(self, model: GraphDLRM) -> None:
        super().__init__()
        for name in self.ARCH_NAMES:
            setattr(self, name, getattr(model, name))
        self.dense_in_features = model.dense_in_features
        self.tasks = list(model.tasks)
        self.uses_graph = model.graph_tower is not None
        self.graph_channels = model.graph_tower.out_channels if self.uses_graph else 0
        self.sparse_feature_names: List[str] = list(model.sparse_arch.sparse_feature_names)
        ebc = model.sparse_arch.embedding_bag_collection
        weights = {f: ebc.embedding_bags[c.name].weight for c in ebc.embedding_bag_configs() for f in c.feature_names}
        self.tables = nn.ParameterList(
            nn.Parameter(weights[f].detach().clone(), requires_grad=False) for f in self.sparse_feature_names
        )

    def forward(
        self, dense_features: torch.Tensor, sparse_ids: torch.Tensor,
        user: Optional[torch.Tensor] = None, item: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            dense_features (Tensor): (B, F_dense) float32.
            sparse_ids (Tensor): (B, F) int64, one id per sparse feature, in
                :attr:`sparse_feature_names` order.
            user (Tensor, optional): (B, H) graph embedding of each example's user (with a graph).
            item (Tensor, optional): (B, H) of each example's item.

        Returns:
            Tensor: (B, T) per-task outputs (logits; ``log1p`` values for regression).
        """
        sparse = torch.stack([table[sparse_ids[:, f]] for f, table in enumerate(self.tables)], dim=1)  # (B, F, D)
        return self.rank(dense_features, sparse, user, item)

    def example_inputs(self, batch_size: int = 2) -> Tuple[torch.Tensor, ...]:
        """Zero inputs of the right shapes and dtypes, for ``torch.export``."""
        device = self.tables[0].device
        inputs = (torch.zeros(batch_size, self.dense_in_features, device=device),
                  torch.zeros(batch_size, len(self.tables), dtype=torch.int64, device=device))
        if self.uses_graph:  # two tensors: export would take one tensor passed twice for one input
            inputs += tuple(torch.zeros(batch_size, self.graph_channels, device=device) for _ in range(2))
        return inputs

    def dynamic_shapes(self) -> Tuple[Dict[int, torch.export.Dim], ...]:
        """The batch dimension of every input is dynamic."""
        batch = torch.export.Dim("batch", min=1)
        return tuple({0: batch} for _ in range(4 if self.uses_graph else 2))

"""FrozenGraphTower: pre-computed node embeddings in place of the GNN tower (two-stage baseline).

The two-stage pipeline pre-trains the GNN offline, exports every node's embedding, and feeds
them to the ranker as fixed inputs. This tower serves those embeddings through the same
interface as :class:`~torchrec_gnn.modules.gnn_tower.GNNTower`, so the ranker, both fusion
levels and the training loop are exactly those of the end-to-end model: only where the graph
embeddings come from differs, and no gradient reaches them.
"""

from __future__ import annotations

from typing import Dict, List, Mapping

import torch
from torch import nn

from torchrec_gnn.data.batch import GraphFeatures
from torchrec_gnn.modules.gnn_tower import GraphEmbeddings, GraphTowerInterface
from torchrec_gnn.modules.utils import connected_zero
from torchrec_gnn.typing import NodeType


class FrozenGraphTower(GraphTowerInterface):
    """Look up each example's user and item in fixed embedding tables (buffers, no gradient).

    Args:
        embeddings (Mapping[str, Tensor]): node type -> (N_t, H) embeddings, for the user and
            the item type (one table when they are the same type). Tensors on the ``meta``
            device give an empty tower to fill with :meth:`load_embeddings` (after DMP).
        user_type (str): node type of the examples' users.
        item_type (str): node type of the examples' items.

    The batches need only their seeds: ``graph_features.node_ids`` (global ids, the seeds first)
    and ``user_index``/``item_index``, which a zero-hop sampler gives.

    Example::

        tower = FrozenGraphTower({"user": torch.randn(1000, 64), "video": torch.randn(500, 64)},
                                 "user", "video")
        graph_emb = tower(batch.graph_features)   # user (B, 64), item (B, 64), gfae_loss () = 0
    """

    def __init__(self, embeddings: Mapping[NodeType, torch.Tensor], user_type: NodeType, item_type: NodeType) -> None:
        super().__init__()
        missing = [t for t in (user_type, item_type) if t not in embeddings]
        if missing:
            raise ValueError(f"FrozenGraphTower: no embeddings for node types {missing}; got {sorted(embeddings)}")
        widths = {t: tuple(embeddings[t].shape[1:]) for t in (user_type, item_type)}
        if len(set(widths.values())) != 1 or len(next(iter(widths.values()))) != 1:
            raise ValueError(f"FrozenGraphTower: embeddings must be (N_t, H) with one H, got trailing shapes {widths}")
        self.user_type, self.item_type = user_type, item_type
        self.node_types: List[NodeType] = list(dict.fromkeys([user_type, item_type]))
        for t in self.node_types:
            self.register_buffer(self._buffer_name(t), embeddings[t].detach().to(torch.float32))
        self._out_channels = int(embeddings[user_type].shape[1])

    @staticmethod
    def _buffer_name(node_type: NodeType) -> str:
        return f"embeddings_{node_type}"

    def table(self, node_type: NodeType) -> torch.Tensor:
        """(N_t, H) embeddings of ``node_type``."""
        return getattr(self, self._buffer_name(node_type))

    @property
    def out_channels(self) -> int:
        return self._out_channels

    def shared_parameters(self) -> List[nn.Parameter]:
        """No trainable parameter: GradNorm falls back to the ranker's shared layer."""
        return []

    @property
    def aux_loss_names(self) -> List[str]:
        """No auxiliary loss: the embeddings were trained before."""
        return []

    @torch.no_grad()
    def load_embeddings(self, embeddings: Mapping[NodeType, torch.Tensor]) -> None:
        """Copy exported embeddings in (e.g. into the replicas after DMP has built them).

        Raises:
            ValueError: a node type is missing or a shape differs from the tower's.
        """
        for t in self.node_types:
            if t not in embeddings:
                raise ValueError(f"FrozenGraphTower.load_embeddings: no embeddings for node type {t!r}")
            if tuple(embeddings[t].shape) != tuple(self.table(t).shape):
                raise ValueError(
                    f"FrozenGraphTower.load_embeddings: {t!r} embeddings have shape {tuple(embeddings[t].shape)}, "
                    f"the tower {tuple(self.table(t).shape)} (node count x H of the graph and model config)"
                )
            self.table(t).copy_(embeddings[t])

    def forward(self, graph_features: GraphFeatures) -> GraphEmbeddings:
        """
        Args:
            graph_features (GraphFeatures): needs ``node_ids`` and ``user_index``/``item_index``.

        Returns:
            GraphEmbeddings: user and item embeddings (B, H) and zero auxiliary losses.
        """
        user = self.table(self.user_type)[graph_features.global_ids(self.user_type, graph_features.user_index)]
        item = self.table(self.item_type)[graph_features.global_ids(self.item_type, graph_features.item_index)]
        zero = connected_zero(user)
        return GraphEmbeddings(user=user, item=item, gfae_loss=zero, edge_loss=zero,
                               link_logits=zero.reshape(1)[:0])

    def __repr__(self) -> str:
        shapes: Dict[str, tuple] = {t: tuple(self.table(t).shape) for t in self.node_types}
        return f"{self.__class__.__name__}({shapes})"

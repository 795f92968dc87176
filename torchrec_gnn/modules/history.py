"""Historical embeddings for the outer hop (GNNAutoScale, Fey et al., ICML 2021).

An L-layer GNN over an L-hop sample spends most of a step on the outermost hop: on the default
synthetic graph a batch's second hop holds 28k of its 49k nodes and 290k of its 350k edges, all
of them needed only to compute the hop-1 nodes' input to the last layer. With a history the
sampler stops one hop earlier and the last layer reads those inputs from a cache instead:

* the seeds' last-layer inputs are computed fresh (with gradients) and **pushed** into the cache
  (training mode only), as GNNAutoScale pushes its in-batch nodes;
* the hop-1 nodes' last-layer inputs are **pulled** from the cache (no gradient);
* the cache is **refreshed** for every node by layer-wise full-graph inference of the first L - 1
  layers (:func:`torchrec_gnn.train.sharding.refresh_history`) every ``GNNConfig.history_refresh_every`` steps and before
  each evaluation. This is what reaches node types that are never seeds (authors, queries,
  products on the synthetic data): their rows change only at a refresh.

Staleness: a pulled row is at most ``history_refresh_every`` optimizer steps old (younger when
its node was a seed since), and a refreshed row aggregates its node's *whole* neighbourhood
(eval mode, no dropout) where a pushed one aggregates a sample. The cache holds
sum_t N_t x H floats per process (60k x 64 on the default graph: 15 MB); every rank keeps its own
copy, refreshed identically and pushed with its own seeds.

Notation: N_t nodes of type t in the graph, H the last layer's input width (the GNN width).
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
from torch import nn

from torchrec_gnn.typing import NodeType


class HistoricalEmbeddings(nn.Module):
    """One (N_t, H) cache per node type of the last GNN layer's input (non-persistent buffers:
    not in the state dict, rebuilt by :meth:`load` after a restart).

    Args:
        num_nodes (Mapping[str, int]): N_t per node type.
        channels (int): H.
        device (torch.device, optional): where the cache lives.

    Example::

        history = HistoricalEmbeddings({"user": 100, "video": 50}, channels=64)
        history.load({"user": torch.zeros(100, 64), "video": torch.zeros(50, 64)})
        rows = history.pull("video", torch.tensor([3, 7]))          # (2, 64)
        history.push("video", torch.tensor([3]), torch.ones(1, 64))
    """

    def __init__(self, num_nodes: Mapping[NodeType, int], channels: int, device: Optional[torch.device] = None) -> None:
        super().__init__()
        self.num_nodes = dict(num_nodes)
        self.channels = channels
        for t, n in self.num_nodes.items():
            self.register_buffer(self._name(t), torch.empty(n, channels, device=device), persistent=False)
        self.filled = False  # set by load(); pull refuses an empty cache

    @staticmethod
    def _name(node_type: NodeType) -> str:
        return f"history_{node_type}"

    def cache(self, node_type: NodeType) -> torch.Tensor:
        """(N_t, H) the cache of ``node_type``."""
        return getattr(self, self._name(node_type))

    def pull(self, node_type: NodeType, ids: torch.Tensor) -> torch.Tensor:
        """(K, H) cached rows of global node ids ``ids`` (K,), without gradient."""
        if not self.filled:
            raise RuntimeError(
                "HistoricalEmbeddings: the cache was never filled; call refresh_history (or load) before the "
                "first forward pass"
            )
        return self.cache(node_type).index_select(0, ids)

    @torch.no_grad()
    def push(self, node_type: NodeType, ids: torch.Tensor, values: torch.Tensor) -> None:
        """Write ``values`` (K, H) (detached) to the rows of global node ids ``ids`` (K,)."""
        self.cache(node_type).index_copy_(0, ids, values.detach().to(self.cache(node_type).dtype))

    @torch.no_grad()
    def load(self, embeddings: Mapping[NodeType, torch.Tensor]) -> None:
        """Replace the whole cache: ``embeddings[t]`` (N_t, H) for every node type."""
        missing = sorted(set(self.num_nodes) - set(embeddings))
        if missing:
            raise ValueError(f"HistoricalEmbeddings.load: no rows for node types {missing}")
        for t, rows in embeddings.items():
            cache = self.cache(t)
            if rows.shape != cache.shape:
                raise ValueError(f"HistoricalEmbeddings.load: {t!r} rows have shape {tuple(rows.shape)}, "
                                 f"the cache {tuple(cache.shape)}")
            cache.copy_(rows)
        self.filled = True

    def extra_repr(self) -> str:
        return f"num_nodes={self.num_nodes}, channels={self.channels}, filled={self.filled}"


def history_inputs(
    history: HistoricalEmbeddings,
    seed_inputs: Dict[NodeType, torch.Tensor],
    node_ids: Mapping[NodeType, torch.Tensor],
    num_seeds: Mapping[NodeType, int],
    num_hop1: Mapping[NodeType, int],
    push: bool,
) -> Dict[NodeType, torch.Tensor]:
    """The last layer's input over the seeds and the hop-1 nodes: the seeds' fresh rows
    ``seed_inputs[t]`` (S_t, H), pushed into the cache when ``push``, then the hop-1 nodes'
    cached rows; ``node_ids[t]`` (N_t,) are the sampled nodes' global ids, seeds first."""
    inputs = {}
    for t, fresh in seed_inputs.items():
        seeds, hop1 = num_seeds[t], num_hop1[t]
        if push and seeds:
            history.push(t, node_ids[t][:seeds], fresh)
        inputs[t] = torch.cat([fresh, history.pull(t, node_ids[t][seeds: seeds + hop1])]) if hop1 else fresh
    return inputs

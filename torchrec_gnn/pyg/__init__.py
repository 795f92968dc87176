"""PyG-facing API: drop-in ``NeighborLoader`` / ``LinkNeighborLoader`` and the sampler behind them."""

from torchrec_gnn.pyg.loader import LinkNeighborLoader, NeighborLoader
from torchrec_gnn.pyg.sampler import PyGNeighborSampler

__all__ = ["LinkNeighborLoader", "NeighborLoader", "PyGNeighborSampler"]

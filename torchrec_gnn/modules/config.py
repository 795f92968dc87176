"""The GNN's config, importable without PyG (experiment configs are read before the stack loads)."""

from __future__ import annotations

from dataclasses import dataclass

CONV_TYPES = ("sage", "gat", "lightgcn")
NORM_TYPES = ("layer", "none")
OUTER_HOPS = ("sample", "history")


@dataclass
class GNNConfig:
    """Shape of the message-passing stack.

    Args:
        conv (str): ``"sage"`` (GraphSAGE, default), ``"gat"`` (GATv1 attention) or
            ``"lightgcn"`` (parameter-free normalised propagation plus a learned readout).
        hidden_channels (int): H, width of every layer and of the output. Default 64.
        num_layers (int): message-passing layers; match the sampler's hop count. Default 2.
        norm (str): ``"layer"`` (LayerNorm per node type between layers) or ``"none"``.
        dropout (float): dropout between layers. Default 0.1.
        heads (int): attention heads for ``"gat"`` (H must be divisible). Default 2.
        trim (bool): layer-wise trimming with the sampler's per-hop counts: layer l reads the
            nodes within ``num_layers - l`` hops of a seed and computes only those within
            ``num_layers - l - 1`` (PyG's ``trim_to_layer`` trims the inputs; this also trims
            the outputs), so the last layer computes the seeds' rows alone. Default True.
        outer_hop (str): ``"sample"`` (the sampler expands all ``num_layers`` hops) or
            ``"history"`` (it stops one hop short and the last layer reads the hop-1 nodes'
            inputs from historical embeddings, :mod:`torchrec_gnn.modules.history`; end-to-end
            training only, pre-training always samples). Default ``"sample"``.
        history_refresh_every (int): with ``outer_hop="history"``, refresh the whole cache by
            full-graph inference every this many training steps (and before every evaluation).
            Default 50.
    """

    conv: str = "sage"
    hidden_channels: int = 64
    num_layers: int = 2
    norm: str = "layer"
    dropout: float = 0.1
    heads: int = 2
    trim: bool = True
    outer_hop: str = "sample"
    history_refresh_every: int = 50

    def __post_init__(self) -> None:
        if self.outer_hop not in OUTER_HOPS:
            raise ValueError(f"GNNConfig.outer_hop must be one of {OUTER_HOPS}, got {self.outer_hop!r}")
        if self.outer_hop == "history":
            if self.num_layers < 2 or not self.trim:
                raise ValueError("GNNConfig: outer_hop='history' needs num_layers >= 2 and trim=True "
                                 f"(got num_layers={self.num_layers}, trim={self.trim})")
            if self.history_refresh_every < 1:
                raise ValueError(f"GNNConfig.history_refresh_every must be >= 1, got {self.history_refresh_every}")
        if self.conv not in CONV_TYPES:
            raise ValueError(f"GNNConfig.conv must be one of {CONV_TYPES}, got {self.conv!r}")
        if self.norm not in NORM_TYPES:
            raise ValueError(f"GNNConfig.norm must be one of {NORM_TYPES}, got {self.norm!r}")
        if self.num_layers < 1:
            raise ValueError(f"GNNConfig.num_layers must be >= 1, got {self.num_layers}")
        if self.conv == "gat" and self.hidden_channels % self.heads:
            raise ValueError(
                f"GNNConfig: hidden_channels={self.hidden_channels} must be divisible by heads={self.heads} for 'gat'"
            )

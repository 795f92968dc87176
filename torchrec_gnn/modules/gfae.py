"""Graph Feature Auto-Encoder: masked node-feature and masked-edge reconstruction as auxiliary losses.

Follows GraphMAE (Hou et al. 2022, https://arxiv.org/abs/2205.10803): replace the input of a
random share of nodes by a learnable mask token, encode with the GNN, decode the masked nodes
and score the reconstruction with the scaled cosine error ``(1 - cos(x̂, x))^γ``.

Targets per node type: its raw side features when the dataset has them, else the node's ID
embedding with the gradient stopped. Collapse guard: the target never receives gradient from
this loss (stop-gradient), the masked node's own input is hidden (so the encoder must use its
neighbours), and the ID tables keep learning from the ranker's task losses, which a constant
embedding would fail; the cosine error is scale-free, so shrinking the embeddings does not help
either.

The edge part follows MaskGAE (Li et al. 2023, https://arxiv.org/abs/2211.08972): a batch's
links (history edges of the user -> item relation, drawn by edge-level sampling and held out of
its message passing, see :meth:`~torchrec_gnn.graph.sampler.NeighborSampler.sample_from_edges`)
are scored against negatives from the GNN's output embeddings by :class:`EdgeDecoder`, with
binary cross-entropy. It gives the joint model the supervision a link-prediction pre-training
gives the two-stage pipeline: the history edges as targets, not only as structure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from torchrec_gnn.modules.utils import connected_zero
from torchrec_gnn.typing import NodeType

GFAE_LOSSES = ("sce", "mse")
EDGE_DECODERS = ("dot", "mlp")


@dataclass
class GFAEConfig:
    """GFAE settings.

    Args:
        mask_rate (float): share of candidate nodes whose input is masked. Default 0.3.
        loss (str): ``"sce"`` (scaled cosine error, default) or ``"mse"``.
        gamma (float): exponent of the scaled cosine error (>= 1). Default 2.
        decoder_hidden (int): hidden width of the MLP decoder. Default 64.
        edge_objective (bool): add the masked-edge loss (its own task, ``"edge"``, next to the
            feature loss ``"gfae"``) to end-to-end training. Default False.
        edge_relation (str, optional): the relation whose edges are held out and predicted,
            ``"src__rel__dst"`` from the user to the item type; default: the largest one.
        edge_links_per_batch (int): held-out edges per training batch (each rank). Default 512.
        edge_neg_ratio (float): uniformly drawn negative items per held-out edge. Default 1.
        edge_decoder (str): ``"dot"`` (scaled dot product, no parameters; default) or ``"mlp"``
            (an MLP on the element-wise product).
    """

    mask_rate: float = 0.3
    loss: str = "sce"
    gamma: float = 2.0
    decoder_hidden: int = 64
    edge_objective: bool = False
    edge_relation: Optional[str] = None
    edge_links_per_batch: int = 512
    edge_neg_ratio: float = 1.0
    edge_decoder: str = "dot"

    def __post_init__(self) -> None:
        if self.edge_links_per_batch <= 0:
            raise ValueError(f"GFAEConfig.edge_links_per_batch must be positive, got {self.edge_links_per_batch}")
        if self.edge_neg_ratio <= 0:
            raise ValueError(f"GFAEConfig.edge_neg_ratio must be positive, got {self.edge_neg_ratio}")
        if self.edge_decoder not in EDGE_DECODERS:
            raise ValueError(f"GFAEConfig.edge_decoder must be one of {EDGE_DECODERS}, got {self.edge_decoder!r}")
        if not 0.0 < self.mask_rate < 1.0:
            raise ValueError(f"GFAEConfig.mask_rate must be in (0, 1), got {self.mask_rate}")
        if self.loss not in GFAE_LOSSES:
            raise ValueError(f"GFAEConfig.loss must be one of {GFAE_LOSSES}, got {self.loss!r}")
        if self.gamma < 1.0:
            raise ValueError(f"GFAEConfig.gamma must be >= 1, got {self.gamma}")


class GFAE(nn.Module):
    """The graph auto-encoder's two parts: masked features (mask tokens, per-type MLP decoders,
    reconstruction loss) and masked edges (:class:`EdgeDecoder`, with ``config.edge_objective``).

    Args:
        in_channels (int): D, width of the encoder input (mask token size).
        out_channels (int): H, width of the encoder output.
        target_channels (Mapping[str, int]): node type -> F_t, width of its reconstruction
            target (D for ID-only types); empty switches the feature part off.
        config (GFAEConfig): mask rate and loss; ``edge_objective`` adds the edge part.

    Example::

        gfae = GFAE(16, 32, {"user": 16, "video": 8}, GFAEConfig())
        x_masked, mask = gfae.mask(x_dict, {"user": 10, "video": 12}, generator)
        loss = gfae.loss(h_dict, target_dict, mask)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        target_channels: Mapping[NodeType, int],
        config: GFAEConfig,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.config = config
        self.target_channels = dict(target_channels)
        self.mask_token = nn.ParameterDict({t: nn.Parameter(torch.empty(in_channels)) for t in self.target_channels})
        self.decoders = nn.ModuleDict(
            {
                t: nn.Sequential(
                    nn.Linear(out_channels, config.decoder_hidden), nn.PReLU(), nn.Linear(config.decoder_hidden, f)
                )
                for t, f in self.target_channels.items()
            }
        )
        self.edge_decoder = EdgeDecoder(out_channels, config.edge_decoder, config.decoder_hidden) if config.edge_objective else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for token in self.mask_token.values():
            nn.init.zeros_(token)
        for decoder in self.decoders.values():
            for layer in decoder:
                if hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()
        if self.edge_decoder is not None:
            self.edge_decoder.reset_parameters()

    def mask(
        self,
        x_dict: Dict[NodeType, torch.Tensor],
        num_candidates: Mapping[NodeType, int],
        generator: Optional[torch.Generator] = None,
    ) -> Tuple[Dict[NodeType, torch.Tensor], Dict[NodeType, torch.Tensor]]:
        """Replace the input of ``max(1, round(mask_rate * n))`` random rows among the first
        ``n = num_candidates[t]`` (at least one, so every decoder takes part in every step).

        Args:
            x_dict (Dict[str, Tensor]): (N_t, D) encoder inputs.
            num_candidates (Mapping[str, int]): rows that may be masked per type (the rows whose
                final embedding the encoder computes, e.g. the seeds when trimming).
            generator (torch.Generator, optional): source of the random choice.

        Returns:
            Tuple[Dict[str, Tensor], Dict[str, Tensor]]: masked inputs (N_t, D) and the masked
            rows (M_t,) int64 per type.
        """
        masked, rows = dict(x_dict), {}
        for t in self.target_channels:
            if t not in x_dict:
                continue
            n = int(num_candidates.get(t, 0))
            count = max(1, round(self.config.mask_rate * n)) if n > 0 else 0
            rows[t] = torch.randperm(n, generator=generator)[:count].to(x_dict[t].device)
            keep = torch.ones(x_dict[t].shape[0], 1, dtype=x_dict[t].dtype, device=x_dict[t].device)
            keep[rows[t]] = 0.0
            masked[t] = x_dict[t] * keep + (1.0 - keep) * self.mask_token[t]
        return masked, rows

    def loss(
        self,
        h_dict: Dict[NodeType, torch.Tensor],
        target_dict: Dict[NodeType, torch.Tensor],
        mask: Dict[NodeType, torch.Tensor],
    ) -> torch.Tensor:
        """Mean reconstruction error over all masked nodes of all types.

        Args:
            h_dict (Dict[str, Tensor]): (N'_t, H) encoder outputs.
            target_dict (Dict[str, Tensor]): (N_t, F_t) targets (already gradient-stopped).
            mask (Dict[str, Tensor]): (M_t,) masked rows from :meth:`mask`.

        Returns:
            Tensor: scalar loss (0 when no node is masked).
        """
        errors = []
        for t, rows in mask.items():
            if rows.numel() == 0:
                continue
            prediction = self.decoders[t](h_dict[t][rows])  # (M_t, F_t)
            target = target_dict[t][rows]
            if self.config.loss == "sce":
                cos = F.cosine_similarity(prediction, target, dim=-1, eps=1e-8)
                errors.append((1.0 - cos).pow(self.config.gamma))
            else:
                errors.append((prediction - target).pow(2).mean(-1))
        if not errors:
            return connected_zero(next(iter(h_dict.values())))
        return torch.cat(errors).mean()

    @property
    def reconstructs_features(self) -> bool:
        """Whether the feature part is on (it has targets)."""
        return bool(self.target_channels)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}({self.in_channels} -> {self.out_channels}, targets={self.target_channels}, "
            f"mask_rate={self.config.mask_rate}, loss={self.config.loss}, edge_decoder={self.edge_decoder})"
        )


class EdgeDecoder(nn.Module):
    """Scores user-item pairs from their GNN output embeddings: the edge part of the GFAE.

    ``"dot"``: ``<h_u, h_v> / sqrt(H)`` (unit-variance logits at init for any width; the same
    geometry the ranker's dot interaction reads). ``"mlp"``: ``MLP(h_u * h_v)`` to one logit.

    Args:
        channels (int): H, width of the GNN output.
        kind (str): ``"dot"`` or ``"mlp"``. Default ``"dot"``.
        hidden (int): hidden width of the ``"mlp"`` decoder. Default 64.

    Example::

        decoder = EdgeDecoder(64)
        logits = decoder(h_user[link_index[0]], h_item[link_index[1]])   # (L,)
        loss = decoder.loss(logits, link_label)
    """

    def __init__(self, channels: int, kind: str = "dot", hidden: int = 64) -> None:
        super().__init__()
        if kind not in EDGE_DECODERS:
            raise ValueError(f"EdgeDecoder: kind must be one of {EDGE_DECODERS}, got {kind!r}")
        self.channels, self.kind = channels, kind
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.PReLU(), nn.Linear(hidden, 1)) if kind == "mlp" else None

    def reset_parameters(self) -> None:
        for layer in self.mlp or []:
            if hasattr(layer, "reset_parameters"):
                layer.reset_parameters()

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            source (Tensor): (L, H) user embeddings of the pairs.
            target (Tensor): (L, H) item embeddings of the pairs.

        Returns:
            Tensor: (L,) logits.
        """
        if self.mlp is None:
            return (source * target).sum(-1) / self.channels**0.5
        return self.mlp(source * target).squeeze(-1)

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean binary cross-entropy of (L,) logits against (L,) 0/1 labels (0 when L = 0)."""
        if logits.numel() == 0:
            return connected_zero(logits)
        return F.binary_cross_entropy_with_logits(logits, labels)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(channels={self.channels}, kind={self.kind!r})"

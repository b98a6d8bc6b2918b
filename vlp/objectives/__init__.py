"""Training objectives: pure loss functions of normalised features, and their weighted sum.

Every term takes L2-normalised features and an exponentiated scale (open_clip's loss contract).
``Objective`` is the distributed shell: it gathers features from all ranks (with gradient) and
returns named losses plus their weighted total under ``"loss"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..distributed import gather_with_grad
from .contrastive import clip_loss, clip_loss_local

# Term name -> what it needs from the batch (later objectives add negatives and a teacher).
TERMS: dict[str, frozenset[str]] = {
    "clip": frozenset(),
}

__all__ = ["TERMS", "Features", "Objective", "clip_loss", "clip_loss_local"]


@dataclass
class Features:
    image: torch.Tensor  # this rank's B×D, normalised
    text: torch.Tensor  # this rank's B×D, normalised
    scale: torch.Tensor  # exp(logit_scale)


class Objective:
    """Weighted sum of named terms over the global batch."""

    def __init__(self, terms: dict[str, float], rank: int = 0, world_size: int = 1, local_loss: bool = False):
        unknown = set(terms) - set(TERMS)
        if unknown:
            raise ValueError(f"unknown objective terms: {sorted(unknown)}")
        self.terms = dict(terms)
        self.rank = rank
        self.world_size = world_size
        self.local_loss = local_loss

    def __call__(self, f: Features) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.local_loss and self.world_size > 1:
            out["clip"] = clip_loss_local(f.image, f.text, f.scale, self.rank, self.world_size)
        else:
            out["clip"] = clip_loss(gather_with_grad(f.image), gather_with_grad(f.text), f.scale)
        out["loss"] = sum(weight * out[name] for name, weight in self.terms.items())
        return out

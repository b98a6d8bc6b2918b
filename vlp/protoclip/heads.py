"""ProtoCLIP's projection heads and their own learnable scale."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class ProjectionHead(torch.nn.Sequential):
    """Linear(D→hidden) → BatchNorm1d → ReLU → Linear(hidden→out), on the unnormalised tower output."""

    def __init__(self, dim: int, hidden: int, out: int):
        super().__init__(
            torch.nn.Linear(dim, hidden), torch.nn.BatchNorm1d(hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out)
        )


class ProtoHeads(torch.nn.Module):
    """An image head, a text head and the prototype logit scale s_p (initialised to 1/0.07, clamped to
    100 like CLIP's)."""

    def __init__(self, dim: int, hidden: int, out: int):
        super().__init__()
        self.image_head = ProjectionHead(dim, hidden, out)
        self.text_head = ProjectionHead(dim, hidden, out)
        self.logit_scale = torch.nn.Parameter(torch.full([1], math.log(1 / 0.07)))  # [1]: DeepSpeed needs ndim >= 1

    def forward(self, image_raw: torch.Tensor, text_raw: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised projections of the images and of their captions (``text_raw``: the positives only)."""
        return {
            "image_proj": F.normalize(self.image_head(image_raw), dim=-1),
            "text_proj": F.normalize(self.text_head(text_raw), dim=-1),
            "proto_scale": self.logit_scale.exp(),
        }

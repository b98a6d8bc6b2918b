"""CLIP's symmetric InfoNCE (METHODS.md, "clip"), by open_clip's own ClipLoss."""

from __future__ import annotations

import torch
from open_clip import ClipLoss

_single_process = ClipLoss()


def clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """½[CE(s·V·Uᵀ, y) + CE(s·U·Vᵀ, y)] over the batch given (single-process semantics).

    ``image``, ``text``: L2-normalised B×D features; ``scale``: exp(logit_scale).
    """
    return _single_process(image, text, scale)


def clip_loss_local(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, rank: int, world_size: int):
    """open_clip's local loss: this rank's rows against the gathered columns (gathered inside,
    with gradient). Its gradient, averaged over ranks, equals the global loss's."""
    return ClipLoss(local_loss=True, gather_with_grad=True, rank=rank, world_size=world_size)(image, text, scale)

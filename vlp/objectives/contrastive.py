"""Cross-modal InfoNCE losses: CLIP's (by open_clip's own ClipLoss) and DCL, the decoupled form."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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


def dcl_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    scale: torch.Tensor,
    sigma: float | None = None,
    rows: slice = slice(None),
) -> torch.Tensor:
    """Decoupled contrastive loss (Yeh et al. 2022), cross-modal, both directions, averaged over the
    query ``rows`` (default all; METHODS.md "dcl"). It can be negative.

    The positive pair is left out of the denominator; with ``sigma`` (DCLW) the positive term of
    row i is weighted by w_i = 2 − B·softmax_i(⟨v_i,u_i⟩/σ), computed over the whole batch, detached.
    """
    n = image.shape[0]
    index = torch.arange(n, device=image.device)[rows]
    positives = (image * text).sum(-1)  # ⟨v_i, u_i⟩ for the whole batch
    weight = torch.ones_like(positives)
    if sigma is not None:
        weight = (2.0 - n * torch.softmax(positives / sigma, dim=0)).detach()
    own = F.one_hot(index, n).bool()
    terms = []
    for queries, keys in ((image[rows], text), (text[rows], image)):
        logits = scale * queries @ keys.T
        negatives = torch.logsumexp(logits.masked_fill(own, float("-inf")), dim=1)
        terms.append((-weight[rows] * scale * positives[rows] + negatives).mean())
    return (terms[0] + terms[1]) / 2

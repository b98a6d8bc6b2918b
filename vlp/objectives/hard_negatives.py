"""Losses with hard-negative captions: NegCLIP's global alignment and DeGLA's local contrasts.

Negatives come as ``neg_text``: B×K×D (caption b's K negatives), with ``neg_mask`` B×K (True = a real
negative; padding is never a competitor). In a flattened text batch the negative (b, k) sits at
``B + b·K + k`` (METHODS.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _mask_or_all(neg_text: torch.Tensor, neg_mask: torch.Tensor | None) -> torch.Tensor:
    if neg_mask is None:
        return torch.ones(neg_text.shape[:2], dtype=torch.bool, device=neg_text.device)
    return neg_mask.to(torch.bool)


def negclip_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    neg_text: torch.Tensor,
    scale: torch.Tensor,
    neg_mask: torch.Tensor | None = None,
    rows: slice = slice(None),
) -> torch.Tensor:
    """NegCLIP / DeGLA's L_base over the query ``rows`` (default all): image→text against all
    captions and all hard negatives of the batch (extra columns); text→image over positives only."""
    n = image.shape[0]
    mask = _mask_or_all(neg_text, neg_mask).reshape(-1)
    flat = neg_text.reshape(-1, neg_text.shape[-1])
    index = torch.arange(n, device=image.device)[rows]
    i2t = scale * image[rows] @ torch.cat([text, flat]).T
    i2t = torch.cat([i2t[:, :n], i2t[:, n:].masked_fill(~mask, float("-inf"))], dim=1)
    t2i = scale * text[rows] @ image.T
    return (F.cross_entropy(i2t, index) + F.cross_entropy(t2i, index)) / 2


def _own_negatives_ce(anchor, positive_logit, neg_text, scale, neg_mask) -> torch.Tensor:
    """mean_i −log softmax([pos_i, scale·⟨anchor_i, neg_{i,k}⟩ …])[0] over real negatives only."""
    mask = _mask_or_all(neg_text, neg_mask)
    neg_logits = scale * torch.einsum("bd,bkd->bk", anchor, neg_text)
    logits = torch.cat([positive_logit[:, None], neg_logits.masked_fill(~mask, float("-inf"))], dim=1)
    return F.cross_entropy(logits, torch.zeros(len(anchor), dtype=torch.long, device=anchor.device))


def igc_loss(image: Tensor, text: Tensor, neg_text: Tensor, scale: Tensor, neg_mask: Tensor | None = None) -> Tensor:
    """DeGLA's image-grounded contrast: each image ranks its caption above that caption's own
    negatives, with the learned scale. Tensors as in :func:`negclip_loss`."""
    return _own_negatives_ce(image, scale * (image * text).sum(-1), neg_text, scale, neg_mask)


def tgc_loss(
    text: torch.Tensor,
    teacher_text: torch.Tensor,
    neg_text: torch.Tensor,
    temperature: float = 0.1,
    neg_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """DeGLA's text-grounded contrast: the student's caption is pulled to the EMA teacher's embedding
    of it and pushed from the student's embeddings of its own negatives, at a fixed temperature.

    This is the paper's form; DeGLA's released code tiles its mask so that for K > 1 a caption meets
    other samples' negatives (for K = 1 the two agree, which a test pins)."""
    s = 1.0 / temperature
    teacher_text = teacher_text.detach()
    return _own_negatives_ce(text, s * (text * teacher_text).sum(-1), neg_text, s, neg_mask)

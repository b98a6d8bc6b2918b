"""The registered terms of CLIP, DCL, NegCLIP and DeGLA: each adapts a pure loss to :class:`TermInputs`.

ProtoCLIP's terms are registered beside their loss, in :mod:`vlp.protoclip.loss`.
"""

from __future__ import annotations

import torch

from .contrastive import clip_loss, clip_loss_local, dcl_loss
from .distill import distill_loss
from .hard_negatives import igc_loss, negclip_loss, tgc_loss
from .registry import NEGATIVES, TEACHER, TEACHER_ALL, LocalInputs, TermInputs, register_term


@register_term("clip")
def clip_term(x: TermInputs) -> torch.Tensor:
    """CLIP's InfoNCE by open_clip's ClipLoss."""
    f = x.f
    if x.local_loss:  # open_clip's own local loss gathers the columns itself
        return clip_loss_local(f.image, f.text, f.scale, x.rank, x.world_size)
    return clip_loss(x.image_all, x.text_all, f.scale)


@register_term("dcl")
def dcl_term(x: TermInputs) -> torch.Tensor:
    """DCL: the positive pair left out of the denominator (DCLW with objective.dcl_sigma)."""
    return dcl_loss(x.image_all, x.text_all, x.f.scale, x.options.dcl_sigma, rows=x.rows)


@register_term("negclip", needs=(NEGATIVES,))
def negclip_term(x: TermInputs) -> torch.Tensor:
    """NegCLIP: the batch's hard-negative captions as extra image→text columns."""
    return negclip_loss(x.image_all, x.text_all, x.neg_text_all, x.f.scale, x.neg_mask_all, rows=x.rows)


@register_term("igc", needs=(NEGATIVES,), scope="local")
def igc_term(x: LocalInputs) -> torch.Tensor:
    """DeGLA's image-grounded contrast: each image vs its own caption's negatives."""
    f = x.f
    return igc_loss(f.image, f.text, f.neg_text, f.scale, f.neg_mask)


@register_term("tgc", needs=(NEGATIVES, TEACHER), scope="local")
def tgc_term(x: LocalInputs) -> torch.Tensor:
    """DeGLA's text-grounded contrast: caption vs the EMA teacher's caption and its own negatives."""
    f = x.f
    return tgc_loss(f.text, f.teacher_text, f.neg_text, x.options.tgc_temperature, f.neg_mask)


@register_term("distill", needs=(TEACHER_ALL,), scope="local")
def distill_term(x: LocalInputs) -> torch.Tensor:
    """DeGLA's self-distillation: summed squared error to the EMA teacher's features."""
    f = x.f
    student, teacher = [f.image, f.text], [f.teacher_image, f.teacher_text]
    if f.neg_text is not None and f.teacher_neg_text is not None:
        real = f.neg_mask if f.neg_mask is not None else torch.ones_like(f.neg_text[..., 0], dtype=torch.bool)
        student.append(f.neg_text[real])
        teacher.append(f.teacher_neg_text[real])
    # A sum over samples: each rank's share is scaled so that the mean over ranks is the global sum.
    return x.world_size * distill_loss(student, teacher)

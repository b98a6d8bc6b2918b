"""The objective's input: one rank's L2-normalised features for a batch, and their concatenation."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch


@dataclass
class Features:
    """This rank's features for one batch (all L2-normalised)."""

    image: torch.Tensor  # B×D
    text: torch.Tensor  # B×D
    scale: torch.Tensor  # exp(logit_scale)
    neg_text: torch.Tensor | None = None  # B×K×D
    neg_mask: torch.Tensor | None = None  # B×K, True = a real negative
    teacher_image: torch.Tensor | None = None  # B×D, EMA teacher, no gradient
    teacher_text: torch.Tensor | None = None  # B×D
    teacher_neg_text: torch.Tensor | None = None  # B×K×D
    # ProtoCLIP's inputs (vlp.protoclip.episode.ProtoInputs), read only by the terms it registers; typed
    # loosely so that the objectives never import a package that builds on them. None in its first episode.
    proto: Any = None


def concat_features(parts: list[Features], scale_from: int | None = None) -> Features:
    """The features of several micro-batches as one batch (rows in order). The scale is taken from
    part ``scale_from`` (keeping its gradient), or detached from the first part when None.
    ProtoCLIP's inputs are not concatenated: its terms refuse accumulation (BatchNorm heads)."""
    if any(p.proto is not None for p in parts):
        raise ValueError("ProtoCLIP's inputs cannot be concatenated across micro-batches")
    tensors = {}
    for field in fields(Features):
        if field.name in ("scale", "proto"):
            continue
        values = [getattr(p, field.name) for p in parts]
        tensors[field.name] = None if values[0] is None else torch.cat(values)
    scale = parts[0].scale.detach() if scale_from is None else parts[scale_from].scale
    return Features(scale=scale, **tensors)

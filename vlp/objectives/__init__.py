"""Training objectives: pure loss functions of normalised features, and their weighted sum.

Every term follows open_clip's loss contract: L2-normalised features in, an exponentiated scale,
named losses out. :class:`Objective` is the distributed shell around them:

* terms that compare across the batch (``clip``, ``dcl``, ``negclip``) see the global batch: features
  are gathered from all ranks with gradient, positives and negatives separately so that negative
  (b, k) keeps its place ``B + b·K + k``; with ``local_loss`` each rank takes only its own query rows;
* per-sample terms (``igc``, ``tgc``, ``distill``, ``proto``) need nothing from other ranks and are
  computed on local rows (``distill``, a sum, is scaled by the world size so that the average over
  ranks is the global sum).

Either way the loss averaged over ranks, and its gradient averaged over ranks (as DDP and DeepSpeed
do), equal those of one process holding the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..distributed import gather_with_grad, gather_without_grad
from .contrastive import clip_loss, clip_loss_local, dcl_loss, dcl_rows
from .distill import distill_loss
from .hard_negatives import igc_loss, negclip_loss, negclip_rows, tgc_loss
from .proto import back_translate, proto_loss

NEGATIVES, TEACHER_TEXT, TEACHER_ALL, PROTO, EXTERNAL = "negatives", "teacher_text", "teacher_all", "proto", "external"
# Term name -> what it needs beyond image and caption features.
TERMS: dict[str, frozenset[str]] = {
    "clip": frozenset(),
    "dcl": frozenset(),
    "negclip": frozenset({NEGATIVES}),
    "igc": frozenset({NEGATIVES}),
    "tgc": frozenset({NEGATIVES, TEACHER_TEXT}),
    "distill": frozenset({TEACHER_ALL}),
    "proto": frozenset({PROTO}),
    "proto_external": frozenset({PROTO, EXTERNAL}),  # ProtoCLIP's external teacher (a sentence embedder)
}

__all__ = [
    "TERMS",
    "Features",
    "concat_features",
    "Objective",
    "ProtoInputs",
    "back_translate",
    "clip_loss",
    "dcl_loss",
    "distill_loss",
    "igc_loss",
    "negclip_loss",
    "proto_loss",
    "tgc_loss",
]


@dataclass
class ProtoInputs:
    """This rank's projections and episode labels, and the episode's centroids (same on all ranks)."""

    image_proj: torch.Tensor  # B×P normalised h^I
    text_proj: torch.Tensor  # B×P normalised h^T
    image_labels: torch.Tensor  # B, cluster of each image in C^I
    text_labels: torch.Tensor  # B, cluster of each caption in C^T
    scale: torch.Tensor  # s_p
    image_centroids: torch.Tensor  # C^I, K×P
    text_centroids: torch.Tensor  # C^T
    image_from_text: torch.Tensor  # C^{I←T}
    text_from_image: torch.Tensor  # C^{T←I}
    external_labels: torch.Tensor | None = None  # B, cluster of each caption in the external teacher's space
    image_from_external: torch.Tensor | None = None  # C^{I←E}: image projections averaged by those clusters
    text_from_external: torch.Tensor | None = None  # C^{T←E}


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
    proto: ProtoInputs | None = None  # None in ProtoCLIP's first episode (CLIP only)


def concat_features(parts: list[Features], scale_from: int | None = None) -> Features:
    """The features of several micro-batches as one batch (rows in order). The scale is taken from
    part ``scale_from`` (keeping its gradient), or detached from the first part when None."""

    def cat(name: str):
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else torch.cat(values)

    scale = parts[0].scale.detach() if scale_from is None else parts[scale_from].scale
    return Features(
        image=cat("image"),
        text=cat("text"),
        scale=scale,
        neg_text=cat("neg_text"),
        neg_mask=cat("neg_mask"),
        teacher_image=cat("teacher_image"),
        teacher_text=cat("teacher_text"),
        teacher_neg_text=cat("teacher_neg_text"),
    )


class Objective:
    """Weighted sum of named terms over the global batch; returns each term and ``"loss"``."""

    def __init__(
        self,
        terms: dict[str, float],
        rank: int = 0,
        world_size: int = 1,
        local_loss: bool = False,
        dcl_sigma: float | None = None,
        tgc_temperature: float = 0.1,
        proto_target_temperature: float = 0.01,
    ):
        unknown = set(terms) - set(TERMS)
        if unknown:
            raise ValueError(f"unknown objective terms: {sorted(unknown)}")
        self.terms = {name: float(w) for name, w in terms.items()}
        self.rank = rank
        self.world_size = world_size
        self.local_loss = local_loss
        self.dcl_sigma = dcl_sigma
        self.tgc_temperature = tgc_temperature
        self.proto_target_temperature = proto_target_temperature
        self.needs = frozenset().union(*(TERMS[t] for t in self.terms))

    @property
    def needs_negatives(self) -> bool:
        return NEGATIVES in self.needs

    @property
    def needs_teacher(self) -> bool:
        return bool({TEACHER_TEXT, TEACHER_ALL} & self.needs)

    def _rows(self, local_batch: int) -> slice:
        if self.local_loss and self.world_size > 1:
            return slice(self.rank * local_batch, (self.rank + 1) * local_batch)
        return slice(None)

    def __call__(self, f: Features) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        b = f.image.shape[0]
        rows = self._rows(b)
        clip_local = self.local_loss and self.world_size > 1
        if {"dcl", "negclip"} & set(self.terms) or ("clip" in self.terms and not clip_local):
            image_all, text_all = gather_with_grad(f.image), gather_with_grad(f.text)
        if "negclip" in self.terms:
            k, d = f.neg_text.shape[1:]
            neg_all = gather_with_grad(f.neg_text.reshape(b * k, d)).reshape(-1, k, d)
            mask_all = None if f.neg_mask is None else gather_without_grad(f.neg_mask)
        for name in self.terms:
            if name == "clip":
                if clip_local:
                    out[name] = clip_loss_local(f.image, f.text, f.scale, self.rank, self.world_size)
                else:
                    out[name] = clip_loss(image_all, text_all, f.scale)
            elif name == "dcl":
                out[name] = dcl_rows(image_all, text_all, f.scale, self.dcl_sigma, rows)
            elif name == "negclip":
                out[name] = negclip_rows(image_all, text_all, neg_all, f.scale, mask_all, rows)
            elif name == "igc":
                out[name] = igc_loss(f.image, f.text, f.neg_text, f.scale, f.neg_mask)
            elif name == "tgc":
                out[name] = tgc_loss(f.text, f.teacher_text, f.neg_text, self.tgc_temperature, f.neg_mask)
            elif name == "distill":
                student, teacher = [f.image, f.text], [f.teacher_image, f.teacher_text]
                if f.neg_text is not None and f.teacher_neg_text is not None:
                    real = f.neg_mask
                    if real is None:
                        real = torch.ones_like(f.neg_text[..., 0], dtype=torch.bool)
                    student.append(f.neg_text[real])
                    teacher.append(f.teacher_neg_text[real])
                # A sum over samples: each rank's share is scaled so that the mean over ranks is the sum.
                out[name] = self.world_size * distill_loss(student, teacher)
            elif name == "proto":
                out[name] = self._proto(f.proto, f.image)
            elif name == "proto_external":
                out[name] = self._proto_external(f.proto, f.image)
        out["loss"] = sum(weight * out[name] for name, weight in self.terms.items())
        return out

    def _proto_external(self, p: ProtoInputs | None, like: torch.Tensor) -> torch.Tensor:
        """The same loss with the external teacher's clusters as hard targets (METHODS.md)."""
        if p is None or p.external_labels is None:
            return like.new_zeros(())
        y = p.external_labels
        image = proto_loss(p.image_proj, p.image_from_external, p.image_from_external, y, p.scale, 0.0)
        text = proto_loss(p.text_proj, p.text_from_external, p.text_from_external, y, p.scale, 0.0)
        return (image + text) / 2

    def _proto(self, p: ProtoInputs | None, like: torch.Tensor) -> torch.Tensor:
        if p is None:  # the first episode trains CLIP only
            return like.new_zeros(())
        tau = self.proto_target_temperature
        image = proto_loss(p.image_proj, p.image_from_text, p.text_centroids, p.text_labels, p.scale, tau)
        text = proto_loss(p.text_proj, p.text_from_image, p.image_centroids, p.image_labels, p.scale, tau)
        return (image + text) / 2

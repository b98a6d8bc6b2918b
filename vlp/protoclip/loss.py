"""ProtoCLIP's prototypical contrast: the soft-target loss and its two registered terms."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..objectives.registry import EXTERNAL, HEADS, LocalInputs, register_term


def proto_loss(
    features: torch.Tensor,
    student_centroids: torch.Tensor,
    teacher_centroids: torch.Tensor,
    labels: torch.Tensor,
    scale: torch.Tensor | float,
    target_temperature: float,
) -> torch.Tensor:
    """mean_n −Σ_k q_{n,k} log softmax_k(s·⟨h_n, S_k⟩), q_n = softmax_k(⟨C_{y_n}, C_k⟩ / τ_t).

    ``features``: N×P normalised projections h; ``student_centroids`` S: K×P; ``teacher_centroids``
    C: K×P; ``labels`` y: N cluster indices in C; ``target_temperature`` τ_t ≤ 0 means hard targets.
    """
    logits = scale * features @ student_centroids.T
    if target_temperature > 0:
        teacher = teacher_centroids.detach()
        targets = torch.softmax(teacher[labels] @ teacher.T / target_temperature, dim=1)
    else:
        targets = F.one_hot(labels, student_centroids.shape[0]).to(logits.dtype)
    return -(targets * torch.log_softmax(logits, dim=1)).sum(1).mean()


# BatchNorm in the heads: micro-batch statistics differ from the whole batch's, so no exact accumulation.
@register_term("proto", needs=(HEADS,), scope="local", accumulates=False)
def proto_term(x: LocalInputs) -> torch.Tensor:
    """ProtoCLIP: each head learns the other modality's soft cluster targets via back-translated prototypes."""
    p = x.f.proto
    if p is None:  # the first episode trains CLIP only
        return x.f.image.new_zeros(())
    tau = x.options.proto_target_temperature
    image = proto_loss(p.image_proj, p.image_from_text, p.text_centroids, p.text_labels, p.scale, tau)
    text = proto_loss(p.text_proj, p.text_from_image, p.image_centroids, p.image_labels, p.scale, tau)
    return (image + text) / 2


@register_term("proto_external", needs=(HEADS, EXTERNAL), scope="local", accumulates=False)
def proto_external_term(x: LocalInputs) -> torch.Tensor:
    """ProtoCLIP's external teacher: hard targets from clustering a sentence embedder's caption features."""
    p = x.f.proto
    if p is None or p.external_labels is None:
        return x.f.image.new_zeros(())
    y = p.external_labels
    image = proto_loss(p.image_proj, p.image_from_external, p.image_from_external, y, p.scale, 0.0)
    text = proto_loss(p.text_proj, p.text_from_external, p.text_from_external, y, p.scale, 0.0)
    return (image + text) / 2

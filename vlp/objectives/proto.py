"""ProtoCLIP's prototypical contrast (Chen et al.): the soft-target loss and back translation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def back_translate(features: torch.Tensor, other_labels: torch.Tensor, k: int) -> torch.Tensor:
    """Prototypical back translation: centroid k = mean of ``features`` whose *other-modality* label
    is k (an empty cluster gives 0). Single-process; the trainer sums across ranks itself."""
    sums = torch.zeros(k, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, other_labels, features)
    counts = torch.bincount(other_labels, minlength=k).clamp(min=1).to(features.dtype)
    return sums / counts[:, None]

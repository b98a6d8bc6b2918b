"""Self-distillation towards the EMA teacher (DeGLA)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def distill_loss(
    student: torch.Tensor | Sequence[torch.Tensor], teacher: torch.Tensor | Sequence[torch.Tensor]
) -> torch.Tensor:
    """Σ‖student − teacher‖² over matching feature tensors (sum reduction, as DeGLA: it grows with
    the batch, so its weight is small, e.g. 0.005). The teacher side carries no gradient."""
    if isinstance(student, torch.Tensor):
        student, teacher = [student], [teacher]
    if len(student) != len(teacher):
        raise ValueError(f"{len(student)} student tensors for {len(teacher)} teacher tensors")
    return sum(((s - t.detach()) ** 2).sum() for s, t in zip(student, teacher, strict=True))

"""The EMA teacher of DeGLA's self-distillation: θ* ← α·θ* + (1 − α)·θ after every optimizer step.

It is a plain fp32 copy of the student module with no gradient, updated from the student's (full)
parameters; buffers (BatchNorm statistics) are copied from the student. That works under DDP and
DeepSpeed ZeRO 0–2, where every rank holds the whole module; under ZeRO-3 parameters are
partitioned, and the trainer refuses teacher terms there rather than gather the whole model every step.

Mode: DeGLA runs its teacher in eval mode, which for its ViT (no BatchNorm) means only "no dropout".
For towers with BatchNorm (vlp's ResNet) eval mode would normalise with running statistics while the
student normalises with the batch's, so a teacher equal to the student would still disagree with it
(distillation > 0 at step 0). vlp's teacher is in eval mode except its BatchNorm layers, which use the
batch's statistics like the student's, with momentum 0 so that the teacher's forward never moves its
running statistics: teacher = student gives exactly the student's features.
"""

from __future__ import annotations

import copy

import torch


class EMATeacher:
    def __init__(self, student: torch.nn.Module, decay: float = 0.9996):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(student).float().eval().requires_grad_(False)
        for m in self.module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.train()  # batch statistics, as the student in training
                m.momentum = 0.0  # ... without updating the running ones

    @torch.no_grad()
    def update(self, student: torch.nn.Module, applied: bool | torch.Tensor = True) -> None:
        """One EMA step towards ``student``; none when ``applied`` is false (the optimizer skipped the
        step). ``applied`` may be a 0-dim tensor on the device: the update then never reads it on the host."""
        if isinstance(applied, bool):
            if not applied:
                return
            weight: float | torch.Tensor = 1.0 - self.decay
        else:
            weight = applied.to(torch.float32) * (1.0 - self.decay)  # 0 leaves the teacher as it is
        for t, s in zip(self.module.parameters(), student.parameters(), strict=True):
            t.lerp_(s.detach().to(t.dtype), weight)
        for t, s in zip(self.module.buffers(), student.buffers(), strict=True):
            # BatchNorm statistics follow the student
            t.copy_(s if isinstance(applied, bool) else torch.where(applied, s.to(t.dtype), t))

    @torch.no_grad()
    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone().contiguous() for k, v in self.module.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state)

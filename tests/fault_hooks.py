"""Fault injection for the trainer's tests, installed through the trainer's hook seam:

    PYTHONPATH=. VLP_TRAIN_HOOKS=tests.fault_hooks:Faults VLP_FAULTS='{"nonfinite_loss_steps": [2]}' vlp-train ...

Keys of $VLP_FAULTS: ``nonfinite_loss_steps`` (the loss becomes NaN), ``nonfinite_grad_steps`` (the
logit scale's gradient becomes NaN), ``step_sleep`` (seconds to wait after every step).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import torch

from vlp.train.fault_seams import TrainHooks

REPO = Path(__file__).resolve().parents[1]
KEYS = {"nonfinite_loss_steps", "nonfinite_grad_steps", "step_sleep"}


def environment(**faults) -> dict[str, str]:
    """The environment of a run with these faults (on top of this process's)."""
    unknown = set(faults) - KEYS
    assert not unknown, f"unknown faults {unknown}"
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)  # for vlp-train too
    return {
        **os.environ,
        "PYTHONPATH": path,
        "VLP_TRAIN_HOOKS": "tests.fault_hooks:Faults",
        "VLP_FAULTS": json.dumps(faults),
    }


class Faults(TrainHooks):
    def __init__(self):
        faults = json.loads(os.environ.get("VLP_FAULTS", "{}"))
        self.loss_steps = set(faults.get("nonfinite_loss_steps", []))
        self.grad_steps = set(faults.get("nonfinite_grad_steps", []))
        self.sleep = float(faults.get("step_sleep", 0.0))

    def loss(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        return loss * float("nan") if step in self.loss_steps else loss

    @contextlib.contextmanager
    def backward(self, step: int, model: torch.nn.Module):
        if step not in self.grad_steps:
            yield
            return
        handle = model.clip.logit_scale.register_hook(lambda g: g * float("nan"))
        try:
            yield
        finally:
            handle.remove()

    def step_end(self, step: int) -> None:
        time.sleep(self.sleep)

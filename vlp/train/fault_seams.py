"""Seams for tests: fault injection and pacing without test-only keys in the run's configuration.

The trainer calls a :class:`TrainHooks` at three points of a step. The default does nothing. A test
installs its own by naming a class in the environment, which every process of a launched run
inherits (the module must be importable: run from the checkout, or put it on PYTHONPATH):

    PYTHONPATH=. VLP_TRAIN_HOOKS=tests.fault_hooks:Faults accelerate launch -m vlp.train ...
"""

from __future__ import annotations

import contextlib
import importlib
import os

import torch

from .errors import TrainingError

ENV = "VLP_TRAIN_HOOKS"


class TrainHooks:
    def loss(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        """The step's loss before the finiteness check (a test may make it non-finite)."""
        return loss

    def backward(self, step: int, model: torch.nn.Module) -> contextlib.AbstractContextManager:
        """A context around backward-and-step (a test may corrupt a gradient inside it)."""
        return contextlib.nullcontext()

    def step_end(self, step: int) -> None:
        """After a step is logged (a test may slow the run down to interrupt it)."""


def load_hooks() -> TrainHooks:
    """The hooks named by $VLP_TRAIN_HOOKS (``module:Class``), or the default ones."""
    spec = os.environ.get(ENV, "")
    if not spec:
        return TrainHooks()
    module, _, name = spec.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exn:
        raise TrainingError(f"${ENV}={spec!r}: cannot load the hooks ({exn})") from None
    return cls()

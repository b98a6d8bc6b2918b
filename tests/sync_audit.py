"""Counts, per optimizer step, the collectives and host syncs the trainer itself asks for, installed
through the trainer's hook seam:

    PYTHONPATH=. VLP_TRAIN_HOOKS=tests.sync_audit:Audit VLP_AUDIT_OUT=DIR accelerate launch -m vlp.train ...

Every ``torch.distributed`` collective and every host read of a tensor (``item``, ``bool``, ``tolist``,
``float``, ``int``, ``cpu``, ``numpy``) is wrapped. Each is charged to whoever asked for it, from the
Python stack at the call:

- ``engine``: inside the engine's own backward or optimizer step (DeepSpeed's, accelerate's, autograd's,
  torch.optim's): the gradient reduce, DeepSpeed's overflow check;
- ``loss``: inside the objective (vlp/objectives): the feature gathers of the loss;
- ``data``: inside the loader (data_pipelines), on host tensors;
- ``trainer``: anything else under vlp/: what the hot loop must not do on a step that neither logs,
  evaluates nor saves.

An event belongs to the step whose loss hook ran last: step s runs from its loss (after its forward)
to the next step's loss, so its backward, its agreement, logging and saving, and the next forward are
its own. Each rank writes ``DIR/rank<R>.json`` at exit: per step, the trainer's events by name, and
counts by owner. Functions DeepSpeed bound before the hooks loaded (its all-gather of partitions) are
not seen: they are the engine's, and vlp's own code looks collectives up at each call.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path

import torch
import torch.distributed as dist

from vlp.train.fault_seams import TrainHooks

COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_single",
    "all_gather_object",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "broadcast",
    "broadcast_object_list",
    "barrier",
    "reduce",
    "gather",
    "scatter",
    "all_to_all_single",
    "send",
    "recv",
    "monitored_barrier",
)
HOST_READS = ("item", "__bool__", "tolist", "__float__", "__int__", "cpu", "numpy")
# (file path fragment, function): frames that are the engine's own step.
ENGINE = {
    ("deepspeed/runtime/engine.py", "backward"),
    ("deepspeed/runtime/engine.py", "step"),
    ("deepspeed/runtime/engine.py", "forward"),
    ("accelerate/accelerator.py", "backward"),
    ("accelerate/accelerator.py", "clip_grad_norm_"),
    ("accelerate/optimizer.py", "step"),
    ("torch/autograd/__init__.py", "backward"),
    ("torch/optim/optimizer.py", "wrapper"),
}


def _owner(frame) -> str | None:
    """Who asked for the event whose caller is ``frame`` (None: not the run's code, e.g. a thread)."""
    ours = False
    while frame is not None:
        path = frame.f_code.co_filename.replace(os.sep, "/")
        if any(fragment in path and frame.f_code.co_name == name for fragment, name in ENGINE):
            return "engine"
        if "/vlp/objectives/" in path:
            return "loss"
        if "/data_pipelines/" in path:
            return "data"
        if "/vlp/" in path and "/tests/" not in path:
            ours = True
        frame = frame.f_back
    return "trainer" if ours else None


class Audit(TrainHooks):
    def __init__(self):
        self.out = Path(os.environ["VLP_AUDIT_OUT"])
        self.step = 0
        self.trainer: dict[int, list[str]] = defaultdict(list)
        self.owners: dict[int, Counter] = defaultdict(Counter)
        self._inside = False
        for name in COLLECTIVES:
            for module in (dist, dist.distributed_c10d):
                if hasattr(module, name):
                    setattr(module, name, self._wrap(getattr(module, name), f"collective:{name}"))
        for name in HOST_READS:
            setattr(torch.Tensor, name, self._wrap(getattr(torch.Tensor, name), f"sync:{name}"))
        atexit.register(self._write)

    def _wrap(self, fn, label: str):
        @functools.wraps(fn)
        def counted(*args, **kwargs):
            if self._inside:  # count the outermost call only (a collective that calls another)
                return fn(*args, **kwargs)
            self._inside = True
            try:
                owner = _owner(sys._getframe(1))
                if owner is not None:
                    self.owners[self.step][f"{owner}:{label.split(':')[0]}"] += 1
                    if owner == "trainer":
                        self.trainer[self.step].append(label)
                return fn(*args, **kwargs)
            finally:
                self._inside = False

        return counted

    def loss(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        self.step = step
        return loss

    def _write(self) -> None:
        rank = dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))
        self.out.mkdir(parents=True, exist_ok=True)
        state = {
            "trainer": {str(k): v for k, v in sorted(self.trainer.items())},
            "owners": {str(k): dict(v) for k, v in sorted(self.owners.items())},
        }
        (self.out / f"rank{rank}.json").write_text(json.dumps(state, indent=1))

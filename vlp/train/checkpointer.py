"""The run's stateful parts, each saving and loading itself, and the checkpointer that holds them.

accelerate saves what it prepared (model, optimizer, RNG states; DeepSpeed's engine). Everything else
a run needs to continue exactly is a part registered here: the trainer's counters, the loader's
position, the EMA teacher, ProtoCLIP's episode, and the files an export needs. A part decides which
rank writes (one file for all, or one per rank).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from accelerate import Accelerator
from accelerate.utils import DistributedType
from safetensors.torch import load_file, save_file

from data_pipelines.loader import DataPipelineError

from ..checkpoint import (
    TRAINER_STATE,
    deepspeed_safe_globals,
    read_trainer_state,
    refusal_error,
    save_checkpoint,
    weights_only_loads,
)
from ..common.atomic import write_json_atomic
from ..ema import EMATeacher
from .errors import TrainingError
from .reshard import load_universal


class Stateful(Protocol):
    def save(self, folder: Path) -> None: ...

    def load(self, folder: Path) -> None: ...


@dataclass
class Counters:
    """Steps done and skipped and samples seen, saved with the run's shape (world_size, batch_size,
    accum_steps, global_batch, max_steps). A resume may change the shape (setup.resolve_resume)."""

    step: int = 0
    skipped_steps: int = 0
    samples: int = 0  # samples of the global order trained on (steps x the global batch of each)
    shape: dict[str, int] = field(default_factory=dict)
    is_main: bool = True
    saved: dict = field(default_factory=dict)  # the trainer state read on resume

    def save(self, folder: Path) -> None:
        if self.is_main:
            state = {"step": self.step, "skipped_steps": self.skipped_steps, "samples": self.samples, **self.shape}
            write_json_atomic(Path(folder) / TRAINER_STATE, state, sort_keys=True)

    def load(self, folder: Path) -> None:
        self.saved = read_trainer_state(folder)
        self.step, self.skipped_steps = self.saved["step"], self.saved.get("skipped_steps", 0)
        self.samples = self.saved.get("samples", self.step * self.saved.get("global_batch", 0))


class LoaderPosition:
    """The position in the global data order, the same on every rank: the main process writes it, every
    rank reads it (exact mid-epoch resume on any number of ranks and workers)."""

    NAME = "loader.json"

    def __init__(self, loader, is_main: bool):
        self.loader, self.is_main = loader, is_main

    def save(self, folder: Path) -> None:
        if self.is_main:
            write_json_atomic(Path(folder) / self.NAME, self.loader.state_dict(), sort_keys=True)

    def load(self, folder: Path) -> None:
        path = Path(folder) / self.NAME
        if not path.is_file():
            raise TrainingError(
                f"{folder} has no {self.NAME}: it was saved by an earlier vlp whose data position was per rank "
                "and worker; it cannot continue exactly (start a new run from its weights: model.pretrained)"
            )
        try:
            self.loader.load_state_dict(json.loads(path.read_text()))
        except DataPipelineError as exn:
            raise TrainingError(str(exn)) from None


class TeacherWeights:
    """The EMA teacher: the same on every rank, so the main process writes it."""

    NAME = "teacher.safetensors"

    def __init__(self, teacher: EMATeacher, is_main: bool):
        self.teacher, self.is_main = teacher, is_main

    def save(self, folder: Path) -> None:
        if self.is_main:
            save_file(self.teacher.state_dict(), Path(folder) / self.NAME)

    def load(self, folder: Path) -> None:
        path = Path(folder) / self.NAME
        if not path.is_file():
            raise TrainingError(f"{folder} has no EMA teacher ({self.NAME}) to resume tgc/distill from")
        self.teacher.load_state_dict(load_file(path))


class RunFiles:
    """Text files kept with every checkpoint (the configuration, the export's architecture)."""

    def __init__(self, files: dict[str, str], is_main: bool):
        self.files, self.is_main = files, is_main

    def save(self, folder: Path) -> None:
        if self.is_main:
            for name, text in self.files.items():
                (Path(folder) / name).write_text(text)

    def load(self, folder: Path) -> None:
        """Nothing to restore: the configuration comes from the command line."""


class Checkpointer:
    """Saves and restores accelerate's state plus every registered part, in registration order."""

    def __init__(self, acc: Accelerator, output_dir: str, keep_last: int):
        self.acc, self.output_dir, self.keep_last = acc, output_dir, keep_last
        self.parts: dict[str, Stateful] = {}

    def register(self, name: str, part: Stateful) -> None:
        self.parts[name] = part

    def _write_parts(self, folder: Path) -> None:
        for part in self.parts.values():
            part.save(folder)

    def save(self, step: int) -> Path:
        """Collective: every rank calls it."""
        return save_checkpoint(self.acc, self.output_dir, step, self._write_parts, self.keep_last)

    def load(self, folder: Path, universal: Path | None = None) -> None:
        """Restore everything from ``folder`` (verified by the caller); the model, optimizer and RNG
        states from ``universal`` instead when given (:mod:`.reshard`: ZeRO state saved by another world
        size). Every torch file is read with weights_only, DeepSpeed's included (it asks for full
        unpickling; see vlp.export)."""
        safe = deepspeed_safe_globals() if self.acc.distributed_type == DistributedType.DEEPSPEED else []
        try:
            with weights_only_loads(safe):
                if universal is not None:
                    load_universal(self.acc, universal)
                else:
                    self.acc.load_state(str(folder))
        except pickle.UnpicklingError as exn:
            raise TrainingError(f"cannot resume: {refusal_error(folder, exn)}") from None
        for part in self.parts.values():
            part.load(folder)

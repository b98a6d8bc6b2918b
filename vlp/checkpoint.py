"""Checkpoints on disk: the layout, the collective atomic save, pruning, and what resume reads first.

A checkpoint directory ``OUTPUT/checkpoints/step_<N>/`` holds what ``accelerate.save_state`` writes
(model, optimizer and RNG states; with DeepSpeed its engine checkpoint under ``pytorch_model/``) plus
what each stateful part of the run writes for itself (vlp.train.state):

    trainer_state.json      step, skipped steps, world size, batch size, max steps
    loader_rank<R>.json     each rank's data-stream position (exact mid-epoch resume)
    teacher.safetensors     the EMA teacher (tgc, distill)
    proto_rank<R>.pt        ProtoCLIP's current episode, per rank
    config.yaml             the run configuration
    open_clip_config.json   the architecture and preprocessing, for export

It is built as ``step_<N>.partial`` and renamed once every rank has finished, so a directory named
``step_<N>`` is always complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from accelerate import Accelerator

from data_pipelines.shards.atomic import publish_dir, staging_dir, staging_path

TRAINER_STATE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / TRAINER_STATE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1][1] if found else None


def prune_checkpoints(output_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` complete checkpoints; returns the deleted ones."""
    old = [path for _, path in list_checkpoints(output_dir)[:-keep_last]]
    for path in old:
        shutil.rmtree(path, ignore_errors=True)
    return old


def save_checkpoint(
    accelerator: Accelerator, output_dir: str | os.PathLike, step: int, write: Callable[[Path], None], keep_last: int
) -> Path:
    """Collective: every rank calls it. accelerate saves the model, optimizer and RNG states, then
    ``write(folder)`` runs on every rank (the run's own stateful parts); the folder is sealed when all
    ranks are done, and older checkpoints beyond ``keep_last`` are deleted. Returns the path."""
    final = checkpoint_root(output_dir) / f"step_{step}"
    staging = staging_path(final)
    if accelerator.is_main_process:
        staging_dir(final)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    write(staging)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        publish_dir(staging, final)
        prune_checkpoints(output_dir, keep_last)
    accelerator.wait_for_everyone()
    return final


def read_trainer_state(checkpoint: str | os.PathLike) -> dict:
    path = Path(checkpoint) / TRAINER_STATE
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint} is not a vlp checkpoint (no {TRAINER_STATE})")
    return json.loads(path.read_text())

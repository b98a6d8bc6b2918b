"""Checkpoints: atomic save through accelerate (DeepSpeed engine state included), pruning, resume.

A checkpoint directory ``OUTPUT/checkpoints/step_<N>/`` holds what ``accelerate.save_state`` writes
(model, optimizer and RNG states; with DeepSpeed its engine checkpoint under ``pytorch_model/``) plus:

    trainer_state.json      step, counters, world size, batch size
    loader_rank<R>.json     each rank's data-stream position (exact mid-epoch resume)
    config.yaml             the run configuration
    open_clip_config.json   the architecture and preprocessing, for export

It is written under ``.tmp_step_<N>`` and renamed once every rank has finished, so a directory named
``step_<N>`` is always complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate import Accelerator

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


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | os.PathLike,
    step: int,
    trainer_state: dict,
    loader_state: dict,
    files: dict[str, str],
    keep_last: int,
    write_extra: Callable[[Path], None] | None = None,
) -> Path:
    """Collective: every rank calls it. ``write_extra(tmp_dir)`` runs on every rank before the
    directory is sealed (for state of the trainer's own, e.g. the EMA teacher). Returns the path."""
    root = checkpoint_root(output_dir)
    final = root / f"step_{step}"
    tmp = root / f".tmp_step_{step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    _write_json(tmp / f"loader_rank{accelerator.process_index}.json", loader_state)
    if write_extra is not None:
        write_extra(tmp)
    if accelerator.is_main_process:
        for name, text in files.items():
            (tmp / name).write_text(text)
        _write_json(tmp / TRAINER_STATE, {**trainer_state, "step": step})
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for _, old in list_checkpoints(output_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def read_trainer_state(checkpoint: str | os.PathLike) -> dict:
    path = Path(checkpoint) / TRAINER_STATE
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint} is not a vlp checkpoint (no {TRAINER_STATE})")
    return json.loads(path.read_text())


def read_loader_state(checkpoint: str | os.PathLike, rank: int) -> dict:
    return json.loads((Path(checkpoint) / f"loader_rank{rank}.json").read_text())

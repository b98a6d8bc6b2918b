"""ZeRO state across world sizes: a DeepSpeed checkpoint saved by N ranks, loaded by M.

ZeRO-1/2/3 save the optimizer state (and under ZeRO-3 the weights) in one partition per data-parallel
rank, so another world size cannot load them as they are. DeepSpeed's universal checkpoint stores every
parameter whole (fp32 master copy, Adam's two moments and step, one folder per parameter), and its
engine re-partitions that for any world size when ``load_universal_checkpoint`` is on. accelerate does
not drive it, so vlp does:

* :func:`to_universal` converts the checkpoint's engine folder (accelerate's ``pytorch_model/``) with
  ``deepspeed.checkpoint.ds_to_universal`` into ``<checkpoint>/universal/``: built in a hidden
  ``.universal-*.partial`` folder beside it, sealed with its own manifest and renamed into place, so a
  kill during the conversion leaves no ``universal/`` (the leftover is removed by the next attempt)
  and a finished one is reused by every later resume: the conversion happens once per checkpoint.
  accelerate's RNG files are copied in, so ``accelerator.load_state(<checkpoint>/universal)`` finds
  the whole state there.
* :func:`load_universal` loads it with the engine's universal switch on for that call only, then puts
  back what 0.19.8's universal load leaves out: the module's persistent buffers (BatchNorm statistics;
  the ViT towers have none) and, under ZeRO-3, each optimizer group's own hyperparameters (it copies the
  first group's onto all of them, which would give vlp's no-decay group a weight decay).

Checked by tests/test_train.py: 2 x 8 -> 1 x 16 and 1 x 16 -> 2 x 8 under ZeRO-2 continue with the
uninterrupted run's losses, and a conversion killed half way is redone once.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from ..checkpoint import DamagedCheckpoint, verify_checkpoint, write_manifest

log = logging.getLogger("vlp.train")

TAG = "pytorch_model"  # accelerate's checkpoint id of its (only) DeepSpeed engine
UNIVERSAL = "universal"
_PARTIAL_PREFIX = f".{UNIVERSAL}-"


def is_zero_checkpoint(folder: Path) -> bool:
    return any((Path(folder) / TAG).glob("*_optim_states.pt"))


def to_universal(checkpoint: str | os.PathLike) -> Path:
    """``<checkpoint>/universal``, converted now unless an earlier resume did (verified either way).

    One process converts (no process group needed); the other ranks wait for it. ``ds_to_universal``'s
    ``inject_missing_state`` is on because only Megatron-style clients save the
    ``universal_checkpoint_info`` it otherwise requires."""
    from deepspeed.checkpoint import ds_to_universal

    folder = Path(checkpoint)
    final = folder / UNIVERSAL
    if final.is_dir():
        try:
            verify_checkpoint(final)
            return final
        except DamagedCheckpoint as exn:
            log.warning("%s is damaged (%s): converting again", final, exn)
            shutil.rmtree(final)
    for stale in folder.glob(_PARTIAL_PREFIX + "*"):  # a conversion that was killed
        shutil.rmtree(stale, ignore_errors=True)
    if not is_zero_checkpoint(folder):
        raise FileNotFoundError(f"{folder / TAG} holds no DeepSpeed ZeRO checkpoint (*_optim_states.pt)")
    staging = Path(tempfile.mkdtemp(prefix=_PARTIAL_PREFIX, suffix=".partial", dir=folder))
    tic = time.perf_counter()
    try:
        args = argparse.Namespace(
            input_folder=str(folder / TAG),
            output_folder=str(staging / TAG),  # its latest_universal goes to staging/
            num_extract_workers=1,
            num_merge_workers=1,
            keep_temp_folder=False,
            strict=True,
            inject_missing_state=True,
        )
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # its per-parameter prints
            ds_to_universal.main(args)
        for rng in sorted(folder.glob("random_states_*.pkl")):
            shutil.copy2(rng, staging / rng.name)
        write_manifest(staging)  # fsyncs every file and folder
        os.rename(staging, final)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    seconds = time.perf_counter() - tic
    log.info("converted %s to a universal checkpoint in %.1f s (once: later resumes reuse it)", folder, seconds)
    return final


@contextlib.contextmanager
def universal_loads(engines: list) -> Iterator[None]:
    """Inside, the engines' ``load_checkpoint`` reads universal checkpoints (the engine reads its
    ``load_universal_checkpoint`` switch only when it loads, so it can be set after prepare)."""
    before = [e._config.load_universal_checkpoint for e in engines]
    for e in engines:
        e._config.load_universal_checkpoint = True
    try:
        yield
    finally:
        for e, b in zip(engines, before, strict=True):
            e._config.load_universal_checkpoint = b


def _restore_buffers(engine, universal: Path) -> None:
    files = sorted((universal / TAG).glob("*model_states.pt"))
    state = torch.load(files[0], map_location="cpu", weights_only=True)
    buffers = dict(engine.module.named_buffers())
    with torch.no_grad():
        for name in state.get("buffer_names") or []:
            if name in buffers and name in state["module"]:
                buffers[name].copy_(state["module"][name])


def _restore_param_groups(engine, universal: Path) -> None:
    saved = torch.load(universal / TAG / "zero" / "optimizer_state.pt", map_location="cpu", weights_only=True)
    live = engine.optimizer.optimizer.param_groups
    if len(saved["param_groups"]) != len(live):
        groups = len(saved["param_groups"])
        raise ValueError(f"the checkpoint has {groups} optimizer groups, this optimizer {len(live)}")
    for group, loaded in zip(live, saved["param_groups"], strict=True):
        group.update({k: v for k, v in loaded.items() if k != "params"})


def load_universal(accelerator, universal: Path) -> None:
    """``accelerator.load_state(universal)`` re-partitioned for this world size (weights, fp32 master
    copy, Adam moments and step), then the buffers and (ZeRO-3) group hyperparameters put back."""
    from deepspeed import DeepSpeedEngine

    engines = [m for m in accelerator._models if isinstance(m, DeepSpeedEngine)]
    with universal_loads(engines):
        accelerator.load_state(str(universal))
    for engine in engines:
        _restore_buffers(engine, universal)
        if engine.zero_optimization_stage() == 3:
            _restore_param_groups(engine, universal)

"""Resuming a run: which checkpoint (verified, rank 0 deciding for all), what a resume must keep (the
data order) and may change (the job's shape), and how state saved by N ranks continues on M."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from data_pipelines.loader.order import stable_seed
from data_pipelines.loader.stream import data_fingerprint
from data_pipelines.shards.specs import SpecError, parse_sources

from ..checkpoint import (
    DamagedCheckpoint,
    checkpoint_root,
    deepspeed_safe_globals,
    latest_good_checkpoint,
    list_checkpoints,
    read_trainer_state,
    verify_checkpoint,
    weights_only_loads,
)
from ..collectives import broadcast_object, is_distributed, rank_of_process
from ..config import Config
from .checkpointer import Counters
from .data import train_spec
from .engine import Engine
from .errors import TrainingError
from .reshard import is_zero_checkpoint, to_universal

log = logging.getLogger("vlp.train")


def resolve_resume(cfg: Config, world: int) -> Path | None:
    """The checkpoint to resume from (train.resume), verified against its manifest and checked to
    continue this run exactly. ``latest`` falls back past damaged checkpoints (each named in a
    warning) to the newest good one; a named checkpoint that is damaged stops the run.

    Reading every byte of a checkpoint is the slow part (every rank of a 64-rank job reading the same
    files from shared storage), so rank 0 decides and every other rank takes its verdict."""
    return decided_on_main(lambda: _resolve_resume(cfg, world))


def decided_on_main(decide: Callable[[], object]) -> object:
    """``decide()`` on rank 0, its result (or its TrainingError) on every rank: a collective."""
    result, error, failure = None, None, None
    if rank_of_process() == 0:
        try:
            result = decide()
        except Exception as exn:  # noqa: BLE001 - every rank must hear of it, or the others wait forever
            failure, error = exn, str(exn) if isinstance(exn, TrainingError) else f"{type(exn).__name__}: {exn}"
    if is_distributed():
        result, error = broadcast_object((result, error))
    if failure is not None:
        raise failure
    if error is not None:
        raise TrainingError(error)
    return result


def _resolve_resume(cfg: Config, world: int) -> Path | None:
    t = cfg.train
    if t.resume == "":
        return None
    if t.resume == "latest":
        path = latest_good_checkpoint(cfg.output_dir)
        if path is None:
            found = list_checkpoints(cfg.output_dir)
            if found:
                raise TrainingError(
                    f"train.resume=latest: none of the {len(found)} checkpoints in {checkpoint_root(cfg.output_dir)} "
                    "verifies (see the warnings above); nothing to resume from"
                )
            log.info("train.resume=latest: no checkpoint in %s yet, starting fresh", cfg.output_dir)
            return None
    else:
        path = Path(t.resume)
        try:
            verify_checkpoint(path)
        except DamagedCheckpoint as exn:
            raise TrainingError(f"train.resume={t.resume}: the checkpoint is damaged: {exn}") from None
    state = read_trainer_state(path)
    refuse_another_data_order(cfg, path)
    if state["step"] >= t.max_steps:
        raise TrainingError(f"{path} is at step {state['step']}, already at train.max_steps={t.max_steps}")
    return path


# What the global data order depends on, as the loader saves it, and the configuration key that sets it.
ORDER_KEYS = {"seed": "train.seed", "mode": "data.mode", "shuffle_buffer": "data.shuffle_buffer", "data": "data.train"}


def refuse_another_data_order(cfg: Config, path: Path) -> None:
    """A resume continues the checkpoint's data order: a different seed, data mode, shuffle window or
    shard list (or source weights) is refused here, naming the key, before anything is written. The
    world size, batch size, accumulation and worker count may change (docs/launching.md "Resume on any
    number of GPUs")."""
    saved_path = path / "loader.json"
    if not saved_path.is_file():
        raise TrainingError(
            f"cannot resume {path} exactly: it has no loader.json (an earlier vlp saved the data position per "
            "rank and worker); start a new run from its weights (model.pretrained)"
        )
    saved = json.loads(saved_path.read_text())
    d = cfg.data
    now = {"seed": cfg.train.seed, "mode": d.mode, "shuffle_buffer": d.shuffle_buffer}
    try:  # a shapes world not generated yet, or a spec that names no shard, is the loader's to refuse
        now["data"] = data_fingerprint(parse_sources(train_spec(cfg), d.weights), d.mode)
    except SpecError:
        pass
    for key, value in now.items():
        if saved.get(key) != value:
            what = "the shard list (file names) or source weights" if key == "data" else f"{saved.get(key)!r}"
            raise TrainingError(
                f"cannot resume {path} exactly: {ORDER_KEYS[key]} differs from the checkpoint's ({what}); the "
                "global data order depends on it. These may change between attempts: the number of ranks and "
                "machines, train.batch_size, train.accum_steps, data.workers "
                '(docs/launching.md "Resume on any number of GPUs")'
            )


def refuse_to_clobber(output_dir: str, resume_from: Path | None) -> None:
    found = list_checkpoints(output_dir)
    if found and resume_from is None:
        raise TrainingError(
            f"{output_dir} already holds checkpoints (up to step_{found[-1][0]}); continue it with "
            "train.resume=latest, or choose another output_dir"
        )


def universal_state(engine: Engine, checkpoint: Path) -> Path | None:
    """Where a ZeRO checkpoint saved by another world size is loaded from: its universal conversion
    (:func:`.reshard.to_universal`, made once by rank 0 while the others wait), or None when the
    checkpoint loads as it is (the same world size, or DDP state, which every rank holds whole)."""
    saved = int(read_trainer_state(checkpoint).get("world_size", 0))
    if saved == engine.acc.num_processes or not is_zero_checkpoint(checkpoint):
        return None
    if not engine.deepspeed:
        raise TrainingError(
            f"{checkpoint} holds DeepSpeed ZeRO state of {saved} ranks: resume it under DeepSpeed "
            "(a ZeRO launch config)"
        )
    if engine.acc.is_main_process:
        print(f"# {checkpoint}: ZeRO state of {saved} ranks, {engine.acc.num_processes} now: converting it to "
              "DeepSpeed's universal checkpoint (once; later resumes reuse it)", flush=True)  # fmt: skip

    def convert() -> str:
        with weights_only_loads(deepspeed_safe_globals()):  # DeepSpeed's files read as data only
            return str(to_universal(checkpoint))

    return Path(decided_on_main(convert))


def seed_a_new_rank(folder: Path, seed: int, step: int, rank: int) -> None:
    """A rank the checkpoint did not have (more ranks than it was saved with) has no saved RNG states
    (accelerate passes over the missing file): its Python, NumPy and torch generators are seeded from
    (seed, step, rank) instead, so a resume on a new shape is still reproducible."""
    if (folder / f"random_states_{rank}.pkl").is_file():
        return
    derived = stable_seed("rank-rng", seed, step, rank) % 2**32
    random.seed(derived)
    np.random.seed(derived)
    torch.manual_seed(derived)
    log.warning("rank %d has no RNG state in %s: seeded from (seed %d, step %d, rank)", rank, folder, seed, step)


def continue_in_samples(cfg: Config, counters: Counters, global_batch: int) -> str:
    """After a resume: what the new job shape changes, as one line for the log ("" when nothing does).

    The same global batch continues the same run, whatever the ranks, batch size per rank, accumulation
    and workers. Another global batch is allowed: the schedule is then counted in samples. The step
    counter becomes the samples trained on divided by the new global batch, and train.max_steps and
    train.warmup_steps are rescaled so that the run still ends (and warms up) after the checkpoint
    config's number of samples; log, eval and save intervals stay counted in steps."""
    saved = counters.saved
    before = int(saved.get("global_batch", 0))

    def describe(s: dict) -> str:
        return f"{s.get('world_size')} ranks x {s.get('batch_size')} x {s.get('accum_steps', 1)} accumulated"

    shape, now = describe(saved), describe(counters.shape)
    if before == global_batch:
        same = f"the same global batch of {global_batch}, the same run"
        return "" if shape == now else f"job shape {shape} -> {now}: {same}"
    t = cfg.train
    total = int(saved.get("max_steps", t.max_steps)) * before
    step, max_steps = counters.samples // global_batch, max(1, round(total / global_batch))
    warmup = round(t.warmup_steps * before / global_batch)
    line = (
        f"global batch {before} ({shape}) -> {global_batch} ({now}): the schedule is counted in samples from here; "
        f"{counters.samples} samples trained on: step {counters.step} continues as step {step}; train.max_steps "
        f"{t.max_steps} -> {max_steps} and train.warmup_steps {t.warmup_steps} -> {warmup} (the run still ends after "
        f"{total} samples); intervals (log, eval, save) stay in steps of the new batch; the data continue at the "
        "same sample; the loss is not comparable step for step with the old shape (another batch, other negatives)"
    )
    counters.step, t.max_steps, t.warmup_steps = step, max_steps, warmup
    counters.shape["max_steps"] = max_steps
    if step >= max_steps:
        raise TrainingError(f"{line}; nothing is left to train")
    return line

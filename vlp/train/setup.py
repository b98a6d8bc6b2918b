"""Build a run: engine, objective, resume decision, output folder, model, teacher, optimizer, loader,
ProtoCLIP's episodes, evaluator, schedule and checkpointer, restored from a checkpoint when resuming.

Everything that can be refused (engine limits, test hooks, resume, an occupied output_dir, evaluation
sets, a missing optional package) is refused before anything is written.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from open_clip_train.scheduler import cosine_lr

from data_pipelines.loader import StreamingLoader
from data_pipelines.loader.decode import stable_seed
from data_pipelines.loader.stream import data_fingerprint
from data_pipelines.shards.specs import SpecError, parse_sources
from data_pipelines.sources.shapes import WorldConfig, generate_world

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
from ..collectives import any_rank, broadcast_object, is_distributed, rank_of_process, world_size
from ..config import Config, generated_eval_sets, to_yaml
from ..ema import EMATeacher
from ..export import CONFIG_NAME
from ..model import DualEncoder, build_model, count_parameters, param_groups
from ..objectives import Objective, TermOptions
from ..objectives.registry import EXTERNAL, HEADS, teacher_terms
from ..protoclip.episode import Episodes
from ..protoclip.heads import ProtoHeads
from ..protoclip.teacher import SentenceTeacher
from .checkpointer import Checkpointer, Counters, LoaderPosition, RunFiles, TeacherWeights
from .engine import Engine
from .errors import TrainingError
from .evaluation import ZeroShotEvaluator, read_eval_sets
from .fault_seams import TrainHooks, load_hooks
from .reshard import is_zero_checkpoint, to_universal
from .step import Stepper
from .stopping import StopSignal

log = logging.getLogger("vlp.train")


@dataclass
class Run:
    """Everything the loop needs, built and (when resuming) restored."""

    cfg: Config
    engine: Engine
    loader: StreamingLoader
    stepper: Stepper
    lr_at: Callable[[int], float]
    counters: Counters
    checkpointer: Checkpointer
    evaluator: ZeroShotEvaluator
    episodes: Episodes | None
    hooks: TrainHooks
    stop: StopSignal
    resume_from: Path | None

    @property
    def global_batch(self) -> int:
        t = self.cfg.train
        return t.batch_size * t.accum_steps * self.engine.acc.num_processes


def _threads(cfg: Config) -> int:
    if cfg.train.threads:
        return cfg.train.threads
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, (os.cpu_count() or 1) // local)


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


def train_spec(cfg: Config) -> str:
    return cfg.data.train or str(Path(cfg.data.shapes_world) / "train")


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


def on_main_then_all(engine: Engine, fn: Callable[[], None]) -> None:
    """Run ``fn`` on the main process; if it fails, every rank raises (nobody waits forever)."""
    error = None
    if engine.acc.is_main_process:
        try:
            fn()
        except Exception as exn:  # noqa: BLE001 - re-raised below on every rank
            error = exn
    engine.acc.wait_for_everyone()
    if any_rank(error is not None):
        raise TrainingError(str(error) if error else "the main process failed during setup (see its log)")


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


def build_run(cfg: Config) -> Run:
    t, d, o = cfg.train, cfg.data, cfg.objective
    torch.set_num_threads(_threads(cfg))
    engine = Engine(t, cfg.log, cfg.output_dir)
    stop = StopSignal()  # from here on, SIGTERM/SIGINT mean "save at the first step boundary"
    acc = engine.acc
    rank, world, is_main = acc.process_index, acc.num_processes, acc.is_main_process
    # Everything that can be refused is refused before anything is written.
    options = TermOptions(o.dcl_sigma, o.tgc_temperature, o.proto.target_temperature)
    objective = Objective(o.terms, rank=rank, world_size=world_size(), local_loss=t.local_loss, options=options)
    engine.refuse(teacher_terms(o.terms))
    hooks = load_hooks()
    resume_from = resolve_resume(cfg, world)
    refuse_to_clobber(cfg.output_dir, resume_from)
    # Sets inside the shapes world that prepare_output() generates are read once it is written
    # (validate() has checked that each names one of its zero-shot sets); the others now.
    later = generated_eval_sets(cfg)
    eval_sets = read_eval_sets(replace(cfg.eval, zeroshot=[s for s in cfg.eval.zeroshot if s not in later]))
    sentence_teacher = None
    if EXTERNAL in objective.needs:
        try:
            sentence_teacher = SentenceTeacher(engine.device)
        except RuntimeError as exn:
            raise TrainingError(str(exn)) from None

    def prepare_output() -> None:
        Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
        for partial in checkpoint_root(cfg.output_dir).glob("step_*.partial"):  # a save that crashed
            shutil.rmtree(partial, ignore_errors=True)
        (Path(cfg.output_dir) / "config.yaml").write_text(to_yaml(cfg))
        if d.shapes_world:
            generate_world(d.shapes_world, WorldConfig(train_samples=d.shapes_train_samples), log=log.info)

    on_main_then_all(engine, prepare_output)
    if later:
        eval_sets = read_eval_sets(cfg.eval)
    torch.manual_seed(t.seed)  # the same initial weights on every rank
    built = build_model(cfg.model, augment=d.augment)
    heads = None
    if HEADS in objective.needs:
        heads = ProtoHeads(built.model.visual.output_dim, o.proto.hidden, o.proto.dim)
    model = DualEncoder(built.model, heads)
    total, trainable = count_parameters(model)
    teacher = EMATeacher(model, o.ema_decay) if objective.needs_teacher else None
    # The fused kernel (CPU and GPU) updates every tensor in one pass instead of a dozen
    # elementwise ops per tensor: about 6% of a CPU step at batch 128 (benchmarks/train_throughput.py).
    optimizer = torch.optim.AdamW(
        param_groups(model, t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps, fused=True
    )
    engine.prepare(model, optimizer)
    if teacher is not None:
        teacher.module.to(engine.device)  # copied from the student before prepare() moved it there
    # What the data section asks for, and what the objective needs from it (negatives, captions).
    stream = {
        "mode": d.mode,
        "weights": d.weights,
        "shuffle_buffer": d.shuffle_buffer,
        "epoch_samples": d.epoch_samples,
        "read_retries": d.read_retries,
        "decoder": d.decoder,
        "retry_backoff_s": d.retry_backoff_s,
        "cache_dir": d.cache_dir,
    }
    content = {
        "num_negatives": d.negatives if objective.needs_negatives else 0,
        "negative_types": d.negative_types,
        "negative_sampling": d.negative_sampling,
        "neighbours": d.neighbours,
        "neighbour_kinds": d.neighbour_kinds,
        "captions": sentence_teacher is not None,  # the external teacher embeds them
    }
    nice = (19 if engine.device.type == "cpu" else 0) if d.worker_nice is None else d.worker_nice
    loader = StreamingLoader(
        train_spec(cfg),
        preprocess=built.preprocess_train,
        tokenizer=built.tokenizer,
        batch_size=t.batch_size,
        seed=t.seed,
        rank=rank,
        world_size=world,
        drop_last=True,
        num_workers=d.workers,
        worker_nice=nice,
        pin_memory=engine.device.type == "cuda",
        **stream,
        **content,
    )
    episodes = None
    if heads is not None:
        p = o.proto
        episodes = Episodes(
            p.clusters, p.episode_steps, p.iters, t.seed, rank, external=sentence_teacher, restarts=p.restarts
        )
    global_batch = t.batch_size * t.accum_steps * world
    shape = {"world_size": world, "batch_size": t.batch_size, "accum_steps": t.accum_steps, "max_steps": t.max_steps}
    counters = Counters(shape={**shape, "global_batch": global_batch}, is_main=is_main)
    checkpointer = Checkpointer(acc, cfg.output_dir, t.keep_last)
    checkpointer.register("counters", counters)
    checkpointer.register("loader", LoaderPosition(loader, is_main))
    if teacher is not None:
        checkpointer.register("teacher", TeacherWeights(teacher, is_main))
    if episodes is not None:
        checkpointer.register("episode", episodes)
    files = {"config.yaml": to_yaml(cfg), CONFIG_NAME: json.dumps(built.open_clip_config, indent=2)}
    checkpointer.register("files", RunFiles(files, is_main))
    reshaped = ""
    if resume_from is not None:
        checkpointer.load(resume_from, universal=universal_state(engine, resume_from))
        reshaped = continue_in_samples(cfg, counters, global_batch)
        seed_a_new_rank(resume_from, t.seed, counters.step, rank)
    run = Run(
        cfg=cfg,
        engine=engine,
        loader=loader,
        stepper=Stepper(engine, objective, teacher, episodes, hooks, neighbours=d.neighbours),
        lr_at=cosine_lr(optimizer, t.lr, min(t.warmup_steps, t.max_steps - 1), t.max_steps),
        counters=counters,
        checkpointer=checkpointer,
        evaluator=ZeroShotEvaluator(cfg.eval, eval_sets, engine, built.preprocess_val, built.tokenizer),
        episodes=episodes,
        hooks=hooks,
        stop=stop,
        resume_from=resume_from,
    )
    if is_main:
        print("# vlp config\n" + to_yaml(cfg), flush=True)
        print(
            f"# {engine.name}, {world} process(es), precision {t.precision}, {torch.get_num_threads()} "
            f"threads/process; model {total / 1e6:.1f}M parameters ({trainable / 1e6:.1f}M trainable); "
            f"global batch {run.global_batch} = {t.batch_size} per micro-batch x {t.accum_steps} accumulated "
            f"x {world} ranks"
            + (", each sample with its neighbour as an extra row" if d.neighbours else "")
            + (f"; resuming from {resume_from} (step {counters.step})" if resume_from else ""),
            flush=True,
        )
        if reshaped:
            print(f"# {reshaped}", flush=True)
    return run

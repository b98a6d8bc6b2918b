"""Build a run: engine, objective, resume decision, output folder, model, teacher, optimizer, loader,
ProtoCLIP's episodes, evaluator, schedule and checkpointer, restored from a checkpoint when resuming.

Everything that can be refused (engine limits, test hooks, resume, an occupied output_dir, evaluation
sets, a missing optional package) is refused before anything is written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from open_clip_train.scheduler import cosine_lr

from data_pipelines.loader import StreamingLoader
from data_pipelines.sources.shapes import WorldConfig, generate_world

from ..checkpoint import checkpoint_root
from ..collectives import any_rank, world_size
from ..config import Config, generated_eval_sets, to_yaml
from ..ema import EMATeacher
from ..export import CONFIG_NAME
from ..model import BuiltModel, DualEncoder, build_model, count_parameters, param_groups
from ..objectives import Objective, TermOptions
from ..objectives.registry import EXTERNAL, HEADS, teacher_terms
from ..protoclip.episode import Episodes
from ..protoclip.heads import ProtoHeads
from ..protoclip.teacher import SentenceTeacher
from .checkpointer import Checkpointer, Counters, LoaderPosition, RunFiles, TeacherWeights
from .data import build_loader, stream_options
from .engine import Engine
from .errors import TrainingError
from .evaluation import ZeroShotEvaluator, read_eval_sets
from .fault_seams import TrainHooks, load_hooks
from .resume import continue_in_samples, refuse_to_clobber, resolve_resume, seed_a_new_rank, universal_state
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


def _prepare_output(cfg: Config) -> None:
    """The output folder (a crashed save's partial folder removed), its config.yaml, and the shapes world
    when the run generates it. Main process only."""
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    for partial in checkpoint_root(cfg.output_dir).glob("step_*.partial"):  # a save that crashed
        shutil.rmtree(partial, ignore_errors=True)
    (Path(cfg.output_dir) / "config.yaml").write_text(to_yaml(cfg))
    d = cfg.data
    if d.shapes_world:
        generate_world(d.shapes_world, WorldConfig(train_samples=d.shapes_train_samples), log=log.info)


def _external_teacher(objective: Objective, engine: Engine) -> SentenceTeacher | None:
    """ProtoCLIP's external sentence teacher, when a term needs it (its package may be missing)."""
    if EXTERNAL not in objective.needs:
        return None
    try:
        return SentenceTeacher(engine.device)
    except RuntimeError as exn:
        raise TrainingError(str(exn)) from None


@dataclass
class _Model:
    built: BuiltModel  # the open_clip model, its transforms and tokenizer
    model: DualEncoder
    teacher: EMATeacher | None
    optimizer: torch.optim.Optimizer
    parameters: tuple[int, int]  # total, trainable


def _build_model(cfg: Config, objective: Objective, engine: Engine) -> _Model:
    """The dual encoder (with ProtoCLIP's heads when a term needs them), its EMA teacher, AdamW, all
    prepared by the engine. The same initial weights on every rank."""
    t, o = cfg.train, cfg.objective
    torch.manual_seed(t.seed)
    built = build_model(cfg.model, augment=cfg.data.augment)
    heads = ProtoHeads(built.model.visual.output_dim, o.proto.hidden, o.proto.dim) if HEADS in objective.needs else None
    model = DualEncoder(built.model, heads)
    parameters = count_parameters(model)
    teacher = EMATeacher(model, o.ema_decay) if objective.needs_teacher else None
    # The fused kernel (CPU and GPU) updates every tensor in one pass instead of a dozen
    # elementwise ops per tensor: about 6% of a CPU step at batch 128 (benchmarks/train_throughput.py).
    optimizer = torch.optim.AdamW(
        param_groups(model, t.weight_decay), lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps, fused=True
    )
    engine.prepare(model, optimizer)
    if teacher is not None:
        teacher.module.to(engine.device)  # copied from the student before prepare() moved it there
    return _Model(built, model, teacher, optimizer, parameters)


def _checkpointer(
    cfg: Config, acc: Accelerator, counters: Counters, loader: StreamingLoader, m: _Model, episodes: Episodes | None
) -> Checkpointer:
    """The checkpointer and every stateful part of the run, each saving and loading its own file."""
    is_main = acc.is_main_process
    checkpointer = Checkpointer(acc, cfg.output_dir, cfg.train.keep_last)
    checkpointer.register("counters", counters)
    checkpointer.register("loader", LoaderPosition(loader, is_main))
    if m.teacher is not None:
        checkpointer.register("teacher", TeacherWeights(m.teacher, is_main))
    if episodes is not None:
        checkpointer.register("episode", episodes)
    files = {"config.yaml": to_yaml(cfg), CONFIG_NAME: json.dumps(m.built.open_clip_config, indent=2)}
    checkpointer.register("files", RunFiles(files, is_main))
    return checkpointer


def _announce(run: Run, parameters: tuple[int, int], reshaped: str) -> None:
    """The main process's header: the resolved config, then one line of what runs where."""
    cfg, t, world = run.cfg, run.cfg.train, run.engine.acc.num_processes
    total, trainable = parameters
    print("# vlp config\n" + to_yaml(cfg), flush=True)
    print(
        f"# {run.engine.name}, {world} process(es), precision {t.precision}, {torch.get_num_threads()} "
        f"threads/process; model {total / 1e6:.1f}M parameters ({trainable / 1e6:.1f}M trainable); "
        f"global batch {run.global_batch} = {t.batch_size} per micro-batch x {t.accum_steps} accumulated "
        f"x {world} ranks"
        + (", each sample with its neighbour as an extra row" if cfg.data.neighbours else "")
        + (f"; resuming from {run.resume_from} (step {run.counters.step})" if run.resume_from else ""),
        flush=True,
    )
    if reshaped:
        print(f"# {reshaped}", flush=True)


def build_run(cfg: Config) -> Run:
    t, o = cfg.train, cfg.objective
    torch.set_num_threads(_threads(cfg))
    engine = Engine(t, cfg.log, cfg.output_dir)
    stop = StopSignal()  # from here on, SIGTERM/SIGINT mean "save at the first step boundary"
    acc = engine.acc
    rank, world = acc.process_index, acc.num_processes
    # Everything that can be refused is refused before anything is written.
    options = TermOptions(o.dcl_sigma, o.tgc_temperature, o.proto.target_temperature)
    objective = Objective(o.terms, rank=rank, world_size=world_size(), local_loss=t.local_loss, options=options)
    engine.refuse(teacher_terms(o.terms))
    hooks = load_hooks()
    resume_from = resolve_resume(cfg, world)
    refuse_to_clobber(cfg.output_dir, resume_from)
    # Sets inside the shapes world that _prepare_output() generates are read once it is written
    # (validate() has checked that each names one of its zero-shot sets); the others now.
    later = generated_eval_sets(cfg)
    eval_sets = read_eval_sets(replace(cfg.eval, zeroshot=[s for s in cfg.eval.zeroshot if s not in later]))
    sentence_teacher = _external_teacher(objective, engine)

    on_main_then_all(engine, lambda: _prepare_output(cfg))
    if later:
        eval_sets = read_eval_sets(cfg.eval)
    m = _build_model(cfg, objective, engine)
    data = stream_options(cfg, objective.needs_negatives, sentence_teacher is not None, engine.device.type)
    loader = build_loader(cfg, m.built.preprocess_train, m.built.tokenizer, rank, world, data)
    episodes = None
    if m.model.heads is not None:
        p = o.proto
        episodes = Episodes(
            p.clusters, p.episode_steps, p.iters, t.seed, rank, external=sentence_teacher, restarts=p.restarts
        )
    global_batch = t.batch_size * t.accum_steps * world
    shape = {"world_size": world, "batch_size": t.batch_size, "accum_steps": t.accum_steps, "max_steps": t.max_steps}
    counters = Counters(shape={**shape, "global_batch": global_batch}, is_main=acc.is_main_process)
    checkpointer = _checkpointer(cfg, acc, counters, loader, m, episodes)
    reshaped = ""
    if resume_from is not None:
        checkpointer.load(resume_from, universal=universal_state(engine, resume_from))
        reshaped = continue_in_samples(cfg, counters, global_batch)
        seed_a_new_rank(resume_from, t.seed, counters.step, rank)
    run = Run(
        cfg=cfg,
        engine=engine,
        loader=loader,
        stepper=Stepper(engine, objective, m.teacher, episodes, hooks, neighbours=cfg.data.neighbours),
        lr_at=cosine_lr(m.optimizer, t.lr, min(t.warmup_steps, t.max_steps - 1), t.max_steps),
        counters=counters,
        checkpointer=checkpointer,
        evaluator=ZeroShotEvaluator(cfg.eval, eval_sets, engine, m.built.preprocess_val, m.built.tokenizer),
        episodes=episodes,
        hooks=hooks,
        stop=stop,
        resume_from=resume_from,
    )
    if acc.is_main_process:
        _announce(run, m.parameters, reshaped)
    return run

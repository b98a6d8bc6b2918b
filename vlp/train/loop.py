"""The training loop, top to bottom: batches in, a guarded step, logging, evaluation, checkpoints,
and a clean stop on SIGTERM/SIGINT (a checkpoint, exit 0); after too many non-finite steps in a row,
a failed checkpoint write or a rank that stopped answering, the run ends with a message (exit 1)."""

from __future__ import annotations

import time

from ..checkpoint import CheckpointWriteError
from ..config import to_dict
from ..distributed import any_rank, max_over_ranks
from ..metrics import MetricsLogger
from ..trackers import Trackers, project_name
from .collectives import Heartbeat, is_collective_failure
from .errors import EXIT_OK, TrainingError
from .finish import finish
from .setup import Run, on_main_then_all
from .stopping import NonFiniteGuard
from .throughput import DataBoundWatch


def train(run: Run) -> int:
    cfg, t, counters, backend = run.cfg, run.cfg.train, run.counters, run.backend
    logger = MetricsLogger(
        cfg.output_dir, t.max_steps, backend.acc.is_main_process, start_step=counters.step, trackers=_trackers(run)
    )
    guard = NonFiniteGuard(counters, t.max_nonfinite_steps, cfg.output_dir, counters.step if run.resume_from else None)
    losses: list[float] = []
    acc = backend.acc
    heartbeat = Heartbeat(cfg.output_dir, acc.process_index, acc.num_processes, t.collective_timeout_s)
    heartbeat.start()
    try:
        try:
            try:
                stopped = _steps(run, logger, guard, losses, heartbeat)
            finally:
                logger.close()  # before finish's summary lines (the progress bar)
            if not stopped:
                finish(run, losses)
        except CheckpointWriteError as exn:
            raise TrainingError(str(exn)) from None
        except RuntimeError as exn:
            if isinstance(exn, TrainingError) or not is_collective_failure(exn):
                raise
            raise TrainingError(heartbeat.explain(exn, counters.step)) from None
    except TrainingError as exn:
        logger.message(f"error: {exn}")
        raise
    finally:
        heartbeat.stop()
    return EXIT_OK


def _trackers(run: Run) -> Trackers | None:
    """log.trackers, started on the main process (only it logs) with the run's configuration. A tracker that
    cannot start (wandb online without a login, an unreachable mlflow server) stops every rank with its
    message, rather than leaving the others waiting in the first step's collective."""
    cfg = run.cfg
    if not cfg.log.trackers:
        return None
    started: list[Trackers] = []

    def start() -> None:
        try:
            started.append(
                Trackers(run.backend.acc, project_name(cfg.log.project, cfg.output_dir), cfg.output_dir, to_dict(cfg))
            )
        except Exception as exn:  # noqa: BLE001 - whatever the tracker's package raises
            raise TrainingError(f"log.trackers: the trackers did not start: {type(exn).__name__}: {exn}") from exn

    on_main_then_all(run.backend, start)
    return started[0] if started else None


def _steps(run: Run, logger: MetricsLogger, guard: NonFiniteGuard, losses: list[float], heartbeat: Heartbeat) -> bool:
    """Train to train.max_steps; True when a signal stopped the run first (after a checkpoint)."""
    cfg, t, counters, backend = run.cfg, run.cfg.train, run.counters, run.backend
    batches = iter(run.loader)
    watch = DataBoundWatch(t.data_warn_share, cfg.data.workers, t.batch_size * t.accum_steps)  # per rank
    while counters.step < t.max_steps:
        tic = time.perf_counter()
        if run.episodes is not None and run.episodes.due(counters.step):  # ProtoCLIP: cluster what comes
            batches = run.episodes.start(counters.step, run.loader, batches, run.stepper.embed)
        micro = [next(batches) for _ in range(t.accum_steps)]
        data_time = time.perf_counter() - tic
        counters.step += 1
        lr = run.lr_at(counters.step - 1)
        values, applied = run.stepper(micro, counters.step)
        reduced = {k: backend.acc.reduce(v.reshape(1), reduction="mean").item() for k, v in values.items()}
        step_time = time.perf_counter() - tic
        skipped = guard.check(counters.step, applied)
        if skipped:
            logger.message(skipped)
        else:
            losses.append(reduced["loss"])
        record = {
            "step": counters.step,
            **reduced,
            "lr": lr,
            "samples_per_s": run.global_batch / step_time,
            "data_time": data_time,
            "step_time": step_time,
            "data_share": data_time / step_time,
            "loader_images_per_core_s": run.loader.images_per_core_s,
            "skipped_steps": counters.skipped_steps,
            "epoch": run.loader.epoch,
            "time": time.time(),
            "peak_memory_mb": max_over_ranks(backend.peak_memory_mb()),  # the largest rank's
        }
        logger.step(counters.step, record, log=counters.step % t.log_every == 0 or not applied or counters.step == 1)
        bound = watch.check(counters.step, data_time, step_time, run.loader.images_per_core_s)
        if bound:
            logger.message(bound)
        run.hooks.step_end(counters.step)
        stopping = any_rank(run.stop.received is not None)
        if run.evaluator.due(counters.step, t.max_steps):
            logger.evaluation(counters.step, run.evaluator())
        if counters.step % t.save_every == 0 or counters.step == t.max_steps or stopping:
            path = run.checkpointer.save(counters.step)
            guard.saved_at = counters.step
            if stopping:
                logger.message(
                    f"stopped by a signal at step {counters.step}; checkpoint {path}; "
                    f"continue with train.resume=latest (output_dir={cfg.output_dir})"
                )
                return True
        heartbeat.step = counters.step
    return False

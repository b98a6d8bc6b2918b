"""The training loop, top to bottom: batches in, a guarded step, logging, evaluation, checkpoints,
and a clean stop on SIGTERM/SIGINT (a checkpoint, exit 0); after too many non-finite steps in a row,
a failed checkpoint write or a rank that stopped answering, the run ends with a message (exit 1)."""

from __future__ import annotations

import time

from ..checkpoint import CheckpointWriteError
from ..common.cli import EXIT_OK
from ..config import to_dict
from ..metrics import MetricsLogger
from ..trackers import Trackers, project_name
from .agreement import Agreement, StepWindow
from .errors import TrainingError
from .finish import finish
from .setup import Run, on_main_then_all
from .stopping import NonFiniteGuard
from .throughput import DataBoundWatch
from .watchdog import Heartbeat, is_collective_failure, wrong_device


def train(run: Run) -> int:
    cfg, t, counters, engine = run.cfg, run.cfg.train, run.counters, run.engine
    logger = MetricsLogger(
        cfg.output_dir, t.max_steps, engine.acc.is_main_process, start_step=counters.step, trackers=_trackers(run)
    )
    guard = NonFiniteGuard(counters, t.max_nonfinite_steps, cfg.output_dir, counters.step if run.resume_from else None)
    losses: list[float] = []
    acc = engine.acc
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
            if wrong_device(exn):
                raise TrainingError(wrong_device(exn)) from None
            if isinstance(exn, TrainingError) or not is_collective_failure(exn):
                raise
            raise TrainingError(heartbeat.explain(exn, counters.step)) from None
    except TrainingError as exn:
        logger.message(f"error: {exn}")
        raise
    finally:
        heartbeat.stop()
        run.loader.close()  # its workers persist across epochs: end them with the run, not at exit
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
                Trackers(run.engine.acc, project_name(cfg.log.project, cfg.output_dir), cfg.output_dir, to_dict(cfg))
            )
        except Exception as exn:  # noqa: BLE001 - whatever the tracker's package raises
            raise TrainingError(f"log.trackers: the trackers did not start: {type(exn).__name__}: {exn}") from exn

    on_main_then_all(run.engine, start)
    return started[0] if started else None


def _steps(run: Run, logger: MetricsLogger, guard: NonFiniteGuard, losses: list[float], heartbeat: Heartbeat) -> bool:
    """Train to train.max_steps; True when a signal stopped the run first (after a checkpoint).

    A step that neither logs, evaluates nor saves only queues work: its values stay on the device in
    ``window`` until the ranks agree (every train.agree_every steps, and on steps that log, evaluate or
    save), which is also when skipped steps are counted and the stop signal is seen."""
    cfg, t, counters, engine = run.cfg, run.cfg.train, run.counters, run.engine
    batches = iter(run.loader)
    watch = DataBoundWatch(t.data_warn_share, cfg.data.workers, t.batch_size * t.accum_steps)  # per rank
    window = StepWindow(engine.device)
    while counters.step < t.max_steps:
        tic = time.perf_counter()
        if run.episodes is not None and run.episodes.due(counters.step):  # ProtoCLIP: cluster what comes
            engine.sync_batchnorm_stats()  # the episode embeds in eval mode: running statistics
            batches = run.episodes.start(counters.step, run.loader, batches, run.stepper.embed)
        micro = [next(batches) for _ in range(t.accum_steps)]
        data_time = time.perf_counter() - tic
        counters.step += 1
        counters.samples += run.global_batch
        step = counters.step
        lr = run.lr_at(step - 1)
        values, applied = run.stepper(micro, step)
        step_time = time.perf_counter() - tic  # host time: the device may still be working
        window.add(step, values, applied, lr, data_time, step_time)
        bound = watch.check(step, data_time, step_time, run.loader.images_per_core_s)
        if bound:
            logger.message(bound)
        run.hooks.step_end(step)
        heartbeat.step = step
        last = step == t.max_steps
        log = step % t.log_every == 0 or step == 1 or last
        evaluate = run.evaluator.due(step, t.max_steps)
        save = step % t.save_every == 0 or last
        if not (log or evaluate or save or step % t.agree_every == 0):
            continue
        agreed = window.agree(stop=run.stop.received is not None, peak_memory_mb=engine.peak_memory_mb())
        skipped_here = False
        for row in agreed.rows:
            skipped = guard.check(row.step, row.applied)  # raises at train.max_nonfinite_steps in a row
            if skipped:
                logger.message(skipped)
                skipped_here = True
            else:
                losses.append(row.values["loss"])
        logger.step(step, _record(run, agreed), log=log or skipped_here)  # the progress bar moves either way
        if evaluate:
            engine.sync_batchnorm_stats()
            logger.evaluation(step, run.evaluator())
        if save or agreed.stop:
            engine.sync_batchnorm_stats()  # rank 0's are saved; every rank continues with them
            path = run.checkpointer.save(step)
            guard.saved_at = step
            if agreed.stop:
                logger.message(
                    f"stopped by a signal at step {step}; checkpoint {path}; "
                    f"continue with train.resume=latest (output_dir={cfg.output_dir})"
                )
                return True
    return False


def _record(run: Run, agreed: Agreement) -> dict:
    """The metrics line of the agreement's last step; rates are averaged over the agreed steps."""
    last = agreed.rows[-1]
    n = len(agreed.rows)
    step_time = sum(r.step_time for r in agreed.rows) / n
    data_time = sum(r.data_time for r in agreed.rows) / n
    return {
        "step": last.step,
        **last.values,
        "lr": last.lr,
        "samples_per_s": run.global_batch / step_time,
        "data_time": data_time,
        "step_time": step_time,
        "data_share": data_time / step_time,
        "loader_images_per_core_s": run.loader.images_per_core_s,
        "skipped_steps": run.counters.skipped_steps,
        "epoch": run.loader.epoch,
        "time": time.time(),
        "peak_memory_mb": agreed.peak_memory_mb,  # the largest rank's
    }

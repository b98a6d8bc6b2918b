"""The training loop, top to bottom: batches in, a guarded step, logging, evaluation, checkpoints,
and a clean stop on SIGTERM/SIGINT or after too many non-finite steps in a row."""

from __future__ import annotations

import logging
import signal
import time

from ..distributed import any_rank, max_over_ranks
from ..metrics import MetricsLogger
from .errors import EXIT_OK, TrainingError
from .finish import finish
from .setup import Run

log = logging.getLogger("vlp.train")


class StopSignal:
    """SIGTERM (preemption) or SIGINT (Ctrl-C) asks for a checkpoint at the next step boundary."""

    def __init__(self):
        self.received: int | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        if self.received is None:
            log.warning("received %s: saving a checkpoint at the end of this step", signal.Signals(signum).name)
        self.received = signum


class NonFiniteGuard:
    """Counts skipped steps; too many in a row end the run, naming the last good checkpoint."""

    def __init__(self, limit: int, output_dir: str, saved_at: int | None):
        self.limit, self.output_dir, self.saved_at = limit, output_dir, saved_at
        self.in_a_row = 0

    def check(self, step: int, applied: bool) -> None:
        self.in_a_row = 0 if applied else self.in_a_row + 1
        if self.in_a_row < self.limit:
            return
        where = (
            f"The last good checkpoint is step_{self.saved_at} in {self.output_dir}/checkpoints."
            if self.saved_at
            else "No checkpoint was written yet."
        )
        raise TrainingError(
            f"{self.in_a_row} steps in a row had a non-finite loss or gradient "
            f"(train.max_nonfinite_steps={self.limit}); stopping at step {step}. {where}"
        )


def train(run: Run) -> int:
    cfg, t, counters, backend = run.cfg, run.cfg.train, run.counters, run.backend
    stop = StopSignal()
    logger = MetricsLogger(cfg.output_dir, t.max_steps, backend.acc.is_main_process, start_step=counters.step)
    guard = NonFiniteGuard(t.max_nonfinite_steps, cfg.output_dir, counters.step if run.resume_from else None)
    losses: list[float] = []
    batches = iter(run.loader)
    try:
        while counters.step < t.max_steps:
            tic = time.perf_counter()
            if run.episodes is not None and run.episodes.due(counters.step):  # ProtoCLIP: cluster what comes
                batches = run.episodes.start(counters.step, run.loader, batches, run.step.embed)
            micro = [next(batches) for _ in range(t.accum_steps)]
            data_time = time.perf_counter() - tic
            counters.step += 1
            step = counters.step
            lr = run.lr_at(step - 1)
            values, applied = run.step(micro, step)
            reduced = {k: backend.acc.reduce(v.reshape(1), reduction="mean").item() for k, v in values.items()}
            step_time = time.perf_counter() - tic
            if applied:
                losses.append(reduced["loss"])
            else:
                counters.skipped_steps += 1
                logger.message(
                    f"step {step}: non-finite loss or gradient, step skipped "
                    f"({guard.in_a_row + 1} in a row, {counters.skipped_steps} in all)"
                )
            guard.check(step, applied)
            record = {
                "step": step,
                **reduced,
                "lr": lr,
                "samples_per_s": run.global_batch / step_time,
                "data_time": data_time,
                "step_time": step_time,
                "skipped_steps": counters.skipped_steps,
                "epoch": run.loader.epoch,
                "time": time.time(),
                "peak_memory_mb": max_over_ranks(backend.peak_memory_mb()),  # the largest rank's
            }
            logger.step(step, record, log=step % t.log_every == 0 or not applied or step == 1)
            run.hooks.step_end(step)
            stopping = any_rank(stop.received is not None)
            if run.evaluator.due(step, t.max_steps):
                logger.evaluation(step, run.evaluator())
            if step % t.save_every == 0 or step == t.max_steps or stopping:
                path = run.checkpointer.save(step)
                guard.saved_at = step
                if stopping:
                    logger.message(
                        f"stopped by a signal at step {step}; checkpoint {path}; "
                        f"continue with train.resume=latest (output_dir={cfg.output_dir})"
                    )
                    return EXIT_OK
    except TrainingError as exn:
        logger.message(f"error: {exn}")
        raise
    finally:
        logger.close()
    finish(run, losses)
    return EXIT_OK

"""When a run stops early: a signal asks for a checkpoint at the next step boundary; too many
non-finite steps in a row end the run, naming the last good checkpoint."""

from __future__ import annotations

import logging
import signal

from .errors import TrainingError

log = logging.getLogger("vlp.train")


class StopSignal:
    """SIGTERM (preemption) or SIGINT (Ctrl-C), from the moment the run is being built."""

    def __init__(self):
        self.received: int | None = None
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, _frame) -> None:
        if self.received is None:
            log.warning("received %s: saving a checkpoint at the end of this step", signal.Signals(signum).name)
        self.received = signum


class NonFiniteGuard:
    """Counts skipped steps (in the run's counters) and those in a row; ``limit`` in a row is fatal."""

    def __init__(self, counters, limit: int, output_dir: str, saved_at: int | None):
        self.counters, self.limit, self.output_dir, self.saved_at = counters, limit, output_dir, saved_at
        self.in_a_row = 0

    def check(self, step: int, applied: bool) -> str | None:
        """After a step: None if it was applied, else the line to log; raises at the limit."""
        if applied:
            self.in_a_row = 0
            return None
        self.in_a_row += 1
        self.counters.skipped_steps += 1
        if self.in_a_row >= self.limit:
            where = (
                f"The last good checkpoint is step_{self.saved_at} in {self.output_dir}/checkpoints."
                if self.saved_at
                else "No checkpoint was written yet."
            )
            raise TrainingError(
                f"{self.in_a_row} steps in a row had a non-finite loss or gradient "
                f"(train.max_nonfinite_steps={self.limit}); stopping at step {step}. {where}"
            )
        return (
            f"step {step}: non-finite loss or gradient, step skipped "
            f"({self.in_a_row} in a row, {self.counters.skipped_steps} in all)"
        )

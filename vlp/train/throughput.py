"""Is the run data-bound? The share of each step spent waiting for the loader, watched over a window.

``data_time`` is what the training process waited for its next batch; with enough loader workers it
is near zero. When it exceeds ``train.data_warn_share`` of the step time over the last ``WINDOW``
steps, one line says so (at most every ``EVERY`` steps), with the loader's measured images/s per core
so the user can size ``data.workers``.
"""

from __future__ import annotations

from collections import deque

WINDOW, EVERY, WARMUP = 50, 500, 10


class DataBoundWatch:
    def __init__(self, share: float, workers: int, images_per_step: int):
        self.share, self.workers, self.images_per_step = share, workers, images_per_step
        self.recent: deque[tuple[float, float]] = deque(maxlen=WINDOW)
        self.warned_at: int | None = None
        self.seen = 0

    def check(self, step: int, data_time: float, step_time: float, per_core: float | None) -> str | None:
        """After a step: the warning line, or None."""
        self.seen += 1
        if self.seen <= WARMUP:  # the first batches include the workers' start and the shuffle buffer
            return None
        self.recent.append((data_time, step_time))
        if len(self.recent) < WINDOW // 5 or (self.warned_at is not None and step - self.warned_at < EVERY):
            return None
        waited, total = sum(d for d, _ in self.recent), sum(s for _, s in self.recent)
        if total <= 0 or waited / total <= self.share:
            return None
        self.warned_at = step
        need = self.images_per_step / (total / len(self.recent))  # images/s the model consumes
        rate = f"; one loader core makes {per_core:.0f} images/s, the step takes {need:.0f}/s" if per_core else ""
        return (
            f"step {step}: data-bound: waiting for batches took {100 * waited / total:.0f}% of the last "
            f"{len(self.recent)} steps (train.data_warn_share={self.share:g}; data.workers={self.workers}{rate}); "
            "raise data.workers, or keep data.decoder=fast for JPEGs"
        )

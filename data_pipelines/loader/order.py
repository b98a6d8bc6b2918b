"""The global data order: which sample sits at each position of an epoch, as a pure function of the
shards' sample counts, the seed and the epoch (never of the world size, the batch size or the workers).

Split mode (every sample once per epoch): the shards are shuffled with ``(seed, epoch)`` and their
samples laid end to end; that sequence is cut into windows of ``window`` samples (``data.shuffle_buffer``)
and each window is permuted with a generator seeded from ``(seed, epoch, window number)``. So the
permutation of any position is computed from its window alone, and a sample moves at most ``window - 1``
places, as it would through a shuffle buffer of that size.

Resampled mode (draws with replacement): position ``p`` is a draw made with a generator seeded from
``(seed, epoch, p // DRAW_BLOCK)``: a source by its weight, a shard uniformly within it, a sample
uniformly within the shard.

A global batch of ``G`` samples is the positions ``[i G, (i + 1) G)`` of the epoch (the last
``len % G`` positions are dropped); rank ``r`` of ``W`` with ``b`` per rank (``G = W b``) takes
``[i G + r b, i G + (r + 1) b)``: the same positions form global batch ``i`` whatever ``W`` and ``b``
are, so a run may continue on another number of ranks or workers at the same position. A sample that
cannot be used is replaced by :meth:`EpochOrder.spare`, a position drawn from ``(seed, epoch, p,
attempt)``: again a function of the position alone.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

MODES = ("split", "resampled")
DRAW_BLOCK = 4096  # resampled draws are made this many at a time


def stable_seed(*parts: Any) -> int:
    """A stable 64-bit seed from any parts (Python's hash() is salted per process)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return zlib.crc32(text) << 32 | zlib.adler32(text)


def shuffled_shards(n_shards: int, *, seed: int, epoch: int) -> list[int]:
    """The epoch's shard order (split mode): shard numbers shuffled with ``(seed, epoch)``."""
    order = list(range(n_shards))
    random.Random(stable_seed("shards", seed, epoch)).shuffle(order)
    return order


class EpochOrder:
    """Position -> (shard number, sample number in the shard) for one epoch.

    Args:
        counts: samples in each shard, in spec order (every source's shards, sources joined).
        sources: each shard's source number (resampled mode's weights are per source).
        weights: per source (resampled mode).
        length: the epoch's nominal number of draws (resampled mode); split mode's is ``sum(counts)``.
    """

    def __init__(
        self,
        counts: Sequence[int],
        *,
        mode: str,
        seed: int,
        epoch: int,
        window: int = 1,
        sources: Sequence[int] | None = None,
        weights: Sequence[float] | None = None,
        length: int | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode, self.seed, self.epoch, self.window = mode, seed, epoch, max(1, window)
        self.counts = np.asarray(counts, dtype=np.int64)
        self._blocks: dict[int, np.ndarray] = {}
        if mode == "split":
            self.shard_order = np.asarray(shuffled_shards(len(self.counts), seed=seed, epoch=epoch), dtype=np.int64)
            self.ends = np.cumsum(self.counts[self.shard_order])  # end of each shard in the laid-out sequence
            self.length = int(self.ends[-1]) if len(self.ends) else 0
            return
        sources = np.zeros(len(self.counts), np.int64) if sources is None else np.asarray(sources, np.int64)
        weights = np.ones(int(sources.max(initial=0)) + 1) if weights is None else np.asarray(weights, float)
        # Shards with samples, by source; a source whose shards are all empty cannot be drawn from.
        self.by_source = [np.flatnonzero((sources == s) & (self.counts > 0)) for s in range(len(weights))]
        drawable = np.array([len(s) > 0 for s in self.by_source])
        if not drawable.any():
            raise ValueError("no shard holds a sample")
        w = np.where(drawable, weights, 0.0)
        self.source_p = w / w.sum()
        self.length = int(length if length is not None else self.counts.sum())

    def __len__(self) -> int:
        return self.length

    def batches(self, global_batch: int, start: int = 0) -> int:
        """Whole global batches of ``global_batch`` samples from position ``start`` to the epoch's end."""
        return max(0, (self.length - start) // global_batch)

    # -- split mode

    def _window(self, k: int) -> np.ndarray:
        perm = self._blocks.get(k)
        if perm is None:
            size = min(self.window, self.length - k * self.window)
            perm = np.random.default_rng(stable_seed("window", self.seed, self.epoch, k)).permutation(size)
            if len(self._blocks) >= 8:
                self._blocks.pop(next(iter(self._blocks)))
            self._blocks[k] = perm
        return perm

    def _laid_out(self, q: int) -> tuple[int, int]:
        j = int(np.searchsorted(self.ends, q, side="right"))
        before = int(self.ends[j - 1]) if j else 0
        return int(self.shard_order[j]), q - before

    # -- resampled mode

    def _draws(self, k: int) -> np.ndarray:
        block = self._blocks.get(k)
        if block is None:
            rng = np.random.default_rng(stable_seed("draws", self.seed, self.epoch, k))
            src = rng.choice(len(self.source_p), size=DRAW_BLOCK, p=self.source_p)
            shard = np.empty(DRAW_BLOCK, np.int64)
            pick = rng.random(DRAW_BLOCK)
            for s, shards in enumerate(self.by_source):
                rows = src == s
                if rows.any():
                    shard[rows] = shards[(pick[rows] * len(shards)).astype(np.int64)]
            sample = (rng.random(DRAW_BLOCK) * self.counts[shard]).astype(np.int64)
            block = np.stack([shard, sample], axis=1)
            if len(self._blocks) >= 8:
                self._blocks.pop(next(iter(self._blocks)))
            self._blocks[k] = block
        return block

    # -- both

    def at(self, p: int) -> tuple[int, int]:
        """(shard number, sample number) at position ``p`` of the epoch."""
        if not 0 <= p < self.length:
            raise IndexError(f"position {p} is outside the epoch's {self.length} samples")
        if self.mode == "resampled":
            shard, sample = self._draws(p // DRAW_BLOCK)[p % DRAW_BLOCK]
            return int(shard), int(sample)
        k, i = divmod(p, self.window)
        return self._laid_out(k * self.window + int(self._window(k)[i]))

    def spare(self, p: int, attempt: int) -> tuple[int, int]:
        """The sample standing in for position ``p`` at its ``attempt``-th (1, 2, ...) replacement: a
        position of the epoch drawn from ``(seed, epoch, p, attempt)``."""
        q = random.Random(stable_seed("spare", self.seed, self.epoch, p, attempt)).randrange(self.length)
        return self.at(q)


def rank_positions(batch: int, *, global_batch: int, per_rank: int, rank: int, start: int = 0) -> range:
    """The positions rank ``rank`` reads for global batch number ``batch`` counted from ``start``."""
    first = start + batch * global_batch + rank * per_rank
    return range(first, first + per_rank)

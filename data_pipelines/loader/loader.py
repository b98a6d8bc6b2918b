"""The streaming loader: epochs of batches from :class:`~data_pipelines.loader.stream.ShardStream`,
run in a DataLoader, with ``state_dict``/``load_state_dict`` for exact mid-epoch resume on any number
of ranks and workers."""

from __future__ import annotations

import atexit
import dataclasses
import functools
import logging
import os
import signal
import tempfile
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..shards.reader import SkipCounter
from ..shards.specs import parse_sources
from .options import StreamOptions
from .stream import DataPipelineError, ShardStream, data_fingerprint, resolve_shards

log = logging.getLogger("data_pipelines")

STATE_VERSION = 2  # 2: a position in the global order (version 1 was per rank and worker)
# What a saved position must share with the loader that continues it (the data order depends on them).
ORDER_KEYS = ("mode", "seed", "shuffle_buffer", "data")


def default_cache_dir() -> str:
    """Where copies of remote or compressed shards (and indexes of read-only ones) go by default."""
    return os.environ.get("VLP_SHARD_CACHE") or os.path.join(tempfile.gettempdir(), "vlp-shard-cache")


def _default_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _init_worker(nice: int, _worker_id: int) -> None:
    # Ctrl-C and preemption reach the whole process group; the trainer handles them at a step
    # boundary, and a worker that died of them would break the step in progress.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if nice:
        os.nice(nice)


def _close_at_exit(ref: weakref.ref) -> None:
    loader = ref()
    if loader is not None:
        loader.close()


class StreamingLoader:
    """Iterate batches of one rank over epochs, with exact mid-epoch resume.

    Batches are dicts: ``image`` (B×3×H×W), ``text`` (B×L token ids), ``key`` (list of sample keys)
    and, when ``num_negatives`` = K > 0, ``neg_text`` (B×K×L) with ``neg_mask`` (B×K, True where a
    sample had that many negatives). With ``neighbours``, also the neighbour's (hard-negative image's)
    ``neighbour_image`` (B×3×H×W), ``neighbour_text`` (B×L), ``neighbour_key`` and, when K > 0,
    ``neighbour_neg_text`` (B×K×L) with ``neighbour_neg_mask`` (B×K).

    Args:
        spec: shard spec(s), see :mod:`data_pipelines.shards.specs`; several sources joined by ``::``.
        preprocess: image transform (e.g. open_clip's), PIL image -> tensor.
        tokenizer: open_clip tokenizer, list of strings -> LongTensor.
        batch_size: per rank; the global batch is ``batch_size x world_size`` samples of the epoch's
            global order (:mod:`~data_pipelines.loader.order`), whatever the number of workers.
        rank, world_size: this process's place (default: torch.distributed's, else 0 of 1).
        options: everything else, one frozen :class:`~data_pipelines.loader.options.StreamOptions`
            (the data order, what a sample brings, reading, the DataLoader's workers).
        overrides: fields of :class:`StreamOptions` by keyword (``num_workers=2, epochs=1``), applied
            over ``options``.
    """

    def __init__(
        self,
        spec: str | Sequence[str],
        *,
        preprocess: Callable,
        tokenizer: Callable,
        batch_size: int,
        rank: int | None = None,
        world_size: int | None = None,
        options: StreamOptions | None = None,
        **overrides: Any,
    ):
        o = dataclasses.replace(options or StreamOptions(), **overrides)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if rank is None or world_size is None:
            rank, world_size = _default_rank_world()
        self.cache_dir = o.cache_dir or default_cache_dir()
        self.options = o = dataclasses.replace(o, cache_dir=self.cache_dir)
        self.sources = parse_sources(spec, o.weights)
        self.mode, self.seed, self.shuffle_buffer, self.epochs = o.mode, o.seed, o.shuffle_buffer, o.epochs
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.num_workers, self.prefetch_factor = o.num_workers, o.prefetch_factor
        self.pin_memory, self.worker_nice = o.pin_memory, o.worker_nice
        self.data = data_fingerprint(self.sources, o.mode)
        self._loader: DataLoader | None = None  # made once: its workers persist across epochs
        opening = SkipCounter(f" (rank {rank})")
        shards = resolve_shards(
            self.sources, self.cache_dir, opening, retries=o.read_retries, backoff_s=o.retry_backoff_s
        )
        self.dataset = ShardStream(
            shards,
            preprocess=preprocess,
            tokenizer=tokenizer,
            batch_size=batch_size,
            rank=rank,
            world_size=world_size,
            options=o,
            weights=[s.weight for s in self.sources],
        )
        self.epoch_samples = self._first_epoch_length(spec, opening)
        self._reset_epoch(0)
        self._skipped_done: dict[str, int] = opening.as_dict()
        self.last_batch_cpu_seconds = 0.0  # CPU time the last batch cost its worker (images_per_core_s)
        self.bytes_read = 0  # shard bytes read for the batches received so far

    def _first_epoch_length(self, spec: str | Sequence[str], opening: SkipCounter) -> int:
        """The first epoch's number of samples; fails fast when it cannot hold one global batch."""
        try:
            first = self.dataset.order(0)
        except ValueError as exn:
            raise DataPipelineError(f"{spec}: {exn} (skipped: {opening.as_dict() or 'nothing'})") from None
        if self.options.drop_last and first.batches(self.global_batch) == 0:
            raise DataPipelineError(
                f"{spec}: an epoch of {len(first)} samples holds no global batch of {self.global_batch} "
                f"({self.world_size} ranks x {self.batch_size}); use smaller batches or more data "
                f"(skipped: {opening.as_dict() or 'nothing'})"
            )
        return len(first)

    @property
    def global_batch(self) -> int:
        """Samples of the epoch's order that one batch of every rank consumes together."""
        return self.batch_size * self.world_size

    # -- state

    def _reset_epoch(self, epoch: int, position: int = 0) -> None:
        self.epoch = epoch
        self.position = position  # samples of the epoch's global order consumed (by all ranks)
        self.batches_in_epoch = 0
        self._worker_skips: dict[int, dict[str, int]] = {}

    @property
    def images_per_core_s(self) -> float | None:
        """Images per second of one loader core, from the last batch's CPU time (a data-bound run
        needs more workers, or a cheaper decoder, when this times the workers is below the step's
        images/s)."""
        cpu = self.last_batch_cpu_seconds
        return self.batch_size / cpu if cpu > 0 else None

    @property
    def skipped(self) -> dict[str, int]:
        """Skipped samples and shards by reason, over everything the caller has received (with
        ``shard_read_retries``: shard reads tried again, whether they then succeeded or not)."""
        total: dict[str, int] = dict(self._skipped_done)
        for counts in self._worker_skips.values():
            for k, v in counts.items():
                total[k] = total.get(k, 0) + v
        return dict(sorted(total.items()))

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable position in the global order after the last batch received: the same on
        every rank (except ``skipped``, this rank's counts)."""
        return {
            "version": STATE_VERSION,
            "mode": self.mode,
            "seed": self.seed,
            "shuffle_buffer": self.shuffle_buffer,
            "data": self.data,
            "epoch": self.epoch,
            "position": self.position,
            "global_batch": self.global_batch,
            "skipped": self.skipped,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (any world size, batch size or worker count; the data order's keys
        must match)."""
        if state.get("version") != STATE_VERSION:
            raise DataPipelineError(
                f"cannot resume the data stream exactly: its position was saved by a loader of version "
                f"{state.get('version')!r}, whose data order depended on the job's shape; this one reads "
                f"version {STATE_VERSION}"
            )
        for key in ORDER_KEYS:
            if state.get(key) != getattr(self, key):
                raise DataPipelineError(
                    f"cannot resume the data stream exactly: it was saved with {key}={state.get(key)!r}, "
                    f"this run has {key}={getattr(self, key)!r}"
                )
        self._reset_epoch(int(state["epoch"]), int(state["position"]))
        self._skipped_done = dict(state.get("skipped", {}))

    # -- iteration

    def _epoch_batches(self) -> Iterator[dict[str, Any]]:
        ds = self.dataset
        ds.set_position(self.epoch, self.position)
        if self.num_workers:
            if self._loader is None:
                # Persistent workers: an epoch (or an exact resume) starts without forking and importing
                # again; each iteration reads where to start from the dataset's shared position.
                ds.share_position()
                ds.set_position(self.epoch, self.position)
                self._loader = DataLoader(
                    ds,
                    batch_size=None,
                    num_workers=self.num_workers,
                    prefetch_factor=self.prefetch_factor,
                    worker_init_fn=functools.partial(_init_worker, self.worker_nice),
                    persistent_workers=True,
                    pin_memory=self.pin_memory,  # pinned batches copy to the GPU without blocking the host
                )
                # The workers ignore SIGTERM (_init_worker), so the interpreter's exit, which ends child
                # processes with it and then waits for them, would wait forever on a loader still alive
                # then (a script that leaves its loop early). This runs first: atexit is last in, first out.
                atexit.register(_close_at_exit, weakref.ref(self))
            loader = self._loader
        else:
            loader = ds
        for batch, meta in loader:
            self.last_batch_cpu_seconds = meta.cpu_seconds
            self._worker_skips[meta.worker] = meta.skipped
            self.bytes_read += meta.bytes_read
            # Batches arrive in order (worker w makes batches w, w + k, ...): each is the next global one.
            self.position += self.global_batch
            if batch is None:
                continue
            self.batches_in_epoch += 1
            yield batch

    def close(self) -> None:
        """End the worker processes (they persist across epochs); iterating again starts new ones."""
        loader, self._loader = self._loader, None
        running = getattr(loader, "_iterator", None)
        if running is None:
            return
        running._shutdown_workers()  # what the DataLoader's iterator does when it is collected
        for w in getattr(running, "_workers", []):
            if w.is_alive():  # one that missed the shutdown message; SIGTERM would not end it
                w.kill()
                w.join()

    def __enter__(self) -> StreamingLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        try:
            while self.epochs is None or self.epoch < self.epochs:
                fresh = self.position == 0  # a resume may start where no whole batch is left
                yield from self._epoch_batches()
                if self.batches_in_epoch == 0 and fresh:
                    raise DataPipelineError(
                        f"rank {self.rank}: epoch {self.epoch} produced no batch of {self.batch_size} "
                        f"(skipped: {self.skipped or 'nothing'}); every sample was filtered out or the shards "
                        "hold fewer samples than one global batch"
                    )
                self._skipped_done = self.skipped
                self._reset_epoch(self.epoch + 1)
        except Exception:
            # A stream that failed ends its workers now, not when the loader is collected (a traceback
            # that is kept, by a caller or a test, keeps the loader alive). Leaving the loop early
            # (GeneratorExit) keeps them: they serve the next iteration.
            self.close()
            raise

"""The streaming loader: epochs of batches from :class:`~data_pipelines.loader.stream.ShardStream`,
run in a DataLoader, with ``state_dict``/``load_state_dict`` for exact mid-epoch resume on any number
of ranks and workers."""

from __future__ import annotations

import atexit
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
from .decode import NEGATIVE_SAMPLING
from .stream import MODES, DataPipelineError, ShardStream, data_fingerprint, resolve_shards

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
        mode: ``split`` (every sample once per epoch, in an order shuffled with ``(seed, epoch)``) or
            ``resampled`` (draws with replacement, weighted by source).
        weights: per source, ``resampled`` mode only.
        epochs: stop after this many epochs (None: endless).
        epoch_samples: nominal epoch length in ``resampled`` mode (default: the size of the data
            when ``sizes.json`` knows it, else 1000 per shard).
        drop_last: drop the epoch's last partial global batch (keeps batch shapes equal across ranks).
        max_consecutive_skips: a sample that cannot be used is replaced by a stand-in drawn from its
            position (:meth:`~data_pipelines.loader.order.EpochOrder.spare`); a position that finds no
            usable sample in this many tries stops the run.
        negative_sampling: ``random`` (K of a sample's negatives drawn afresh each epoch) or ``fixed``
            (the first K, after the ``negative_types`` filter, in every epoch: DeGLA's data).
        captions: also return the caption strings (``caption``), e.g. for an external text teacher.
        neighbours: also return each sample's neighbour: the ``neighbour.<ext>`` member, preprocessed
            like ``image`` with a seed of its own, and the JSON ``neighbour``'s caption and negatives
            (sampled like the sample's). A sample without one is skipped (``missing_neighbour``).
        neighbour_kinds: keep only samples whose JSON neighbour's ``twin`` is one of these (e.g. the
            shapes world's ``mirror_relation``); the others are counted as ``other_neighbour_kind``.
        worker_nice: added to the workers' niceness (0-19). When training on the CPU, workers that
            yield to the compute threads keep a step's parallel regions from stalling on a
            preempted thread; the scheduler still gives them every idle cycle.
        read_retries: a remote shard whose opening or reading fails transiently while it is copied into
            ``cache_dir`` (a ``pipe:`` command exiting non-zero, an fsspec or network error, a stream
            breaking off) is read again up to this many times, passing over the samples already
            copied, before it counts as skipped (``unreadable_shard``/``truncated_shard``); each retry
            counts as ``shard_read_retries`` in :attr:`skipped`. 0: no retries. See
            :func:`~data_pipelines.shards.reader.iter_shard` for which failures are retried.
        retry_backoff_s: wait this long before the first retry of a shard, twice as long before the
            next, and so on.
        decoder: how JPEG members become pixels (:mod:`data_pipelines.loader.jpeg`): ``pil`` (the
            default here: ``preprocess`` exactly, float batches), ``fast`` (DCT-scaled libjpeg-turbo
            decode and one bilinear crop-resize; ``image`` is a uint8 B×3×H×W tensor and
            ``image_normalize`` its (mean, std): :func:`~data_pipelines.loader.jpeg.images_to` makes
            the model's input on any device; the trainer's default) or ``device`` (``image`` is a
            :class:`~data_pipelines.loader.jpeg.DeviceImages`: JPEG bytes decoded on ``.to(device)``).
        cache_dir: where shards that cannot be read by offset in place (remote URLs, ``.tar.gz``) are
            copied, once per machine, and where indexes of read-only local shards are kept
            (:mod:`data_pipelines.shards.cache`; default ``$VLP_SHARD_CACHE`` or a temporary folder).
    """

    def __init__(
        self,
        spec: str | Sequence[str],
        *,
        preprocess: Callable,
        tokenizer: Callable,
        batch_size: int,
        mode: str = "split",
        weights: Sequence[float] | None = None,
        num_workers: int = 0,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        shuffle_buffer: int = 1000,
        num_negatives: int = 0,
        negative_types: Sequence[str] | None = None,
        drop_last: bool = True,
        epochs: int | None = None,
        epoch_samples: int | None = None,
        max_consecutive_skips: int = 1000,
        prefetch_factor: int = 2,
        captions: bool = False,
        worker_nice: int = 0,
        negative_sampling: str = "random",
        neighbours: bool = False,
        neighbour_kinds: Sequence[str] | None = None,
        read_retries: int = 3,
        retry_backoff_s: float = 1.0,
        decoder: str = "pil",
        pin_memory: bool = False,
        cache_dir: str | None = None,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if negative_sampling not in NEGATIVE_SAMPLING:
            raise ValueError(f"negative_sampling must be one of {NEGATIVE_SAMPLING}, got {negative_sampling!r}")
        if not 0 <= worker_nice <= 19:
            raise ValueError(f"worker_nice must be in 0..19, got {worker_nice}")
        if num_workers < 0 or num_negatives < 0:
            raise ValueError("num_workers and num_negatives must not be negative")
        if read_retries < 0 or not retry_backoff_s >= 0:
            raise ValueError(f"read_retries ({read_retries}) and retry_backoff_s ({retry_backoff_s}) must be >= 0")
        if mode == "split" and weights is not None and any(w != 1 for w in weights):
            raise ValueError("source weights need mode='resampled' (split mode reads every sample once)")
        if rank is None or world_size is None:
            rank, world_size = _default_rank_world()
        self.sources = parse_sources(spec, weights)
        self.mode = mode
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.rank = rank
        self.world_size = world_size
        self.epochs = epochs
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self.worker_nice = worker_nice
        self.cache_dir = cache_dir or default_cache_dir()
        self.data = data_fingerprint(self.sources, mode)
        self._loader: DataLoader | None = None  # made once: its workers persist across epochs
        opening = SkipCounter(f" (rank {rank})")
        shards = resolve_shards(self.sources, self.cache_dir, opening, retries=read_retries, backoff_s=retry_backoff_s)
        self.dataset = ShardStream(
            shards,
            mode=mode,
            preprocess=preprocess,
            tokenizer=tokenizer,
            batch_size=batch_size,
            rank=rank,
            world_size=world_size,
            seed=seed,
            shuffle_buffer=shuffle_buffer,
            num_negatives=num_negatives,
            negative_types=negative_types,
            drop_last=drop_last,
            weights=[s.weight for s in self.sources],
            epoch_samples=epoch_samples,
            max_consecutive_skips=max_consecutive_skips,
            captions=captions,
            negative_sampling=negative_sampling,
            neighbours=neighbours,
            neighbour_kinds=neighbour_kinds,
            decoder=decoder,
            cache_dir=self.cache_dir,
        )
        try:
            first = self.dataset.order(0)
        except ValueError as exn:
            raise DataPipelineError(f"{spec}: {exn} (skipped: {opening.as_dict() or 'nothing'})") from None
        self.epoch_samples = len(first)
        if drop_last and first.batches(self.global_batch) == 0:
            raise DataPipelineError(
                f"{spec}: an epoch of {len(first)} samples holds no global batch of {self.global_batch} "
                f"({world_size} ranks x {batch_size}); use smaller batches or more data "
                f"(skipped: {opening.as_dict() or 'nothing'})"
            )
        self._reset_epoch(0)
        self._skipped_done: dict[str, int] = opening.as_dict()
        self.last_batch_cpu_seconds = 0.0  # CPU time the last batch cost its worker (images_per_core_s)
        self.bytes_read = 0  # shard bytes read for the batches received so far

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

"""The streaming loader: epochs of batches from :class:`~data_pipelines.loader.stream.ShardStream`,
run in a DataLoader, with ``state_dict``/``load_state_dict`` for exact mid-epoch resume."""

from __future__ import annotations

import functools
import logging
import math
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..shards.specs import parse_sources
from .decode import NEGATIVE_SAMPLING
from .plan import split_shortfall
from .stream import MODES, DataPipelineError, ShardStream

log = logging.getLogger("data_pipelines")


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
        batch_size: per rank.
        mode: ``split`` (every shard read once per epoch, dealt to ranks and workers by
            :func:`~data_pipelines.loader.plan.shard_plan`; needs at least ``world_size x
            max(1, num_workers)`` shards, else the loader refuses to start) or ``resampled``.
        weights: per source, ``resampled`` mode only.
        epochs: stop after this many epochs (None: endless).
        epoch_samples: nominal epoch length in ``resampled`` mode (default: the size of the data
            when ``sizes.json`` knows it, else 1000 per shard).
        drop_last: drop each worker's last partial batch (keeps batch shapes equal across ranks).
        max_consecutive_skips: a worker that skips this many samples in a row stops the run.
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
        read_retries: a shard whose opening or reading fails transiently (a ``pipe:`` command exiting
            non-zero, an fsspec or network error, any stream but a local file's breaking off) is read
            again up to this many times, passing over the samples already delivered, before it counts
            as skipped (``unreadable_shard``/``truncated_shard``); each retry counts as
            ``shard_read_retries`` in :attr:`skipped`. 0: no retries. See
            :func:`~data_pipelines.shards.reader.iter_shard` for which failures are retried.
        retry_backoff_s: wait this long before the first retry of a shard, twice as long before the
            next, and so on.
        decoder: how JPEG members become pixels (:mod:`data_pipelines.loader.jpeg`): ``pil`` (the
            default here: ``preprocess`` exactly, float batches), ``fast`` (DCT-scaled libjpeg-turbo
            decode and one bilinear crop-resize; ``image`` is a uint8 B×3×H×W tensor and
            ``image_normalize`` its (mean, std): :func:`~data_pipelines.loader.jpeg.images_to` makes
            the model's input on any device; the trainer's default) or ``device`` (``image`` is a
            :class:`~data_pipelines.loader.jpeg.DeviceImages`: JPEG bytes decoded on ``.to(device)``).
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
        n_shards = sum(len(s.urls) for s in self.sources)
        if mode == "split":
            # Every reader (rank x worker) needs a shard in every epoch: refuse now, with the numbers,
            # rather than leave workers idle (or whole ranks without data).
            shortfall = split_shortfall(n_shards, world_size=world_size, workers=num_workers)
            if shortfall is not None:
                raise DataPipelineError(shortfall)
        self.mode = mode
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epochs = epochs
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self._loader: DataLoader | None = None  # made once: its workers persist across epochs
        self.worker_nice = worker_nice
        batches_per_worker = None
        if mode == "resampled":
            if epoch_samples is None:
                known = [s.samples for s in self.sources]
                epoch_samples = sum(known) if all(k is not None for k in known) else 1000 * n_shards
            batches_per_worker = max(1, math.ceil(epoch_samples / (world_size * max(1, num_workers) * batch_size)))
        self.epoch_samples = epoch_samples
        self.dataset = ShardStream(
            self.sources,
            mode=mode,
            preprocess=preprocess,
            tokenizer=tokenizer,
            batch_size=batch_size,
            rank=rank,
            world_size=world_size,
            num_workers=num_workers,
            seed=seed,
            shuffle_buffer=shuffle_buffer,
            num_negatives=num_negatives,
            negative_types=negative_types,
            drop_last=drop_last,
            batches_per_worker=batches_per_worker,
            max_consecutive_skips=max_consecutive_skips,
            captions=captions,
            negative_sampling=negative_sampling,
            neighbours=neighbours,
            neighbour_kinds=neighbour_kinds,
            read_retries=read_retries,
            retry_backoff_s=retry_backoff_s,
            decoder=decoder,
        )
        self._reset_epoch(0)
        self._skipped_done: dict[str, int] = {}
        self.last_batch_cpu_seconds = 0.0  # CPU time the last batch cost its worker (images_per_core_s)

    # -- state

    def _reset_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches_in_epoch = 0
        self._positions: dict[int, int] = {}
        self._worker_skips: dict[int, dict[str, int]] = {}
        self._next_worker = 0

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
        """JSON-serialisable position of this rank's stream after the last batch received."""
        return {
            "version": 1,
            "mode": self.mode,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "num_workers": self.num_workers,
            "batch_size": self.batch_size,
            "epoch": self.epoch,
            "batches_in_epoch": self.batches_in_epoch,
            "positions": {str(k): v for k, v in sorted(self._positions.items())},
            "next_worker": self._next_worker,
            "skipped": self.skipped,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("mode", "seed", "world_size", "num_workers", "batch_size"):
            if state.get(key) != getattr(self, key):
                raise DataPipelineError(
                    f"cannot resume the data stream exactly: it was saved with {key}={state.get(key)!r}, "
                    f"this run has {key}={getattr(self, key)!r}"
                )
        self._reset_epoch(int(state["epoch"]))
        self.batches_in_epoch = int(state["batches_in_epoch"])
        self._positions = {int(k): int(v) for k, v in state["positions"].items()}
        self._next_worker = int(state["next_worker"])
        self._skipped_done = dict(state.get("skipped", {}))

    # -- iteration

    def _epoch_batches(self) -> Iterator[dict[str, Any]]:
        ds = self.dataset
        workers = max(1, self.num_workers)
        where = (self.epoch, self._next_worker % workers, dict(self._positions))
        ds.epoch, ds.rotation, ds.start_positions = where
        if self.num_workers:
            if self._loader is None:
                # Persistent workers: an epoch (or an exact resume) starts without forking and importing
                # again; each iteration reads where to start from the dataset's shared position.
                ds.share_position(self.num_workers)
                self._loader = DataLoader(
                    ds,
                    batch_size=None,
                    num_workers=self.num_workers,
                    prefetch_factor=self.prefetch_factor,
                    worker_init_fn=functools.partial(_init_worker, self.worker_nice),
                    persistent_workers=True,
                    pin_memory=self.pin_memory,  # pinned batches copy to the GPU without blocking the host
                )
            ds.set_position(*where)
            loader = self._loader
        else:
            loader = ds
        for batch, meta in loader:
            self.last_batch_cpu_seconds = meta.cpu_seconds
            self._positions[meta.worker] = meta.pos
            self._worker_skips[meta.worker] = meta.skipped
            if batch is None:
                continue
            self._next_worker = (meta.worker + 1) % workers
            self.batches_in_epoch += 1
            yield batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while self.epochs is None or self.epoch < self.epochs:
            yield from self._epoch_batches()
            if self.batches_in_epoch == 0:
                raise DataPipelineError(
                    f"rank {self.rank}: epoch {self.epoch} produced no batch of {self.batch_size} "
                    f"(skipped: {self.skipped or 'nothing'}); every sample was filtered out or the shards "
                    "hold fewer samples than one batch per worker"
                )
            self._skipped_done = self.skipped
            self._reset_epoch(self.epoch + 1)

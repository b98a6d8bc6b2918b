"""The streaming loader: webdataset shards to batches of preprocessed images and tokenised captions.

Two modes:

* ``split``: every epoch the shard list is shuffled with ``(seed, epoch)``, dealt to ranks and then to
  workers, so each sample is seen exactly once per epoch across the whole job;
* ``resampled``: every worker draws shards with replacement (a source is picked by its weight, then a
  shard uniformly within it), for weighted mixtures and endless streams; an epoch is then a nominal
  ``epoch_samples`` samples.

Everything random is seeded from ``(seed, epoch, rank, worker)`` (the sample shuffle) or from the
sample itself (augmentation, caption and negative choice), so runs are reproducible.

Exact mid-epoch resume: each worker numbers the raw samples leaving its shuffle buffer; every batch
carries that position. :meth:`StreamingLoader.state_dict` records, per worker, the position of the
last batch the caller received, and which worker serves next. On resume each worker replays its
(deterministic) raw stream and drops the consumed prefix without decoding it, and worker ids are
rotated so the DataLoader's round-robin continues where it stopped.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import random
import signal
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .samples import SkipCounter, SkipSample, caption, decode_image, iter_shard, metadata, negative_texts
from .specs import Source, parse_sources, shard_name
from .transforms import split_transform

log = logging.getLogger("data_pipelines")

MODES = ("split", "resampled")
# Shard draws in a row that give no sample before resampled mode gives up.
MAX_EMPTY_SHARD_DRAWS = 50


class DataPipelineError(RuntimeError):
    """The pipeline cannot deliver data (everything filtered, no shards for a rank, bad state)."""


def _seed(*parts: Any) -> int:
    """A stable 64-bit seed from any parts (Python's hash() is salted per process)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return zlib.crc32(text) << 32 | zlib.adler32(text)


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


@dataclass
class _BatchMeta:
    worker: int
    pos: int  # raw samples this worker has taken from its shuffle buffer, up to this batch
    skipped: dict[str, int]


class ShardStream(IterableDataset):
    """One rank's stream of batches; iterated inside DataLoader workers (or in-process)."""

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        mode: str,
        preprocess: Callable,
        tokenizer: Callable,
        batch_size: int,
        rank: int,
        world_size: int,
        num_workers: int,
        seed: int,
        shuffle_buffer: int,
        num_negatives: int,
        negative_types: Sequence[str] | None,
        drop_last: bool,
        batches_per_worker: int | None,
        max_consecutive_skips: int,
        captions: bool = False,
    ):
        self.sources = list(sources)
        self.captions = captions
        self.mode = mode
        self.transform = split_transform(preprocess)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.num_negatives = num_negatives
        self.negative_types = negative_types
        self.drop_last = drop_last
        self.batches_per_worker = batches_per_worker
        self.max_consecutive_skips = max_consecutive_skips
        # Set by the loader before each epoch's DataLoader is created.
        self.epoch = 0
        self.rotation = 0
        self.start_positions: dict[int, int] = {}

    # -- which shards this worker reads

    def _split_urls(self, worker: int, workers: int) -> list[str]:
        urls = [u for s in self.sources for u in s.urls]
        random.Random(_seed("shards", self.seed, self.epoch)).shuffle(urls)
        return urls[self.rank :: self.world_size][worker::workers]

    def _resampled_urls(self, worker: int) -> Iterator[str]:
        rng = random.Random(_seed("resample", self.seed, self.epoch, self.rank, worker))
        weights = [s.weight for s in self.sources]
        while True:
            source = rng.choices(self.sources, weights)[0]
            yield source.urls[rng.randrange(len(source.urls))]

    def _raw_samples(self, worker: int, workers: int, counter: SkipCounter) -> Iterator[dict]:
        if self.mode == "split":
            for url in self._split_urls(worker, workers):
                yield from iter_shard(url, counter)
            return
        empty = 0
        for url in self._resampled_urls(worker):
            n = 0
            for sample in iter_shard(url, counter):
                n += 1
                yield sample
            empty = 0 if n else empty + 1
            if empty >= MAX_EMPTY_SHARD_DRAWS:
                raise DataPipelineError(
                    f"rank {self.rank} worker {worker}: {empty} shard draws in a row gave no sample "
                    f"(skipped so far: {counter.as_dict()}); check the spec and the shards"
                )

    # -- turning raw samples into batches

    def _sample_seed(self, sample: dict, worker: int, pos: int) -> int:
        where = () if self.mode == "split" else (self.rank, worker, pos)
        return _seed("sample", self.seed, self.epoch, shard_name(sample["__url__"]), sample["__key__"], *where)

    def _decode(self, sample: dict, seed: int, in_worker: bool) -> tuple[Any, str, list[str]]:
        rng = random.Random(seed)
        # The JSON member is parsed only when it is needed (negatives, or no .txt caption).
        meta = metadata(sample) if self.num_negatives or "txt" not in sample else {}
        text = caption(sample, meta, rng)
        negs: list[str] = []
        if self.num_negatives:
            negs = negative_texts(meta, sample, self.negative_types)
            if len(negs) > self.num_negatives:
                negs = rng.sample(negs, self.num_negatives)
        image = decode_image(sample)
        # Augmentations draw from torch's global generator: seed it per sample, so a sample's
        # augmentation does not depend on what was decoded before it (or skipped on resume). A
        # worker process owns its generator; in the trainer's process it is saved and restored.
        with contextlib.nullcontext() if in_worker else torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF)
            pixels = self.transform.per_sample(image)
        return pixels, text, negs

    def _collate(self, items: list[tuple[Any, str, list[str], str]]) -> dict[str, Any]:
        batch: dict[str, Any] = {
            "image": self.transform.per_batch([it[0] for it in items]),
            "text": self.tokenizer([it[1] for it in items]),
            "key": [it[3] for it in items],
        }
        if self.captions:
            batch["caption"] = [it[1] for it in items]
        if self.num_negatives:
            k = self.num_negatives
            flat = [(negs[j] if j < len(negs) else "") for _, _, negs, _ in items for j in range(k)]
            tokens = self.tokenizer(flat)
            batch["neg_text"] = tokens.view(len(items), k, -1)
            batch["neg_mask"] = torch.tensor([[j < len(negs) for j in range(k)] for _, _, negs, _ in items])
        return batch

    def __iter__(self) -> Iterator[tuple[dict[str, Any], _BatchMeta]]:
        info = get_worker_info()
        physical, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        worker = (physical + self.rotation) % workers
        counter = SkipCounter(f" (rank {self.rank}, worker {worker})")
        raw = self._raw_samples(worker, workers, counter)
        rng = random.Random(_seed("shuffle", self.seed, self.epoch, self.rank, worker))
        if self.shuffle_buffer > 1:
            raw = wds.shuffle(self.shuffle_buffer, max(1, self.shuffle_buffer // 10), rng=rng)(raw)
        start = self.start_positions.get(worker, 0)
        pos = 0
        items: list = []
        batches = 0
        bad_in_a_row = 0
        for sample in raw:
            pos += 1
            if pos <= start:
                continue  # consumed before the checkpoint: replayed for the shuffle state, not decoded
            try:
                pixels, text, negs = self._decode(sample, self._sample_seed(sample, worker, pos), info is not None)
            except SkipSample as skip:
                counter.add(skip.reason, skip.detail)
                bad_in_a_row += 1
                if bad_in_a_row >= self.max_consecutive_skips:
                    raise DataPipelineError(
                        f"rank {self.rank} worker {worker}: {bad_in_a_row} samples in a row were skipped "
                        f"({counter.as_dict()}); the shards do not match what the loader expects "
                        "(an image member jpg/jpeg/png/webp and a caption in .txt or .json)"
                    ) from None
                continue
            bad_in_a_row = 0
            items.append((pixels, text, negs, sample["__key__"]))
            if len(items) == self.batch_size:
                yield self._collate(items), _BatchMeta(worker, pos, counter.as_dict())
                items = []
                batches += 1
                if self.batches_per_worker is not None and batches >= self.batches_per_worker:
                    return
        if items and not self.drop_last:
            yield self._collate(items), _BatchMeta(worker, pos, counter.as_dict())
        elif pos > 0 or counter.counts:
            # The last, dropped partial batch still moves the position past the end of the stream.
            yield None, _BatchMeta(worker, pos, counter.as_dict())


class StreamingLoader:
    """Iterate batches of one rank over epochs, with exact mid-epoch resume.

    Batches are dicts: ``image`` (B×3×H×W), ``text`` (B×L token ids), ``key`` (list of sample keys)
    and, when ``num_negatives`` = K > 0, ``neg_text`` (B×K×L) with ``neg_mask`` (B×K, True where a
    sample had that many negatives).

    Args:
        spec: shard spec(s), see :mod:`data_pipelines.specs`; several sources joined by ``::``.
        preprocess: image transform (e.g. open_clip's), PIL image -> tensor.
        tokenizer: open_clip tokenizer, list of strings -> LongTensor.
        batch_size: per rank.
        mode: ``split`` or ``resampled``.
        weights: per source, ``resampled`` mode only.
        epochs: stop after this many epochs (None: endless).
        epoch_samples: nominal epoch length in ``resampled`` mode (default: the size of the data
            when ``sizes.json`` knows it, else 1000 per shard).
        drop_last: drop each worker's last partial batch (keeps batch shapes equal across ranks).
        max_consecutive_skips: a worker that skips this many samples in a row stops the run.
        captions: also return the caption strings (``caption``), e.g. for an external text teacher.
        worker_nice: added to the workers' niceness (0-19). When training on the CPU, workers that
            yield to the compute threads keep a step's parallel regions from stalling on a
            preempted thread; the scheduler still gives them every idle cycle.
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
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= worker_nice <= 19:
            raise ValueError(f"worker_nice must be in 0..19, got {worker_nice}")
        if num_workers < 0 or num_negatives < 0:
            raise ValueError("num_workers and num_negatives must not be negative")
        if mode == "split" and weights is not None and any(w != 1 for w in weights):
            raise ValueError("source weights need mode='resampled' (split mode reads every sample once)")
        if rank is None or world_size is None:
            rank, world_size = _default_rank_world()
        self.sources = parse_sources(spec, weights)
        n_shards = sum(len(s.urls) for s in self.sources)
        if mode == "split" and n_shards < world_size:
            raise DataPipelineError(
                f"{n_shards} shards cannot feed {world_size} ranks in split mode; "
                "write more, smaller shards or use mode='resampled'"
            )
        if mode == "split" and n_shards < world_size * max(1, num_workers):
            log.warning(
                "%d shards for %d ranks x %d workers: some workers will be idle", n_shards, world_size, num_workers
            )
        self.mode = mode
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epochs = epochs
        self.prefetch_factor = prefetch_factor
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
        )
        self._reset_epoch(0)
        self._skipped_done: dict[str, int] = {}

    # -- state

    def _reset_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches_in_epoch = 0
        self._positions: dict[int, int] = {}
        self._worker_skips: dict[int, dict[str, int]] = {}
        self._next_worker = 0

    @property
    def skipped(self) -> dict[str, int]:
        """Skipped samples and shards by reason, over everything the caller has received."""
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
        ds.epoch = self.epoch
        ds.start_positions = dict(self._positions)
        workers = max(1, self.num_workers)
        ds.rotation = self._next_worker % workers
        if self.num_workers:
            loader = DataLoader(
                ds,
                batch_size=None,
                num_workers=self.num_workers,
                prefetch_factor=self.prefetch_factor,
                worker_init_fn=functools.partial(_init_worker, self.worker_nice),
            )
        else:
            loader = ds
        for batch, meta in loader:
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

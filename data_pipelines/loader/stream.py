"""One rank's stream of batches (an ``IterableDataset``, iterated inside DataLoader workers).

Which shards a worker reads (split mode: its part of :func:`~data_pipelines.loader.plan.shard_plan`;
resampled: drawn with replacement), the shuffle buffer, and the batches (samples decoded
by :mod:`.decode`), each tagged with the worker's position in its raw stream so that
:class:`~data_pipelines.loader.StreamingLoader` can resume exactly.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from ..shards.reader import SkipCounter, SkipSample, iter_shard
from ..shards.specs import Source, shard_name
from .decode import SampleDecoder
from .decode import stable_seed as _seed
from .plan import rank_shards

MODES = ("split", "resampled")
# Shard draws in a row that give no sample before resampled mode gives up.
MAX_EMPTY_SHARD_DRAWS = 50


class DataPipelineError(RuntimeError):
    """The pipeline cannot deliver data (everything filtered, no shards for a rank, bad state)."""


@dataclass
class _BatchMeta:
    worker: int
    pos: int  # raw samples this worker has taken from its shuffle buffer, up to this batch
    skipped: dict[str, int]
    # CPU seconds this worker's thread spent making the batch (reading, decoding, collating): the
    # loader's cost per image, whatever else the machine is doing.
    cpu_seconds: float = 0.0


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
        negative_sampling: str = "random",
        neighbours: bool = False,
        neighbour_kinds: Sequence[str] | None = None,
        read_retries: int = 3,
        retry_backoff_s: float = 1.0,
        decoder: str = "pil",
    ):
        self.sources = list(sources)
        self.mode = mode
        self.decoder = SampleDecoder(
            preprocess,
            tokenizer,
            num_negatives,
            negative_types,
            negative_sampling,
            neighbours,
            captions,
            neighbour_kinds,
            decoder,
        )
        self.transform = self.decoder.transform
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.drop_last = drop_last
        self.batches_per_worker = batches_per_worker
        self.max_consecutive_skips = max_consecutive_skips
        self.read_retries = read_retries
        self.retry_backoff_s = retry_backoff_s
        # Set by the loader before each epoch's DataLoader is created.
        self.epoch = 0
        self.rotation = 0
        self.start_positions: dict[int, int] = {}
        # With persistent DataLoader workers the main process cannot reassign these attributes in the
        # workers' copies: they read them from this shared array at the start of every iteration.
        self._shared: Any = None

    # -- which shards this worker reads

    def _split_urls(self, worker: int, workers: int) -> list[str]:
        # This reader's part of the epoch's shard plan (:mod:`.plan`: shuffled with (seed, epoch), dealt
        # to ranks, then to workers).
        urls = [u for s in self.sources for u in s.urls]
        return rank_shards(
            urls,
            seed=self.seed,
            epoch=self.epoch,
            world_size=self.world_size,
            workers=workers,
            rank=self.rank,
            worker=worker,
        )

    def _resampled_urls(self, worker: int) -> Iterator[str]:
        rng = random.Random(_seed("resample", self.seed, self.epoch, self.rank, worker))
        weights = [s.weight for s in self.sources]
        while True:
            source = rng.choices(self.sources, weights)[0]
            yield source.urls[rng.randrange(len(source.urls))]

    def _read(self, url: str, counter: SkipCounter) -> Iterator[dict]:
        return iter_shard(url, counter, retries=self.read_retries, backoff_s=self.retry_backoff_s)

    def _raw_samples(self, worker: int, workers: int, counter: SkipCounter) -> Iterator[dict]:
        if self.mode == "split":
            for url in self._split_urls(worker, workers):
                yield from self._read(url, counter)
            return
        empty = 0
        for url in self._resampled_urls(worker):
            n = 0
            for sample in self._read(url, counter):
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

    def share_position(self, workers: int) -> None:
        """Make (epoch, rotation, each worker's start) shared with worker processes made from now on."""
        self._shared = multiprocessing.RawArray("q", 2 + workers)

    def set_position(self, epoch: int, rotation: int, start_positions: dict[int, int]) -> None:
        """Where the next iteration starts, in every worker (before ``iter(DataLoader)``)."""
        self._shared[0], self._shared[1] = epoch, rotation
        for w in range(len(self._shared) - 2):
            self._shared[2 + w] = start_positions.get(w, 0)

    def __iter__(self) -> Iterator[tuple[dict[str, Any], _BatchMeta]]:
        info = get_worker_info()
        if self._shared is not None and info is not None:
            shared = list(self._shared)
            self.epoch, self.rotation = shared[0], shared[1]
            self.start_positions = {w: p for w, p in enumerate(shared[2:]) if p}
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
        tic = time.thread_time()
        for sample in raw:
            pos += 1
            if pos <= start:
                continue  # consumed before the checkpoint: replayed for the shuffle state, not decoded
            try:
                item = self.decoder.decode(sample, self._sample_seed(sample, worker, pos), info is not None)
            except SkipSample as skip:
                counter.add(skip.reason, skip.detail)
                bad_in_a_row += 1
                if bad_in_a_row >= self.max_consecutive_skips:
                    raise DataPipelineError(
                        f"rank {self.rank} worker {worker}: {bad_in_a_row} samples in a row were skipped "
                        f"({counter.as_dict()}); the shards do not match what the loader expects "
                        "(an image member jpg/jpeg/png/webp and a caption in .txt or .json"
                        + (
                            ", and a neighbour.<ext> member with a 'neighbour' object in the .json)"
                            if self.decoder.neighbours
                            else ")"
                        )
                    ) from None
                continue
            bad_in_a_row = 0
            items.append(item)
            if len(items) == self.batch_size:
                batch = self.decoder.collate(items)
                yield batch, _BatchMeta(worker, pos, counter.as_dict(), time.thread_time() - tic)
                tic = time.thread_time()  # from here: the next batch's work (not the trainer's)
                items = []
                batches += 1
                if self.batches_per_worker is not None and batches >= self.batches_per_worker:
                    return
        if items and not self.drop_last:
            yield self.decoder.collate(items), _BatchMeta(worker, pos, counter.as_dict())
        elif pos > 0 or counter.counts:
            # The last, dropped partial batch still moves the position past the end of the stream.
            yield None, _BatchMeta(worker, pos, counter.as_dict())

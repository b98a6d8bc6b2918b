"""One rank's stream of batches (an ``IterableDataset``, iterated inside DataLoader workers).

The rank's part of each global batch of the epoch's order (:mod:`.order`), read by offset from the
shards (:mod:`data_pipelines.shards.index`) and decoded by :mod:`.decode`. Worker ``w`` of ``k`` makes
the rank's batches ``w, w + k, w + 2k, ...`` counted from the start position, which is the order in
which the DataLoader hands them out; so neither the worker count nor the world size changes what
the caller receives as global batch ``i``.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from ..shards.cache import local_copy, needs_copy
from ..shards.index import ShardIndex, ShardIndexError, load_index, read_sample
from ..shards.reader import TRUNCATED_SHARD, UNREADABLE_SHARD, SkipCounter, SkipSample
from ..shards.specs import Source, local_path, shard_name
from .decode import SampleDecoder
from .options import StreamOptions
from .order import MODES, EpochOrder, rank_positions
from .order import stable_seed as _seed

__all__ = ["MODES", "DataPipelineError", "ShardFile", "ShardStream", "resolve_shards"]

UNREADABLE_SAMPLE = "unreadable_sample"  # its indexed bytes do not parse as the indexed sample


class DataPipelineError(RuntimeError):
    """The pipeline cannot deliver data (everything filtered, no shards for a rank, bad state)."""


@dataclass(frozen=True)
class ShardFile:
    """A shard as the loader reads it: its URL in the spec, the seekable local file read (the shard, or
    its copy in the cache), how many samples it holds and which source it belongs to."""

    url: str
    path: str
    samples: int
    source: int


def resolve_shards(
    sources: Sequence[Source], cache_dir: str, counter: SkipCounter, *, retries: int = 0, backoff_s: float = 1.0
) -> list[ShardFile]:
    """Every shard of ``sources`` made seekable and counted: local tars are indexed in place (once,
    :func:`~data_pipelines.shards.index.load_index`), other URLs and compressed tars are copied into
    ``cache_dir`` first (:func:`~data_pipelines.shards.cache.local_copy`). A shard that is not a tar
    counts as ``unreadable_shard`` and holds no sample; one cut short, as ``truncated_shard``."""
    shards = []
    for number, source in enumerate(sources):
        for url in source.urls:
            if needs_copy(url):
                path, index = local_copy(url, cache_dir, counter, retries=retries, backoff_s=backoff_s)
            else:
                path = local_path(url)
                try:
                    index = load_index(path, cache_dir)
                except ShardIndexError as exn:
                    counter.add(UNREADABLE_SHARD, str(exn))
                    index = ShardIndex((), (0,), 0)
                if not index.complete:
                    counter.add(TRUNCATED_SHARD, f"{url} ends inside a member after {len(index)} whole samples")
            shards.append(ShardFile(url, str(path), len(index), number))
    return shards


def data_fingerprint(sources: Sequence[Source], mode: str) -> str:
    """What a resume must find unchanged about the data: the shard file names, in spec order, per source
    (and the source weights in resampled mode), hashed; where the shards live may change."""
    parts = [f"{s.weight if mode == 'resampled' else 1}:" + ",".join(shard_name(u) for u in s.urls) for s in sources]
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]


@dataclass
class _BatchMeta:
    worker: int
    batch: int  # the batch's number in the rank's epoch, counted from the start position
    skipped: dict[str, int]
    # CPU seconds this worker's thread spent making the batch (reading, decoding, collating): the
    # loader's cost per image, whatever else the machine is doing.
    cpu_seconds: float = 0.0
    bytes_read: int = 0  # shard bytes read for the batch (its samples and any stand-ins)


@dataclass
class _Reader:
    """Reads samples by offset, keeping recently used shards open and their indexes in memory."""

    shards: Sequence[ShardFile]
    cache_dir: str | None
    keep: int = 64
    _open: OrderedDict = field(default_factory=OrderedDict)  # shard number -> (fd, index)

    def sample(self, shard: int, i: int) -> tuple[dict | None, int]:
        entry = self._open.pop(shard, None)
        if entry is None:
            f = self.shards[shard]
            entry = (os.open(f.path, os.O_RDONLY), load_index(f.path, self.cache_dir))
            if len(self._open) >= self.keep:
                os.close(self._open.popitem(last=False)[1][0])
        self._open[shard] = entry
        fd, index = entry
        if i >= len(index):  # the shard changed since it was counted
            return None, 0
        return read_sample(fd, index, i, self.shards[shard].url)

    def close(self) -> None:
        while self._open:
            os.close(self._open.popitem()[1][0])


class ShardStream(IterableDataset):
    """One rank's stream of batches; iterated inside DataLoader workers (or in-process)."""

    def __init__(
        self,
        shards: Sequence[ShardFile],
        *,
        preprocess: Callable,
        tokenizer: Callable,
        batch_size: int,
        rank: int,
        world_size: int,
        options: StreamOptions,
        weights: Sequence[float] | None = None,
    ):
        """``weights``: one per shard's source, as :func:`~data_pipelines.shards.specs.parse_sources`
        resolved them (resampled mode draws a source by its weight)."""
        self.shards = list(shards)
        self.options = options
        self.decoder = SampleDecoder(preprocess, tokenizer, options)
        self.transform = self.decoder.transform
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.weights = weights
        # the options the order and the reading use, by name
        self.mode, self.seed, self.shuffle_buffer = options.mode, options.seed, options.shuffle_buffer
        self.drop_last, self.epoch_samples = options.drop_last, options.epoch_samples
        self.max_consecutive_skips, self.cache_dir = options.max_consecutive_skips, options.cache_dir
        # Where the next iteration starts: set by the loader before each epoch.
        self.epoch = 0
        self.start = 0  # samples of the epoch's order already consumed (by every rank together)
        # With persistent DataLoader workers the main process cannot reassign these attributes in the
        # workers' copies: they read them from this shared array at the start of every iteration.
        self._shared: Any = None

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def order(self, epoch: int) -> EpochOrder:
        """The epoch's global order of samples."""
        return EpochOrder(
            [s.samples for s in self.shards],
            mode=self.mode,
            seed=self.seed,
            epoch=epoch,
            window=self.shuffle_buffer,
            sources=[s.source for s in self.shards],
            weights=self.weights,
            length=self.epoch_samples,
        )

    def share_position(self) -> None:
        """Make (epoch, start) shared with worker processes made from now on."""
        self._shared = multiprocessing.RawArray("q", 2)

    def set_position(self, epoch: int, start: int) -> None:
        """Where the next iteration starts, in every worker (before ``iter(DataLoader)``)."""
        self.epoch, self.start = epoch, start
        if self._shared is not None:
            self._shared[0], self._shared[1] = epoch, start

    # -- one position of the order to one decoded item

    def _sample_seed(self, sample: dict, p: int, attempt: int) -> int:
        # Split mode reads every sample once an epoch: its own name seeds it. Resampled draws may repeat
        # a sample within an epoch: the position tells the draws apart.
        where = () if self.mode == "split" else (p, attempt)
        return _seed("sample", self.seed, self.epoch, shard_name(sample["__url__"]), sample["__key__"], *where)

    def _item(self, order: EpochOrder, p: int, reader: _Reader, counter: SkipCounter, in_worker: bool):
        nbytes = 0
        for attempt in range(self.max_consecutive_skips):
            shard, i = order.at(p) if attempt == 0 else order.spare(p, attempt)
            raw, n = reader.sample(shard, i)
            nbytes += n
            if raw is None:
                counter.add(UNREADABLE_SAMPLE, f"sample {i} of {self.shards[shard].url} (position {p})")
                continue
            try:
                return self.decoder.decode(raw, self._sample_seed(raw, p, attempt), in_worker), nbytes
            except SkipSample as skip:
                counter.add(skip.reason, skip.detail)
        expected = "an image member jpg/jpeg/png/webp and a caption in .txt or .json"
        if self.decoder.neighbours:
            expected += ", and a neighbour.<ext> member with a 'neighbour' object in the .json"
        raise DataPipelineError(
            f"rank {self.rank}: position {p} of epoch {self.epoch}: {self.max_consecutive_skips} samples in a "
            f"row were skipped ({counter.as_dict()}); the shards do not match what the loader expects ({expected})"
        )

    def _positions(self, order: EpochOrder, j: int) -> range:
        """The positions of this rank's part of its ``j``-th batch from the start (clipped at the end)."""
        mine = rank_positions(
            j, global_batch=self.global_batch, per_rank=self.batch_size, rank=self.rank, start=self.start
        )
        return range(min(mine.start, len(order)), min(mine.stop, len(order)))

    def __iter__(self) -> Iterator[tuple[dict[str, Any], _BatchMeta]]:
        info = get_worker_info()
        if self._shared is not None and info is not None:
            self.epoch, self.start = self._shared[0], self._shared[1]
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        counter = SkipCounter(f" (rank {self.rank}, worker {worker})")
        order = self.order(self.epoch)
        whole = order.batches(self.global_batch, self.start)
        last = whole + (0 if self.drop_last or (len(order) - self.start) % self.global_batch == 0 else 1)
        reader = _Reader(self.shards, self.cache_dir)
        try:
            for j in range(worker, last, workers):
                tic = time.thread_time()
                items, nbytes = [], 0
                for p in self._positions(order, j):
                    item, n = self._item(order, p, reader, counter, info is not None)
                    items.append(item)
                    nbytes += n
                meta = _BatchMeta(worker, j, counter.as_dict(), time.thread_time() - tic, nbytes)
                # A rank's part of the last, partial global batch may be empty: the loader skips it.
                yield (self.decoder.collate(items) if items else None), meta
        finally:
            reader.close()

"""What a stream reads and how, as one frozen object: from the trainer's ``data`` section (or a caller's
keywords) to the loader, the per-rank stream and the sample decoder, checked once where it is made."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .jpeg import DECODERS
from .order import MODES

# random: K of a sample's negatives drawn per epoch; fixed: its first K
NEGATIVE_SAMPLING: tuple[str, ...] = ("random", "fixed")


def _tuple(values: Sequence | None) -> tuple | None:
    return None if values is None else tuple(values)


@dataclass(frozen=True)
class StreamOptions:
    """Every option of :class:`~data_pipelines.loader.StreamingLoader` besides the data, the transforms,
    the batch size and the rank. Sequences are kept as tuples (the object is hashable and cannot change
    under a running worker).

    Attributes:
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
        num_workers, prefetch_factor, pin_memory: the DataLoader's (its workers persist across epochs).
    """

    # the data order (a resume must keep mode, seed and shuffle_buffer: loader.ORDER_KEYS)
    mode: str = "split"
    weights: Sequence[float] | None = None  # per source ("::"-joined specs); resampled mode only
    seed: int = 0
    shuffle_buffer: int = 1000
    epochs: int | None = None  # None: endless
    epoch_samples: int | None = None  # resampled mode's nominal epoch
    drop_last: bool = True
    # what a sample brings
    num_negatives: int = 0
    negative_types: Sequence[str] | None = None
    negative_sampling: str = "random"
    neighbours: bool = False
    neighbour_kinds: Sequence[str] | None = None
    captions: bool = False  # the raw caption too (an external teacher embeds it)
    decoder: str = "pil"
    # reading
    max_consecutive_skips: int = 1000  # tries per position before the stream fails
    read_retries: int = 3
    retry_backoff_s: float = 1.0
    cache_dir: str | None = None  # None: $VLP_SHARD_CACHE or a temporary folder
    # the DataLoader's workers
    num_workers: int = 0
    prefetch_factor: int = 2
    worker_nice: int = 0
    pin_memory: bool = False

    def __post_init__(self) -> None:
        for name in ("weights", "negative_types", "neighbour_kinds"):
            object.__setattr__(self, name, _tuple(getattr(self, name)))
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.negative_sampling not in NEGATIVE_SAMPLING:
            raise ValueError(f"negative_sampling must be one of {NEGATIVE_SAMPLING}, got {self.negative_sampling!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        if not 0 <= self.worker_nice <= 19:
            raise ValueError(f"worker_nice must be in 0..19, got {self.worker_nice}")
        if self.num_workers < 0 or self.num_negatives < 0:
            raise ValueError("num_workers and num_negatives must not be negative")
        if self.read_retries < 0 or not self.retry_backoff_s >= 0:
            raise ValueError(
                f"read_retries ({self.read_retries}) and retry_backoff_s ({self.retry_backoff_s}) must be >= 0"
            )
        if self.mode == "split" and self.weights is not None and any(w != 1 for w in self.weights):
            raise ValueError("source weights need mode='resampled' (split mode reads every sample once)")
        if self.decoder == "device" and self.neighbours:
            raise ValueError(
                "decoder 'device' cannot be combined with neighbours (their images join the batch on the CPU)"
            )

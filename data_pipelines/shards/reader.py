"""Reading raw samples out of shards and turning their members into (image, caption, negatives).

Bad input never kills a worker: every problem raises :class:`SkipSample` with a reason, which the
caller counts in a :class:`SkipCounter` (logged once per reason).

The parts: the skip reasons and counter (:mod:`.skips`), one pass over a tar (:mod:`.tar_pass`) and a
sample's members (:mod:`.sample_fields`); here, :func:`iter_shard`, which retries a failed pass. Every
public name of the three is importable from here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

# Re-exported: the loader, the stats, the cache and the tests import these from shards.reader.
from .sample_fields import (
    IMAGE_EXTENSIONS,
    caption,
    decode_image,
    image_member,
    metadata,
    negative_texts,
    neighbour_field,
)
from .skips import (
    BAD_JSON,
    BAD_NEGATIVES,
    CORRUPT_IMAGE,
    MISSING_CAPTION,
    MISSING_IMAGE,
    MISSING_NEIGHBOUR,
    OTHER_NEIGHBOUR_KIND,
    SHARD_READ_RETRIES,
    TRUNCATED_SHARD,
    UNREADABLE_SHARD,
    SkipCounter,
    SkipSample,
)
from .specs import is_local_url
from .tar_pass import TarPass

__all__ = [
    "BAD_JSON",
    "BAD_NEGATIVES",
    "CORRUPT_IMAGE",
    "IMAGE_EXTENSIONS",
    "MISSING_CAPTION",
    "MISSING_IMAGE",
    "MISSING_NEIGHBOUR",
    "OTHER_NEIGHBOUR_KIND",
    "SHARD_READ_RETRIES",
    "TRUNCATED_SHARD",
    "UNREADABLE_SHARD",
    "SkipCounter",
    "SkipSample",
    "caption",
    "decode_image",
    "image_member",
    "iter_shard",
    "metadata",
    "negative_texts",
    "neighbour_field",
]

log = logging.getLogger("data_pipelines")


class _RetryLog:
    """Warns about each retry, at most ``limit`` times a ``window_s`` per process; the rest are counted
    (under ``shard_read_retries``) and summed up in the next warning."""

    def __init__(self, limit: int = 20, window_s: float = 60.0):
        self.limit, self.window_s = limit, window_s
        self.start, self.logged, self.suppressed = -window_s, 0, 0

    def warn(self, msg: str, *args) -> None:
        now = time.monotonic()
        if now - self.start >= self.window_s:
            if self.suppressed:
                log.warning("%d further shard read retries were counted, not logged", self.suppressed)
            self.start, self.logged, self.suppressed = now, 0, 0
        if self.logged < self.limit:
            log.warning(msg, *args)
            self.logged += 1
        else:
            self.suppressed += 1


_retry_log = _RetryLog()


def iter_shard(
    url: str,
    counter: SkipCounter,
    *,
    retries: int = 0,
    backoff_s: float = 1.0,
    sleep: Callable[[float], object] = time.sleep,
) -> Iterator[dict]:
    """Samples of one shard as dicts of raw bytes (``__key__``, ``__url__``, one entry per member).

    A shard that cannot be opened counts once as ``unreadable_shard``; a shard that breaks off
    (truncated, not a tar) keeps the samples read so far and counts once as ``truncated_shard``.

    Before that, a failure is tried again up to ``retries`` times, after ``backoff_s``, then twice as
    long each time (``sleep`` waits); each retry counts once as ``shard_read_retries`` and is logged
    with the URL and the error. A retry opens the shard again and passes over the samples already
    yielded (by count: the stream is deterministic; the last one's key is checked), so retried reads
    yield each sample once, in the order of a clean read. Which failures are retried:

    * any failure of the transport: opening fails, reading raises an OSError (a local I/O error, a
      `pipe:` command exiting non-zero, whether a read or the close reports it) or an fsspec/network
      error;
    * for every URL but a local file (`pipe:`, http(s), fsspec), also bytes that are not a tar or end
      without the tar end marker: a dropped connection or a failing command looks just like that;
    * never a local file's bytes (not a tar, truncated), nor a shard that reads differently than in
      the earlier pass (another key where the last delivered sample was, or a whole tar with fewer
      samples than were delivered): these count at once, as without retries.

    With ``retries`` and ``backoff_s`` at their most, a shard costs ``retries + 1`` reads and
    ``backoff_s * (2**retries - 1)`` seconds of waiting before it is skipped; nothing waits longer.

    Each pass holds its last sample back until the next one is parsed or the pass has ended: a stream
    that ends without the end marker may have cut that sample short, and a retry delivers it whole.
    The final count is ``truncated_shard`` when any sample was yielded, else as the last pass ended.
    """
    local = is_local_url(url)
    done, last_key, attempt = 0, None, 0
    while True:
        tried = TarPass(url, done, last_key)
        held = None
        samples = tried.samples()
        try:
            for sample in samples:
                if held is not None:
                    yield held
                    done, last_key = done + 1, held["__key__"]
                held = sample
        finally:
            samples.close()  # on an early stop too: the stream is closed now, not when collected
        final = tried.error is None or attempt >= retries or tried.changed or (local and not tried.transport)
        if held is not None and (final or not tried.cut):
            yield held
            done, last_key = done + 1, held["__key__"]
        if tried.error is None:
            return
        if final:
            reason = TRUNCATED_SHARD if done else tried.reason
            tries = f" ({attempt} retries)" if attempt else ""
            counter.add(reason, f"{url} after {done} samples{tries}: {tried.error}")
            return
        delay = backoff_s * 2**attempt
        attempt += 1
        counter.count(SHARD_READ_RETRIES)
        _retry_log.warn(
            "retrying shard %s (retry %d of %d, in %.3g s) after %d samples: %s",
            url,
            attempt,
            retries,
            delay,
            done,
            tried.error,
        )
        if delay > 0:
            sleep(delay)

"""Reading raw samples out of shards and turning their members into (image, caption, negatives).

Bad input never kills a worker: every problem raises :class:`SkipSample` with a reason, which the
caller counts in a :class:`SkipCounter` (logged once per reason).
"""

from __future__ import annotations

import json
import logging
import random
import tarfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

from PIL import Image
from webdataset.tariterators import group_by_keys, tar_file_iterator

from ..images import ImageError, open_rgb
from .specs import is_local_url, open_url

log = logging.getLogger("data_pipelines")

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")

# Reasons a sample or a shard is skipped (the keys of the ``skipped`` counts).
MISSING_IMAGE = "missing_image"
CORRUPT_IMAGE = "corrupt_image"
MISSING_CAPTION = "missing_caption"
MISSING_NEIGHBOUR = "missing_neighbour"  # asked for a neighbour: no neighbour.<ext> member or JSON field
OTHER_NEIGHBOUR_KIND = "other_neighbour_kind"  # filtered out: its neighbour is not of the kinds asked for
BAD_JSON = "bad_json"
BAD_NEGATIVES = "bad_negatives"
UNREADABLE_SHARD = "unreadable_shard"
TRUNCATED_SHARD = "truncated_shard"
# Not a skip: a shard read tried again after a transient failure (see iter_shard).
SHARD_READ_RETRIES = "shard_read_retries"


class SkipSample(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SkipCounter:
    """Counts skipped samples and shards by reason; warns once for each reason."""

    def __init__(self, where: str = ""):
        self.counts: Counter[str] = Counter()
        self.where = where

    def add(self, reason: str, detail: str = "") -> None:
        if reason not in self.counts:
            log.warning("skipping %s%s: %s (further ones are counted, not logged)", reason, self.where, detail)
        self.counts[reason] += 1

    def count(self, reason: str) -> None:
        """Count without the warning (for events logged by their caller)."""
        self.counts[reason] += 1

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


class _TailTracker:
    """Passes reads through and remembers the stream's first and last bytes.

    Python's tarfile ends an archive silently when the stream stops at (or inside) a member header,
    so a shard cut there would look complete. Every tar ends with zero blocks; an uncompressed
    stream whose last 512 bytes are not all zero was cut short.
    """

    def __init__(self, raw, url: str):
        self.raw = raw
        self.url = url
        self.head = b""
        self.tail = b""

    def __str__(self) -> str:  # webdataset appends the stream to its error messages
        return self.url

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if len(self.head) < 6:
            self.head = (self.head + data)[:6]
        self.tail = (self.tail + data)[-512:]
        return data

    def drain(self) -> None:
        while self.read(1 << 16):
            pass

    def was_cut(self) -> bool:
        compressed = self.head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ"))  # decompressors detect cuts
        return not compressed and self.tail.count(0) != len(self.tail)

    def close(self) -> None:
        self.raw.close()


# Errors in the bytes of a shard (not a tar, cut short, clashing names), as opposed to the transport's
# (opening fails, an OSError while reading, a `pipe:` command's non-zero exit, an fsspec/network error).
_FORMAT_ERRORS = (tarfile.TarError, EOFError, ValueError, zlib.error)


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


class _Attempt:
    """One pass over a shard: opens it, passes over the first ``skip`` samples (delivered by an earlier
    pass; the ``skip``-th must have key ``last_key``) and yields the rest; then says how it ended."""

    def __init__(self, url: str, skip: int, last_key: str | None):
        self.url, self.skip, self.last_key = url, skip, last_key
        self.members = 0  # tar members parsed
        self.seen = 0  # samples parsed, the skipped ones included
        self.error: str | None = None  # None: read to the tar end marker
        self.reason = UNREADABLE_SHARD  # what the failure alone would count as
        self.transport = False  # the failure came from opening or reading, not from the bytes
        self.cut = False  # ended without the end marker: the last sample may lack members
        self.changed = False  # the shard reads differently than in the earlier pass

    def _fail(self, error, transport: bool) -> None:
        self.error = str(error)
        self.transport = transport
        self.reason = UNREADABLE_SHARD if self.members == 0 else TRUNCATED_SHARD

    def samples(self) -> Iterator[dict]:
        try:
            stream = _TailTracker(open_url(self.url), self.url)
        except Exception as exn:  # noqa: BLE001 - any failure to open is the same fact for the user
            self._fail(exn, transport=True)
            return

        def tagged(files):
            for f in files:
                self.members += 1
                yield {**f, "__url__": self.url}

        finished = False
        try:
            samples = group_by_keys(tagged(tar_file_iterator(stream)))
            while True:
                try:
                    sample = next(samples)
                except StopIteration:
                    break
                except Exception as exn:  # noqa: BLE001 - fsspec backends raise their own errors
                    self._fail(exn, transport=not isinstance(exn, _FORMAT_ERRORS))
                    break
                self.seen += 1
                if self.seen < self.skip:
                    continue
                if self.seen == self.skip:
                    if sample["__key__"] != self.last_key:
                        self._changed(f"sample {self.seen} is {sample['__key__']}, was {self.last_key}")
                        break
                    continue
                yield sample
            if self.error is None and not self.changed:  # the tar ended (end marker or end of stream)
                try:
                    stream.drain()
                    late = None
                except Exception as exn:  # noqa: BLE001
                    late = exn
                # The tail is the end marker's when tarfile stopped there, whatever draining then met.
                if stream.was_cut():
                    self._fail("ends without the tar end marker", transport=late is not None)
                    self.reason, self.cut = TRUNCATED_SHARD, True
                    if late is not None:
                        self.error += f"; {late}"
                elif late is not None:
                    self._fail(late, transport=not isinstance(late, _FORMAT_ERRORS))
                elif self.seen < self.skip:
                    self._changed(f"it holds {self.seen} samples")
            finished = True
        finally:
            try:
                stream.close()  # a `pipe:` command reports a failing exit status here
            except Exception as exn:  # noqa: BLE001
                # After a complete tar a late exit status is ignored, as is any on an early stop.
                if finished and self.error is None and self.members == 0:
                    self._fail(exn, transport=True)
                elif finished and self.error is not None and not self.transport:
                    self.error, self.transport = f"{self.error}; {exn}", True  # the command failed: transient

    def _changed(self, detail: str) -> None:
        self._fail(f"reads differently than before ({detail})", transport=False)
        self.changed = True
        self.reason = TRUNCATED_SHARD


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
        tried = _Attempt(url, done, last_key)
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


def image_member(sample: dict, prefix: str = "", missing: str = MISSING_IMAGE) -> tuple[str, bytes]:
    """The first of ``{prefix}jpg``, ``{prefix}jpeg``, ... that the sample has, else SkipSample(``missing``)."""
    for ext in IMAGE_EXTENSIONS:
        data = sample.get(prefix + ext)
        if data is not None:
            return prefix + ext, data
    where = f"{sample.get('__key__')} in {sample.get('__url__')}"
    raise SkipSample(missing, f"{where} has no {prefix}{'/'.join(IMAGE_EXTENSIONS)} member")


def decode_image(sample: dict, prefix: str = "", missing: str = MISSING_IMAGE) -> Image.Image:
    ext, data = image_member(sample, prefix, missing)
    where = f"{sample.get('__key__')}.{ext} in {sample.get('__url__')}"
    try:
        return open_rgb(data, where)
    except ImageError as exn:
        raise SkipSample(CORRUPT_IMAGE, f"{where}: {exn.detail}") from None


def metadata(sample: dict) -> dict:
    raw = sample.get("json")
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exn:
        raise SkipSample(BAD_JSON, f"{sample.get('__key__')}.json in {sample.get('__url__')}: {exn}") from None
    if not isinstance(meta, dict):
        raise SkipSample(BAD_JSON, f"{sample.get('__key__')}.json in {sample.get('__url__')} is not an object")
    return meta


def caption(sample: dict, meta: dict, rng: random.Random | None = None) -> str:
    """The caption from ``.txt`` (one of its lines, when it holds several) or the JSON ``caption``."""
    raw = sample.get("txt")
    text = ""
    if raw is not None:
        try:
            lines = [ln.strip() for ln in raw.decode("utf-8").splitlines() if ln.strip()]
        except UnicodeDecodeError:
            lines = []
        if lines:
            text = lines[0] if len(lines) == 1 or rng is None else lines[rng.randrange(len(lines))]
    if not text and isinstance(meta.get("caption"), str):
        text = meta["caption"].strip()
    if not text:
        raise SkipSample(MISSING_CAPTION, f"{sample.get('__key__')} in {sample.get('__url__')} has no caption")
    return text


def neighbour_field(sample: dict, meta: dict) -> dict:
    """The JSON ``neighbour`` ({"key", "caption", "negatives"}), checked; its image is the sample's
    ``neighbour.<ext>`` member. Anything missing or malformed is SkipSample(``missing_neighbour``)."""
    field = meta.get("neighbour")
    where = f"{sample.get('__key__')} in {sample.get('__url__')}"
    if not isinstance(field, dict):
        raise SkipSample(MISSING_NEIGHBOUR, f"{where} has no 'neighbour' object in its .json")
    text = field.get("caption")
    if not isinstance(text, str) or not text.strip():
        raise SkipSample(MISSING_NEIGHBOUR, f"{where}: 'neighbour' has no caption string")
    return field


def negative_texts(meta: dict, sample: dict, types: Sequence[str] | None = None) -> list[str]:
    """Hard-negative captions from the ``negatives`` list of ``meta`` (strings or ``{"text", "type"}``),
    in their stored order; ``meta`` is the sample's JSON or its ``neighbour`` object."""
    negs = meta.get("negatives", [])
    if not isinstance(negs, list):
        raise SkipSample(BAD_NEGATIVES, f"{sample.get('__key__')}: 'negatives' is not a list")
    out = []
    for n in negs:
        if isinstance(n, str):
            text, kind = n, None
        elif isinstance(n, dict) and isinstance(n.get("text"), str):
            text, kind = n["text"], n.get("type")
        else:
            detail = f"{sample.get('__key__')}: negative {n!r} is neither a string nor {{text, type}}"
            raise SkipSample(BAD_NEGATIVES, detail)
        if types is not None and kind not in types:
            continue
        if text.strip():
            out.append(text.strip())
    return out

"""Reading raw samples out of shards and turning their members into (image, caption, negatives).

Bad input never kills a worker: every problem raises :class:`SkipSample` with a reason, which the
caller counts in a :class:`SkipCounter` (logged once per reason).
"""

from __future__ import annotations

import json
import logging
import random
import tarfile
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence

from PIL import Image
from webdataset.tariterators import group_by_keys, tar_file_iterator

from ..images import ImageError, open_rgb
from .specs import open_url

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


def iter_shard(url: str, counter: SkipCounter) -> Iterator[dict]:
    """Samples of one shard as dicts of raw bytes (``__key__``, ``__url__``, one entry per member).

    A shard that cannot be opened counts once as ``unreadable_shard``; a shard that breaks off
    (truncated, not a tar) keeps the samples read so far and counts once as ``truncated_shard``.
    """
    try:
        stream = _TailTracker(open_url(url), url)
    except Exception as exn:  # noqa: BLE001 - any failure to open is the same fact for the user
        counter.add(UNREADABLE_SHARD, f"{url}: {exn}")
        return
    n = members = 0
    reported = False

    def tagged(files):
        nonlocal members
        for f in files:
            members += 1
            yield {**f, "__url__": url}

    try:
        for sample in group_by_keys(tagged(tar_file_iterator(stream))):
            n += 1
            yield sample
        stream.drain()
        if stream.was_cut():
            counter.add(TRUNCATED_SHARD, f"{url} ends without the tar end marker after {n} samples")
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as exn:
        # Nothing parsed as tar: the file is not a (readable) shard; otherwise it broke off.
        counter.add(UNREADABLE_SHARD if members == 0 else TRUNCATED_SHARD, f"{url} after {n} samples: {exn}")
        reported = True
    finally:
        try:
            stream.close()  # a `pipe:` command reports a failing exit status here
        except Exception as exn:  # noqa: BLE001
            if members == 0 and not reported:
                counter.add(UNREADABLE_SHARD, f"{url}: {exn}")


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

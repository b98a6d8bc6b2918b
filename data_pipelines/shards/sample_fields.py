"""A raw sample's members as what a trainer reads: its image (the first image member, decoded to RGB),
its JSON metadata, its caption, its neighbour and its hard-negative captions. Anything missing or
malformed raises :class:`~.skips.SkipSample` with the reason and where it was.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

from PIL import Image

from ..images import ImageError, open_rgb
from .skips import BAD_JSON, BAD_NEGATIVES, CORRUPT_IMAGE, MISSING_CAPTION, MISSING_IMAGE, MISSING_NEIGHBOUR, SkipSample

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


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

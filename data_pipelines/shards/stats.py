"""What a set of shards holds: samples, shards, skipped samples by reason, caption lengths, negatives and
neighbours."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from ..workers import map_in_pool
from .reader import (
    IMAGE_EXTENSIONS,
    SkipCounter,
    SkipSample,
    caption,
    decode_image,
    image_member,
    iter_shard,
    metadata,
    negative_texts,
)
from .specs import parse_sources

PERCENTILES = (5, 25, 50, 75, 95)


def _one_shard(url: str) -> dict:
    counter = SkipCounter(f" in {url}")
    words: Counter[int] = Counter()
    chars: Counter[int] = Counter()
    formats: Counter[str] = Counter()
    negs: Counter[int] = Counter()
    samples = neighbours = 0
    for sample in iter_shard(url, counter):
        try:
            meta = metadata(sample)
            text = caption(sample, meta)
            n_neg = len(negative_texts(meta, sample))
            decode_image(sample)
        except SkipSample as skip:
            counter.add(skip.reason, skip.detail)
            continue
        samples += 1
        words[len(text.split())] += 1
        chars[len(text)] += 1
        formats[image_member(sample)[0]] += 1
        negs[n_neg] += 1
        # The loader's neighbours=True needs both (see data_pipelines.neighbours).
        neighbours += isinstance(meta.get("neighbour"), dict) and any(
            f"neighbour.{e}" in sample for e in IMAGE_EXTENSIONS
        )
    return {
        "samples": samples,
        "skipped": counter.counts,
        "words": words,
        "chars": chars,
        "formats": formats,
        "negs": negs,
        "neighbours": neighbours,
    }


def _summary(hist: Counter[int]) -> dict:
    if not hist:
        return {}
    values = np.array(sorted(hist))
    counts = np.array([hist[v] for v in values])
    cum = np.cumsum(counts) / counts.sum()
    out = {f"p{p}": int(values[np.searchsorted(cum, p / 100)]) for p in PERCENTILES}
    out["mean"] = round(float((values * counts).sum() / counts.sum()), 3)
    out["max"] = int(values[-1])
    return out


def shard_stats(
    spec: str | Sequence[str], workers: int = 1, progress: Callable[[int, int], None] | None = None
) -> dict:
    """Read every sample of ``spec`` once (decoding images) and summarise it as a JSON-able dict."""
    urls = [u for s in parse_sources(spec) for u in s.urls]
    total = Counter()
    skipped: Counter[str] = Counter()
    words: Counter[int] = Counter()
    chars: Counter[int] = Counter()
    formats: Counter[str] = Counter()
    negs: Counter[int] = Counter()
    for i, r in enumerate(map_in_pool(_one_shard, urls, workers)):
        total["samples"] += r["samples"]
        skipped.update(r["skipped"])
        words.update(r["words"])
        chars.update(r["chars"])
        formats.update(r["formats"])
        negs.update(r["negs"])
        total["with_neighbour"] += r["neighbours"]
        if progress:
            progress(i + 1, len(urls))
    with_negs = sum(v for k, v in negs.items() if k > 0)
    return {
        "spec": spec if isinstance(spec, str) else list(spec),
        "shards": len(urls),
        "samples": total["samples"],
        "skipped": dict(sorted(skipped.items())),
        "caption_words": _summary(words),
        "caption_chars": _summary(chars),
        "image_formats": dict(sorted(formats.items())),
        "negatives": {"samples_with_negatives": with_negs, "per_sample": _summary(negs)},
        "samples_with_neighbour": total["with_neighbour"],
    }


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)

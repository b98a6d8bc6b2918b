"""Rewrite shards with hard negatives in each sample's ``.json`` (generated, or imported from an LLM's output).

Nothing is lost: every sample is written back (a sample without a usable caption keeps its members
and gets no negatives), every member other than ``.json`` is copied byte for byte, and shards are
written atomically under their own names with the same ``sizes.json``.

Imports read two formats:

* DeGLA's: a JSON list of ``{"image_id", "original", "enhanced": [str, ...]}``, matched by caption;
* a JSONL of ``{"key": ..., "negatives": [...]}`` or ``{"caption": ..., "negatives": [...]}``, matched by
  sample key or by caption (negatives are strings or ``{"text", "type"}``).

Captions match ignoring case, punctuation and spacing.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vlp.common.atomic import staged, write_json_atomic

from ..shards.reader import BAD_JSON, MISSING_CAPTION, SkipCounter, SkipSample, caption, iter_shard
from ..shards.specs import rewrite_plan
from ..shards.writer import ShardSink
from .rules import generate, normalise
from .types import IMPORTED


class ImportFormatError(ValueError):
    """An import file that is neither DeGLA's JSON nor the key/caption JSONL; names file and line."""


@dataclass
class Imported:
    by_key: dict[str, list[dict]] = field(default_factory=dict)
    by_caption: dict[str, list[dict]] = field(default_factory=dict)
    used: set = field(default_factory=set)  # ("key"|"caption", value) entries that matched a sample

    def __len__(self) -> int:
        return len(self.by_key) + len(self.by_caption)

    def lookup(self, key: str, caption: str | None) -> list[dict] | None:
        if key in self.by_key:
            self.used.add(("key", key))
            return self.by_key[key]
        norm = normalise(caption) if caption else None
        if norm and norm in self.by_caption:
            self.used.add(("caption", norm))
            return self.by_caption[norm]
        return None


def _as_negatives(items, where: str) -> list[dict]:
    if not isinstance(items, list):
        raise ImportFormatError(f"{where}: negatives must be a list")
    out = []
    for item in items:
        if isinstance(item, str):
            out.append({"text": item, "type": IMPORTED})
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            out.append({"text": item["text"], "type": item.get("type", IMPORTED)})
        else:
            raise ImportFormatError(f"{where}: negative {item!r} is neither a string nor {{text, type}}")
    return out


def read_imports(path: str | os.PathLike) -> Imported:
    """Parse DeGLA's JSON list or a key/caption JSONL into lookup tables."""
    path = Path(path)
    if not path.is_file():
        raise ImportFormatError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8")
    imported = Imported()
    stripped = text.lstrip()
    if stripped.startswith("["):  # DeGLA: one JSON list
        try:
            data = json.loads(text)
        except ValueError as exn:
            raise ImportFormatError(f"{path}: not valid JSON ({exn})") from None
        for i, rec in enumerate(data):
            where = f"{path}: item {i}"
            if not isinstance(rec, dict) or not isinstance(rec.get("original"), str) or "enhanced" not in rec:
                raise ImportFormatError(f"{where}: expected {{'image_id', 'original', 'enhanced': [...]}}")
            imported.by_caption.setdefault(normalise(rec["original"]), []).extend(_as_negatives(rec["enhanced"], where))
        return imported
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            rec = json.loads(line)
        except ValueError as exn:
            raise ImportFormatError(f"{where}: not valid JSON ({exn})") from None
        if not isinstance(rec, dict) or "negatives" not in rec or not ("key" in rec or "caption" in rec):
            raise ImportFormatError(f"{where}: expected {{'key' or 'caption', 'negatives': [...]}}")
        negs = _as_negatives(rec["negatives"], where)
        if "key" in rec:
            imported.by_key.setdefault(str(rec["key"]), []).extend(negs)
        else:
            imported.by_caption.setdefault(normalise(str(rec["caption"])), []).extend(negs)
    return imported


@dataclass
class RewriteSummary:
    shards: int = 0
    samples: int = 0
    with_negatives: int = 0
    matched: int = 0
    unmatched_samples: int = 0
    unused_imports: int = 0
    skipped: dict = field(default_factory=dict)
    types: dict = field(default_factory=dict)


def _caption_of(sample: dict, meta: dict) -> str | None:
    try:
        return caption(sample, meta)
    except SkipSample:
        return None


def add_negatives(
    spec: str,
    out: str | os.PathLike,
    k: int = 4,
    types: Sequence[str] | None = None,
    seed: int = 0,
    imports: Imported | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RewriteSummary:
    """Write every shard of ``spec`` to ``out`` with ``negatives`` added to each sample's JSON."""
    urls, names, out = rewrite_plan(spec, out, "rewrite")
    summary = RewriteSummary()
    type_counts: Counter[str] = Counter()
    counter = SkipCounter()
    with staged(out) as tmp:
        sizes: dict[str, int] = {}
        for i, (url, name) in enumerate(zip(urls, names, strict=True)):
            # One sink per input shard keeps the shard's name and its samples together.
            sink = ShardSink(tmp, pattern=name, shard_size=10**12)
            n = 0
            for sample in iter_shard(url, counter):
                members = {k_: v for k_, v in sample.items() if not k_.startswith("__")}
                meta: dict | None = {}
                if "json" in members:
                    try:
                        meta = json.loads(members["json"])
                    except ValueError:
                        meta = None
                    if not isinstance(meta, dict):  # kept byte for byte, without negatives
                        counter.add(BAD_JSON, f"{sample['__key__']} in {url}")
                if isinstance(meta, dict):
                    caption = _caption_of(sample, meta)
                    if imports is not None:
                        negs = imports.lookup(sample["__key__"], caption)
                        if negs is None:
                            summary.unmatched_samples += 1
                        else:
                            summary.matched += 1
                    elif caption is not None:
                        negs = generate(caption, k=k, seed=seed, types=types)
                    else:
                        negs = None
                        counter.add(MISSING_CAPTION, f"{sample['__key__']} in {url}: no caption to perturb")
                    if negs:
                        meta = {**meta, "negatives": negs}
                        members["json"] = json.dumps(meta, ensure_ascii=False).encode()
                        summary.with_negatives += 1
                        type_counts.update(n_["type"] for n_ in negs)
                sink.write(sample["__key__"], members)
                n += 1
            sink.close(sizes_file=None)
            if n:
                sizes[name] = n
            summary.samples += n
            summary.shards += 1
            if progress:
                progress(i + 1, len(urls))
        write_json_atomic(tmp / "sizes.json", sizes, sort_keys=True)
    summary.skipped = counter.as_dict()
    summary.types = dict(sorted(type_counts.items()))
    if imports is not None:
        summary.unused_imports = len(imports) - len(imports.used)
    return summary

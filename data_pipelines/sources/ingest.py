"""Shards from a user's table of (image path, caption[, negatives]): CSV, TSV or JSONL.

The whole table is read and checked before anything is written, so a malformed row stops the run
with its line number and leaves no output behind. Image files that are missing or do not decode are
skipped and counted (a data problem, not a usage error).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vlp.common.atomic import staged

from ..images import open_image
from ..shards.reader import CORRUPT_IMAGE, MISSING_CAPTION, MISSING_IMAGE
from ..shards.writer import ShardSink

log = logging.getLogger("data_pipelines")

IMAGE_COLUMNS = ("image", "image_path", "filepath", "path", "file", "filename")
CAPTION_COLUMNS = ("caption", "text", "title")
NEGATIVE_COLUMNS = ("negatives", "negative_captions", "neg_captions")
_KEEP_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


class TableError(ValueError):
    """The input table cannot be read as (image, caption[, negatives]) rows."""


@dataclass
class Row:
    line: int
    image: str
    caption: str
    negatives: list
    extra: dict = field(default_factory=dict)


@dataclass
class IngestSummary:
    written: int = 0
    shards: int = 0
    skipped: dict = field(default_factory=dict)
    out: str = ""


def _pick(columns: list[str], wanted: tuple[str, ...], given: str | None, what: str, path: Path) -> str | None:
    if given is not None:
        if given not in columns:
            raise TableError(f"{path}: no column {given!r} for the {what} (columns: {', '.join(columns)})")
        return given
    for name in wanted:
        if name in columns:
            return name
    return None


def _parse_negatives(value, path: Path, line: int) -> list:
    if value is None or value == "":
        return []
    if isinstance(value, list):
        negs = value
    elif isinstance(value, str) and value.lstrip().startswith("["):
        try:
            negs = json.loads(value)
        except ValueError as exn:
            raise TableError(f"{path}:{line}: negatives are not a valid JSON list ({exn})") from None
    elif isinstance(value, str):
        negs = [v.strip() for v in value.split("|") if v.strip()]
    else:
        raise TableError(f"{path}:{line}: negatives must be a list or a '|'-separated string")
    for n in negs:
        if not (isinstance(n, str) or (isinstance(n, dict) and isinstance(n.get("text"), str))):
            raise TableError(f"{path}:{line}: negative {n!r} is neither a string nor {{text, type}}")
    return negs


def read_table(path: str | os.PathLike, image_col: str | None = None, caption_col: str | None = None) -> list[Row]:
    """All rows of a CSV/TSV (with a header) or JSONL file, checked; image paths made absolute."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"{path}: no such file")
    suffix = path.suffix.lower()
    records: list[tuple[int, dict]] = []
    with open(path, newline="", encoding="utf-8") as f:
        if suffix in (".jsonl", ".ndjson"):
            for line, text in enumerate(f, 1):
                if not text.strip():
                    continue
                try:
                    rec = json.loads(text)
                except ValueError as exn:
                    raise TableError(f"{path}:{line}: not valid JSON ({exn})") from None
                if not isinstance(rec, dict):
                    raise TableError(f"{path}:{line}: expected a JSON object per line")
                records.append((line, rec))
        elif suffix in (".csv", ".tsv"):
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            for rec in reader:
                records.append((reader.line_num, rec))
        else:
            raise TableError(f"{path}: unknown table format {suffix!r}; use .csv, .tsv or .jsonl")
    if not records:
        raise TableError(f"{path}: the table has no rows")
    columns = sorted({k for _, rec in records for k in rec if k is not None})
    icol = _pick(columns, IMAGE_COLUMNS, image_col, "image path", path)
    ccol = _pick(columns, CAPTION_COLUMNS, caption_col, "caption", path)
    ncol = _pick(columns, NEGATIVE_COLUMNS, None, "negatives", path)
    if icol is None or ccol is None:
        missing = "an image column" if icol is None else "a caption column"
        names = IMAGE_COLUMNS if icol is None else CAPTION_COLUMNS
        raise TableError(f"{path}: found no {missing} ({'/'.join(names)}); columns: {', '.join(columns)}")
    rows = []
    for line, rec in records:
        image, text = rec.get(icol), rec.get(ccol)
        if not isinstance(image, str) or not image.strip():
            raise TableError(f"{path}:{line}: empty image path in column {icol!r}")
        if not isinstance(text, str):
            raise TableError(f"{path}:{line}: caption in column {ccol!r} is not text")
        image_path = Path(image.strip())
        if not image_path.is_absolute():
            image_path = path.parent / image_path
        extra = {k: v for k, v in rec.items() if k not in (icol, ccol, ncol) and k is not None}
        negs = _parse_negatives(rec.get(ncol) if ncol else None, path, line)
        rows.append(Row(line, str(image_path), text.strip(), negs, extra))
    return rows


def _image_member(path: str) -> tuple[str, bytes]:
    """The shard member for an image file: its own bytes when the loader reads its format, else PNG."""
    data = Path(path).read_bytes()
    im = open_image(data, path)
    if im.format in _KEEP_FORMATS:
        return _KEEP_FORMATS[im.format], data
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="PNG")
    return "png", buf.getvalue()


def write_shards(
    input_path: str | os.PathLike,
    out: str | os.PathLike,
    shard_size: int = 1000,
    image_col: str | None = None,
    caption_col: str | None = None,
    log_fn: Callable[[str], None] = print,
) -> IngestSummary:
    """Write ``out/shard-NNNNNN.tar`` + ``sizes.json`` from a table; refuses a non-empty ``out``.

    The shards are written beside ``out`` and moved into place when all are complete.
    """
    rows = read_table(input_path, image_col, caption_col)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new output directory")
    summary = IngestSummary(out=str(out))
    skipped: dict[str, int] = {}

    def skip(reason: str, row: Row, detail: str) -> None:
        if reason not in skipped:
            log.warning("skipping %s (line %d: %s); further ones are counted", reason, row.line, detail)
        skipped[reason] = skipped.get(reason, 0) + 1

    step = max(1, len(rows) // 10)
    with staged(out) as staging, ShardSink(staging, pattern="shard-{:06d}.tar", shard_size=shard_size) as sink:
        for i, row in enumerate(rows):
            if not row.caption:
                skip(MISSING_CAPTION, row, "empty caption")
                continue
            try:
                ext, data = _image_member(row.image)
            except FileNotFoundError:
                skip(MISSING_IMAGE, row, row.image)
                continue
            except (OSError, ValueError) as exn:  # an ImageError (a ValueError) names the file
                skip(CORRUPT_IMAGE, row, str(exn))
                continue
            meta = {"caption": row.caption, "source": row.image, **row.extra}
            if row.negatives:
                meta["negatives"] = row.negatives
            key = f"{summary.written:09d}"
            sink.write(key, {ext: data, "txt": row.caption.encode(), "json": json.dumps(meta).encode()})
            summary.written += 1
            if (i + 1) % step == 0:
                log_fn(f"  {i + 1}/{len(rows)} rows")
    summary.shards = len(sink.sizes)
    summary.skipped = dict(sorted(skipped.items()))
    return summary

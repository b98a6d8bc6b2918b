"""Shard specifications: brace expansion, directories, several weighted sources, and opening URLs.

A spec is what users type after ``--train-data``: a local path or directory, a brace pattern
(``shards/train-{000000..000019}.tar``), a ``pipe:`` command (``pipe:aws s3 cp s3://b/{0..9}.tar -``),
a ``file://`` URL, an ``http(s)://`` URL, or any fsspec URL (``s3://``, ``gs://``, ...; the matching
fsspec backend must be installed). Several sources are joined with ``::`` as in open_clip.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlparse

import braceexpand
import webdataset as wds

# Schemes webdataset opens itself (local files, shell pipes, curl); everything else goes to fsspec.
_WDS_SCHEMES = {"", "file", "pipe", "http", "https"}
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")


class SpecError(ValueError):
    """A spec that names no shards or cannot be parsed."""


@dataclass(frozen=True)
class Source:
    spec: str
    urls: tuple[str, ...]
    weight: float = 1.0
    samples: int | None = None  # from sizes.json, when every shard is listed there


def _scheme(url: str) -> str:
    if url.startswith("pipe:"):
        return "pipe"
    return urlparse(url).scheme if "://" in url else ""


def _local_path(url: str) -> str | None:
    scheme = _scheme(url)
    if scheme == "":
        return url
    if scheme == "file":
        return re.sub(r"^file://", "", url)
    return None


def local_path(url: str) -> str | None:
    """The file a local URL (a path or a ``file://`` URL) names; None for any other URL."""
    return _local_path(url)


def is_local_url(url: str) -> bool:
    """Whether ``url`` names a local file (a path or a ``file://`` URL)."""
    return _local_path(url) is not None


def expand_spec(spec: str) -> list[str]:
    """The shard URLs of one source spec, in order; local specs are checked to exist."""
    spec = spec.strip()
    if not spec:
        raise SpecError("empty shard spec")
    local = _local_path(spec)
    if local is not None and os.path.isdir(local):
        names = sorted(n for n in os.listdir(local) if n.endswith(SHARD_SUFFIXES))
        if not names:
            raise SpecError(f"directory {local} holds no .tar shards")
        prefix = "file://" if spec.startswith("file://") else ""
        return [prefix + os.path.join(local, n) for n in names]
    urls = list(braceexpand.braceexpand(spec))
    if local is not None:
        missing = [u for u in urls if not os.path.isfile(_local_path(u))]
        if len(missing) == len(urls):
            raise SpecError(f"spec {spec!r} matches no file (first expansion: {urls[0]})")
        if missing:
            shown = ", ".join(missing[:3])
            raise SpecError(f"spec {spec!r}: {len(missing)} of {len(urls)} shards do not exist ({shown}, ...)")
    return urls


def _sizes_for(urls: Sequence[str]) -> int | None:
    """Total sample count from ``sizes.json`` beside local shards, if it lists all of them."""
    total = 0
    cache: dict[str, dict] = {}
    for url in urls:
        path = _local_path(url)
        if path is None:
            return None
        folder, name = os.path.split(path)
        if folder not in cache:
            try:
                cache[folder] = json.loads(Path(folder or ".", "sizes.json").read_text())
            except (OSError, ValueError):
                return None
        if name not in cache[folder]:
            return None
        total += int(cache[folder][name])
    return total


def parse_sources(
    spec: str | os.PathLike | Sequence[str | os.PathLike], weights: Sequence[float] | None = None
) -> list[Source]:
    """Split ``a::b`` (or a list of specs) into sources, each with its shard URLs and weight."""
    parts = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    specs = [s for part in parts for s in os.fspath(part).split("::") if s.strip()]
    if not specs:
        raise SpecError("no shard spec given")
    if weights is None:
        weights = [1.0] * len(specs)
    if len(weights) != len(specs):
        raise SpecError(f"{len(weights)} weights given for {len(specs)} sources")
    sources = []
    for s, w in zip(specs, weights, strict=True):
        if not w > 0:
            raise SpecError(f"source weight must be positive, got {w} for {s!r}")
        urls = expand_spec(s)
        sources.append(Source(spec=s, urls=tuple(urls), weight=float(w), samples=_sizes_for(urls)))
    return sources


def open_url(url: str) -> IO[bytes]:
    """Open a shard for reading: webdataset's gopen for local/pipe/http, fsspec for the rest."""
    if _scheme(url) in _WDS_SCHEMES:
        return wds.gopen(url, "rb")
    import fsspec  # a torch dependency; cloud backends (s3fs, gcsfs) are the user's to install

    return fsspec.open(url, "rb").open()


def shard_name(url: str) -> str:
    """A short, stable name for a shard (its file name), used in seeds and messages."""
    return os.path.basename(url.rstrip("/").split()[-1]) or url


def rewrite_plan(spec: str, out: str | os.PathLike, what: str) -> tuple[list[str], list[str], Path]:
    """For a command that rewrites every shard of ``spec`` into ``out``: the input URLs, the output
    file names (one per input, so they must be distinct) and ``out``, which must be new or empty.
    ``what`` names the job in the message for clashing names (e.g. "add negatives")."""
    urls = [u for s in parse_sources(spec) for u in s.urls]
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new output directory")
    names = [shard_name(u) for u in urls]
    if len(set(names)) != len(names):
        raise ValueError(f"two input shards have the same file name; {what} for each source separately")
    return urls, names, out

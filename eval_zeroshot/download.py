"""Fetch the compositional benchmarks' official files: ``vlp-eval compositional --download DIR``.

:data:`BENCHMARKS` lists, per benchmark, each file's official location, where it lands under ``DIR`` and
what it is checked against. Only SugarCrepe's seven JSON files have a known size and sha256 (computed from
the official files, identical to the blobs at the pinned commit); ARO's annotation files (Google Drive),
the Karpathy test files (BLIP's bucket) and the image archives publish no checksum, so they are checked
only as far as they can be without one: a JSON file must parse, a download must have the length the
server announced, an archive must pass its own CRCs while being unpacked. No checksum here is invented.

A file is downloaded to ``DEST.part``; a later run resumes it (an HTTP Range request, or a seek for
``file://``), and only a file that passes its checks is renamed to ``DEST``. A file already at ``DEST``
that passes its checks is reused without any request. A checksum mismatch deletes the ``.part`` (its
bytes are wrong, so resuming it would never succeed); a network failure keeps it for the next run. All
files are tried before one :class:`DownloadError` lists what is missing and where to put it by hand.

Mirror: ``--mirror URL`` or ``$VLP_BENCHMARK_MIRROR`` replaces every official location by
``URL/<path under DIR>`` (e.g. ``URL/sugarcrepe/add_att.json``), so a copy of a download folder is a
mirror; a plain folder path is taken as ``file://``. Standard library only (urllib).
"""

from __future__ import annotations

import os
import sys
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Re-exported: the CLI and the tests import these from eval_zeroshot.download.
from .download_fetch import Damaged, FetchFailed, check, download, sha256_of, unpack
from .download_sources import BENCHMARKS, Benchmark, Source

__all__ = [
    "BENCHMARKS",
    "MIRROR_ENV",
    "Benchmark",
    "Damaged",
    "DownloadError",
    "FetchFailed",
    "Fetched",
    "Source",
    "check",
    "download",
    "ensure",
    "resolve_mirror",
    "sha256_of",
    "source_url",
    "unpack",
]

MIRROR_ENV = "VLP_BENCHMARK_MIRROR"


class DownloadError(Exception):
    """Files that could not be fetched; the message lists each one, where it goes and where it comes from."""


@dataclass
class Fetched:
    """Where a benchmark's files are after :func:`ensure`."""

    data: Path
    images: Path
    images_ready: bool  # whether the image folder is in place
    images_hint: str  # what to do when it is not


def resolve_mirror(mirror: str | None) -> str | None:
    """``--mirror``, else ``$VLP_BENCHMARK_MIRROR``; a plain folder path becomes a ``file://`` URL."""
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    if mirror and "://" not in mirror:
        mirror = Path(mirror).resolve().as_uri()
    return mirror.rstrip("/") if mirror else None


def source_url(src: Source, mirror: str | None) -> str | None:
    """Where ``src`` is fetched from: the mirror's copy (``MIRROR/<dest>``) or the official location."""
    if src.url is None:
        return None
    return f"{mirror}/{urllib.parse.quote(src.dest)}" if mirror else src.url


def _host(url: str) -> str:
    return urllib.parse.urlparse(url).netloc


def _place_line(root: Path, src: Source) -> str:
    if src.url is None:
        return f"  {root / src.target}  <-  {src.about}"
    about = f"; {src.about}" if src.about else ""
    unpacked = f", unpacked into {root / src.target}" if src.unpack else ""
    return f"  {root / src.dest}  <-  {src.url}  ({src.checks()}{about}{unpacked})"


def ensure(
    benchmark: str,
    root: Path,
    mirror: str | None = None,
    with_images: bool = False,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> Fetched:
    """Put ``benchmark``'s files (and with ``with_images`` its images) under ``root``; reuse what is there.

    Raises DownloadError listing every file still missing, its place under ``root`` and its source."""
    if benchmark not in BENCHMARKS:
        raise DownloadError(f"--download knows {', '.join(BENCHMARKS)}; not {benchmark}")
    bench = BENCHMARKS[benchmark]
    mirror = resolve_mirror(mirror)
    sources = list(bench.files) + ([bench.image_source] if with_images else [])
    problems: list[tuple[Source, str]] = []
    down: dict[str, str] = {}  # host -> why: one unreachable host is not asked again for every file
    for src in sources:
        target = root / src.target
        if target.is_dir() or (target.is_file() and check(target, src) is None):
            log(f"reusing {target} ({'present' if target.is_dir() else 'checked: ' + src.checks()})")
            continue
        if target.exists():
            log(f"{check(target, src)}: fetching it again")
        url = source_url(src, mirror)
        if url is None:
            problems.append((src, f"{target} is missing and has no public download"))
            continue
        if _host(url) in down:
            problems.append((src, f"{url}: not tried, {_host(url)} did not answer ({down[_host(url)]})"))
            continue
        fetched = root / src.dest
        try:
            # An archive downloaded whole by a run that stopped before unpacking it is not fetched again.
            if not (src.unpack and fetched.is_file() and check(fetched, src) is None):
                download(url, fetched, src, log)
            if src.unpack:
                unpack(fetched, target, log)
        except FetchFailed as exn:
            problems.append((src, str(exn)))
            if exn.host_down and _host(url):
                down[_host(url)] = str(exn).removeprefix(f"{url}: ")
        except Damaged as exn:
            problems.append((src, str(exn)))
    if problems:
        lines = [f"{benchmark}: {len(problems)} of {len(sources)} files could not be fetched into {root}:"]
        lines += [f"  {why}" for _, why in problems]
        lines.append(
            "Files already in place were kept. Place these by hand (or give --mirror), then run the same command again:"
        )
        lines += [_place_line(root, src) for src, _ in problems]
        raise DownloadError("\n".join(lines))
    images = root / bench.image_source.target
    src = bench.image_source
    if src.url:
        hint = f"add --with-images to fetch {src.url} ({src.about}) and unpack it there, or pass --images"
    else:
        hint = f"{src.about}, or pass --images"
    return Fetched(
        data=root / bench.data,
        images=root / bench.images,
        images_ready=images.is_dir(),
        images_hint=f"{images} does not exist: {hint}",
    )

"""A corpus of real JPEG photographs for throughput benchmarks, made without a download.

The samples are cut, rescaled and flipped from the photographs that scikit-image (``skimage/data``) and
scikit-learn (``sklearn/datasets/images``) ship inside their wheels. Install them with the benchmark
extra (``pip install 'vlp[bench]'``); nothing is fetched at run time. Only files that are already in
the installed packages are read, so scikit-image's own downloader (pooch) is never called.

Use this corpus to measure throughput, not to train. The samples have the statistics of real JPEGs:
photographic entropy, 4:2:0 chroma subsampling, quality 90, and COCO's or img2dataset's image size.
There are only 18 source photographs, though, and the crops overlap, so a model trained on them would
learn little.

Each sample is a crop of a source photograph, picked from the sample's own seeded stream: the source
(grayscale ones are drawn a tenth as often as colour ones and stored as RGB JPEGs), the crop's area
(25-100 % of the photograph's), its aspect ratio and position, and a horizontal flip with
probability 1/2. The crop is then resized:

* ``WxH`` (default ``640x480``, COCO-like): to exactly W x H. The crop's aspect ratio is W/H give or
  take 10 %, so the image is stretched a little at most.
* ``N`` (e.g. ``256``, img2dataset's default ``--image_size 256 --resize_mode border``): the crop's
  aspect ratio is drawn between 3:5 and 5:3, its longer side is resized to N and the image is centred
  on a white N x N canvas.

Small crops are enlarged with Lanczos and large ones reduced with a box filter (area averaging), as
img2dataset does with OpenCV. The image is saved with Pillow as a baseline JPEG (``optimize=False``,
4:2:0). Same arguments with the same Pillow (libjpeg) and package versions give byte-identical files.

Layout of ``OUT``::

    photos-000000.tar ...   {key}.jpg, {key}.txt (caption), {key}.json (source, crop, flip, size, caption)
    sizes.json              shard name -> sample count
    photos.json             manifest: arguments, counts, the source files and the package versions

The parts: the photographs (:mod:`.photo_catalogue`) and the making of one sample (:mod:`.photo_crops`);
here, finding the photographs in the installed packages and writing the corpus.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path

from PIL import Image

from vlp.common.atomic import staged, write_json_atomic

from ..shards.writer import ShardSink
from ..workers import map_in_pool

# Re-exported: vlp-data photos, the loader benchmark and the tests import these from sources.photos.
from .photo_catalogue import EXTRA, PACKAGES, PHOTOS, MissingExtraError, Photo, Source
from .photo_crops import PhotosConfig, make_sample, parse_size, sample_key

__all__ = [
    "EXTRA",
    "FORMAT_VERSION",
    "MANIFEST",
    "PACKAGES",
    "PHOTOS",
    "MissingExtraError",
    "Photo",
    "PhotosConfig",
    "PhotosSummary",
    "Source",
    "find_sources",
    "make_sample",
    "parse_size",
    "sample_key",
    "write_photos",
]

MANIFEST = "photos.json"
FORMAT_VERSION = 1


# Here rather than in photo_catalogue: it looks the packages up through this module's find_spec, which is
# where a test makes one of them missing.
def find_sources() -> list[Source]:
    """The photographs in the installed packages, located without importing them (nothing runs, nothing
    is downloaded). Raises :class:`MissingExtraError` if a package or one of its files is missing."""
    folders, missing = {}, []
    for package, dist in PACKAGES.items():
        spec = find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            missing.append(dist)
        else:
            folders[package] = Path(list(spec.submodule_search_locations)[0])
    if missing:
        raise MissingExtraError(
            f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed; the photographs "
            f"come from their wheels: {EXTRA}"
        )
    sources = []
    for photo in PHOTOS:
        file = folders[photo.package] / photo.path
        if not file.is_file():
            raise MissingExtraError(
                f"{file} is missing from the installed {PACKAGES[photo.package]}; reinstall it ({EXTRA})"
            )
        data = file.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            size = im.size
        sources.append(Source(photo, str(file), size, hashlib.sha256(data).hexdigest()))
    return sources


@dataclass
class PhotosSummary:
    out: str
    counts: dict = field(default_factory=dict)
    seconds: float = 0.0


def _versions() -> dict[str, str]:
    versions = {}
    for dist in ("pillow", *PACKAGES.values()):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = "unknown"
    return versions


def write_photos(
    out: str | os.PathLike,
    cfg: PhotosConfig = PhotosConfig(),
    workers: int | None = None,
    log: Callable[[str], None] = print,
) -> PhotosSummary:
    """Write the corpus into ``out`` (built beside it in ``OUT.partial``, then renamed into place).

    Refuses an existing, non-empty ``out`` (:class:`FileExistsError`) and missing packages
    (:class:`MissingExtraError`) before writing anything. Samples never depend on ``workers``.
    """
    cfg.validate()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty; choose a new output directory")
    sources = find_sources()
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    fn = functools.partial(make_sample, cfg, tuple(sources))
    step = max(1, cfg.n // 10)
    start = time.perf_counter()
    jpeg_bytes = 0
    with staged(out) as tmp:
        log(f"writing {cfg.n} photo crops ({cfg.width}x{cfg.height}, JPEG quality {cfg.quality}) to {out}")
        with ShardSink(tmp, pattern="photos-{:06d}.tar", shard_size=cfg.shard_size) as sink:
            for index, members in enumerate(map_in_pool(fn, range(cfg.n), workers, chunksize=16, min_items=64)):
                sink.write(sample_key(index), members)
                jpeg_bytes += len(members["jpg"])
                if (index + 1) % step == 0 or index + 1 == cfg.n:
                    log(f"  {index + 1}/{cfg.n} samples")
        counts = {"samples": cfg.n, "shards": len(sink.sizes), "jpeg_bytes": jpeg_bytes}
        manifest = {
            "format_version": FORMAT_VERSION,
            "config": asdict(cfg),
            "counts": counts,
            "sources": [
                {
                    "name": s.photo.name,
                    "file": f"{s.photo.package}/{s.photo.path}",
                    "size": list(s.size),
                    "grayscale": s.photo.grayscale,
                    "sha256": s.sha256,
                }
                for s in sources
            ],
            "versions": _versions(),
        }
        write_json_atomic(tmp / MANIFEST, manifest, sort_keys=True)
    seconds = time.perf_counter() - start
    log(f"photos written to {out} in {seconds:.1f} s ({jpeg_bytes / cfg.n / 1024:.0f} KiB a JPEG on average)")
    return PhotosSummary(str(out), counts, seconds)

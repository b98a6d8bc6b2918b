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
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import os
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path

from PIL import Image

from vlp.common.atomic import staged, write_json_atomic

from ..shards.writer import ShardSink
from ..workers import map_in_pool

MANIFEST = "photos.json"
FORMAT_VERSION = 1
EXTRA = "pip install 'vlp[bench]'"
GRAYSCALE_WEIGHT = 0.1  # a grayscale photograph is drawn this often relative to a colour one
MIN_AREA, MAX_AREA = 0.25, 1.0  # crop area, as a fraction of the photograph's
FIXED_ASPECT_JITTER = 1.1  # WxH: the crop's aspect ratio is W/H times [1/1.1, 1.1] (log-uniform)
BORDER_ASPECTS = (3 / 5, 5 / 3)  # N: the crop's aspect ratio (log-uniform)
BORDER_FILL = (255, 255, 255)  # img2dataset pads with white


@dataclass(frozen=True)
class Photo:
    name: str  # scikit-image's loader function, or scikit-learn's file name without .jpg
    package: str  # the import name of the package that ships it
    path: str  # relative to the package's folder
    subject: str  # what the caption says it shows
    grayscale: bool = False


# Real photographs only: no synthetic image (colorwheel, logo, phantom, chessboard, binary blobs), no
# screenshot (page), no silhouette (horse).
PHOTOS: tuple[Photo, ...] = (
    Photo("astronaut", "skimage", "data/astronaut.png", "an astronaut in an orange spacesuit in front of a flag"),
    Photo("chelsea", "skimage", "data/chelsea.png", "a tabby cat"),
    Photo("coffee", "skimage", "data/coffee.png", "a cup of coffee on a red saucer on a wooden table"),
    Photo(
        "hubble_deep_field", "skimage", "data/hubble_deep_field.jpg", "distant galaxies seen by the Hubble telescope"
    ),
    Photo("immunohistochemistry", "skimage", "data/ihc.png", "stained tissue under a microscope"),
    Photo("motorcycle_left", "skimage", "data/motorcycle_left.png", "a red motorcycle parked in a garage"),
    Photo("motorcycle_right", "skimage", "data/motorcycle_right.png", "a red motorcycle parked in a garage"),
    Photo("retina", "skimage", "data/retina.jpg", "the retina at the back of a human eye"),
    Photo("rocket", "skimage", "data/rocket.jpg", "a rocket on its launch pad at dusk"),
    Photo("china", "sklearn", "datasets/images/china.jpg", "a Chinese pagoda among trees above a lake"),
    Photo("flower", "sklearn", "datasets/images/flower.jpg", "an orange dahlia"),
    Photo("camera", "skimage", "data/camera.png", "a man with a camera on a tripod", grayscale=True),
    Photo("coins", "skimage", "data/coins.png", "rows of old coins", grayscale=True),
    Photo("moon", "skimage", "data/moon.png", "the surface of the moon", grayscale=True),
    Photo("brick", "skimage", "data/brick.png", "a brick wall", grayscale=True),
    Photo("grass", "skimage", "data/grass.png", "grass", grayscale=True),
    Photo("gravel", "skimage", "data/gravel.png", "gravel", grayscale=True),
    Photo("text", "skimage", "data/text.png", "handwritten text on paper", grayscale=True),
)
PACKAGES = {"skimage": "scikit-image", "sklearn": "scikit-learn"}  # import name -> distribution name


class MissingExtraError(RuntimeError):
    """scikit-image or scikit-learn (the ``bench`` extra) is not installed, or lacks a photograph."""


@dataclass(frozen=True)
class PhotosConfig:
    n: int = 2000
    width: int = 640
    height: int = 480
    border: bool = False  # True: img2dataset's resize_mode=border to width x width (width == height)
    seed: int = 0
    quality: int = 90
    shard_size: int = 500

    def validate(self) -> None:
        if self.n < 1:
            raise ValueError(f"--n must be positive, got {self.n}")
        if self.shard_size < 1:
            raise ValueError(f"--shard-size must be positive, got {self.shard_size}")
        if not (16 <= self.width <= 4096 and 16 <= self.height <= 4096):
            raise ValueError(f"--size must be between 16 and 4096 pixels a side, got {self.width}x{self.height}")
        if self.border and self.width != self.height:
            raise ValueError("a bordered (img2dataset) image is square")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"--quality must be between 1 and 100, got {self.quality}")


def parse_size(text: str) -> tuple[int, int, bool]:
    """``"640x480"`` -> (640, 480, False): exactly W x H; ``"256"`` -> (256, 256, True): img2dataset's
    border mode (longer side to 256, centred on a white square)."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
    if not m:
        raise ValueError(f"--size must be WxH (e.g. 640x480) or N (e.g. 256), got {text!r}")
    if m.group(2) is None:
        return int(m.group(1)), int(m.group(1)), True
    return int(m.group(1)), int(m.group(2)), False


@dataclass(frozen=True)
class Source:
    photo: Photo
    file: str  # absolute path
    size: tuple[int, int]
    sha256: str


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


@functools.cache
def _load(file: str) -> Image.Image:
    """A source photograph as RGB, without its metadata (no ICC profile or EXIF reaches the output)."""
    with Image.open(file) as im:
        rgb = im.convert("RGB")
    rgb.info = {}
    return rgb


def _log_uniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _crop_box(rng: random.Random, src_w: int, src_h: int, aspect: float) -> tuple[int, int, int, int]:
    """(x, y, w, h): a crop of ``aspect`` (w/h) covering MIN_AREA..MAX_AREA of the source, inside it."""
    area = rng.uniform(MIN_AREA, MAX_AREA) * src_w * src_h
    w, h = math.sqrt(area * aspect), math.sqrt(area / aspect)
    shrink = min(1.0, src_w / w, src_h / h)  # keep the aspect ratio, fit inside the photograph
    w, h = max(8, min(src_w, round(w * shrink))), max(8, min(src_h, round(h * shrink)))
    return rng.randint(0, src_w - w), rng.randint(0, src_h - h), w, h


def _resize(im: Image.Image, box: tuple[int, int, int, int], size: tuple[int, int]) -> Image.Image:
    x, y, w, h = box
    # as img2dataset: Lanczos to enlarge, area averaging (box filter) to reduce
    resample = Image.Resampling.LANCZOS if size[0] * size[1] > w * h else Image.Resampling.BOX
    return im.resize(size, resample, box=(x, y, x + w, y + h))


def sample_key(index: int) -> str:
    return f"{index:09d}"


def make_sample(cfg: PhotosConfig, sources: Sequence[Source], index: int) -> dict[str, bytes]:
    """Sample ``index``: its members (jpg, txt, json), from its own seeded stream."""
    rng = random.Random(f"vlp-photos:{cfg.seed}:{index}")  # str seeds hash with SHA-512: stable
    weights = [GRAYSCALE_WEIGHT if s.photo.grayscale else 1.0 for s in sources]
    source = rng.choices(sources, weights)[0]
    src_w, src_h = source.size
    if cfg.border:
        aspect = _log_uniform(rng, *BORDER_ASPECTS)
    else:
        aspect = cfg.width / cfg.height * _log_uniform(rng, 1 / FIXED_ASPECT_JITTER, FIXED_ASPECT_JITTER)
    box = _crop_box(rng, src_w, src_h, aspect)
    flip = rng.random() < 0.5

    im = _load(source.file)
    if cfg.border:
        side = cfg.width
        _, _, w, h = box
        scale = side / max(w, h)
        inner = (min(side, max(1, round(w * scale))), min(side, max(1, round(h * scale))))
        image = Image.new("RGB", (side, side), BORDER_FILL)
        image.paste(_resize(im, box, inner), ((side - inner[0]) // 2, (side - inner[1]) // 2))
    else:
        image = _resize(im, box, (cfg.width, cfg.height))
    if flip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=cfg.quality, optimize=False, progressive=False, subsampling="4:2:0")

    kind = "black and white photograph" if source.photo.grayscale else "photograph"
    closeness = "close-up " if box[2] * box[3] < 0.4 * src_w * src_h else ""
    caption = f"a {closeness}{kind} of {source.photo.subject} ({source.photo.name}), crop {index + 1} of {cfg.n}"
    if flip:
        caption += ", mirrored"
    meta = {"source": source.photo.name, "crop": list(box), "flip": flip, "size": [cfg.width, cfg.height]}
    meta["caption"] = caption
    return {"jpg": buf.getvalue(), "txt": caption.encode(), "json": json.dumps(meta).encode()}


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

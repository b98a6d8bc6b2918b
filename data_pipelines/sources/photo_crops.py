"""One sample of the photos corpus, made from its own seeded stream: a crop of a source photograph (the
source, the crop's area, aspect ratio and position, a horizontal flip), resized as COCO or img2dataset
would have it, saved as a baseline 4:2:0 JPEG, with its caption and JSON metadata; and
:class:`PhotosConfig`, the corpus's arguments. The scheme is set out in :mod:`~.photos`' docstring.
"""

from __future__ import annotations

import functools
import io
import json
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from .photo_catalogue import Source

GRAYSCALE_WEIGHT = 0.1  # a grayscale photograph is drawn this often relative to a colour one
MIN_AREA, MAX_AREA = 0.25, 1.0  # crop area, as a fraction of the photograph's
FIXED_ASPECT_JITTER = 1.1  # WxH: the crop's aspect ratio is W/H times [1/1.1, 1.1] (log-uniform)
BORDER_ASPECTS = (3 / 5, 5 / 3)  # N: the crop's aspect ratio (log-uniform)
BORDER_FILL = (255, 255, 255)  # img2dataset pads with white


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

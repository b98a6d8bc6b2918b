"""JPEG members the fast way: the crop of open_clip's transform, decoded at reduced size, resized once.

open_clip's training transform decodes a 640×480 JPEG in full (PIL), crops 90-100% of it
(``RandomResizedCrop``), resizes the crop to 224 px with an antialiased bicubic filter, converts and
normalises: about 4-6 ms of one core per image, most of it in the full-size decode, the large resize
and the float arithmetic. The paths here draw crops from the same distribution (the same algorithm,
from the sample's own seed), and then:

``fast`` (the trainer's default, :class:`FastJpeg`)
    libjpeg-turbo (simplejpeg) decodes with DCT scaling: straight to the smallest size of the form
    W·k/8 that still holds the crop at the output size (1/2 of a 640×480 photo for 224 px), so the
    inverse DCT, colour conversion and chroma upsampling run on a quarter of the pixels. The crop's
    corners are then rounded to that decoded grid (at most half a decoded pixel: 1 px of a 640×480
    photo decoded at half size) and torch's antialiased bilinear resize runs on the uint8 crop, read
    channels-last as libjpeg-turbo wrote it: 1.14 ms of one core per 640×480 photo, decode included,
    against 1.43 ms for PIL's sub-pixel ``resize(box=...)`` with its two RGB↔RGBX copies (the price:
    the rounding, and the PSNR it costs, stated in docs/data.md). The batch stays uint8
    (B×3×H×W, a quarter of the float bytes) with its ``image_normalize`` (mean, std): ToTensor's and
    Normalize's arithmetic run where the model is (:func:`images_to`), free on a GPU. Differs from
    open_clip's pixels by the DCT-scaled decode, the bilinear filter and the crop's rounding to the
    decoded grid (PSNR bounds in tests/test_jpeg_decoder.py). Non-JPEG images take open_clip's
    transform up to its uint8 pixels, so their normalised values are bit-identical to ``pil``'s.
``device`` (:class:`DeviceImages`)
    The worker ships the JPEG bytes and the crop box; the training process decodes the batch on the
    training device (torchvision's ``decode_jpeg``: nvJPEG on CUDA, libjpeg-turbo on CPU), crops and
    resizes each image there (antialiased bilinear) and normalises. Differs from open_clip by the
    filter (bilinear) only: the decode is full size.
``pil``
    open_clip's transform as given (the loader's default for library callers): float batches,
    bit-identical to ``preprocess(image)`` stacked.

A JPEG that libjpeg-turbo cannot decode, and any transform other than open_clip's two (random
resized crop; resize + centre crop), take open_clip's transform.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms import CenterCrop, Compose, Normalize, RandomResizedCrop, Resize
from torchvision.transforms import functional as F
from torchvision.transforms.functional import InterpolationMode

from .transforms import normalize_uint8

DECODERS: tuple[str, ...] = ("fast", "pil", "device")
JPEG_EXTENSIONS = ("jpg", "jpeg")


def _size(size) -> tuple[int, int]:
    """torchvision's size argument as (height, width)."""
    if isinstance(size, int):
        return size, size
    size = tuple(size)
    return (size[0], size[0]) if len(size) == 1 else (size[0], size[1])


@dataclass(frozen=True)
class CropGeometry:
    """What open_clip's transform does to an image's geometry, read off the transform itself."""

    out_h: int
    out_w: int
    random: bool  # RandomResizedCrop (else: resize the short side, then centre crop)
    scale: tuple[float, float] = (1.0, 1.0)
    ratio: tuple[float, float] = (1.0, 1.0)

    @classmethod
    def of(cls, preprocess) -> CropGeometry | None:
        """The geometry of ``Compose([RandomResizedCrop, convert, ToTensor, Normalize])`` or
        ``Compose([Resize(short side), CenterCrop(same), convert, ToTensor, Normalize])`` (open_clip's
        training and evaluation transforms); None for anything else."""
        steps = list(getattr(preprocess, "transforms", None) or ())
        if not isinstance(preprocess, Compose) or len(steps) < 3 or type(steps[-1]) is not Normalize:
            return None
        first = steps[0]
        if type(first) is RandomResizedCrop and all(map(_keeps_pixels, steps[1:-1])):
            h, w = _size(first.size)
            return cls(h, w, True, tuple(first.scale), tuple(first.ratio))
        if type(first) is Resize and type(steps[1]) is CenterCrop and all(map(_keeps_pixels, steps[2:-1])):
            size = first.size
            short = size if isinstance(size, int) else (size[0] if len(size) == 1 else None)
            h, w = _size(steps[1].size)
            if short is not None and h == w == short and first.max_size is None:
                return cls(h, w, False)  # the centre square of the short side
        return None

    def crop(self, height: int, width: int, rng: random.Random) -> tuple[int, int, int, int]:
        """(top, left, crop_h, crop_w) in the full image: ``RandomResizedCrop.get_params``'s algorithm
        (up to 10 draws of area and log-aspect, then the centre crop clamped to the ratio), drawing from
        ``rng`` (the sample's seed) instead of torch's generator, which costs a dozen tensor calls per
        image. Same distribution as open_clip's crops (tests/test_jpeg_decoder.py), not the same values."""
        if not self.random:
            side = min(height, width)
            return (height - side) // 2, (width - side) // 2, side, side
        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(log_lo, log_hi))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return rng.randint(0, height - h), rng.randint(0, width - w), h, w
        in_ratio = width / height  # as torchvision: the whole image, cut to the nearest allowed ratio
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            h, w = height, int(round(height * max(self.ratio)))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w


def _keeps_pixels(step) -> bool:
    """Steps after the geometry that do not change an RGB image's pixels: a mode conversion, ToTensor."""
    kind = type(step).__name__
    return (
        kind in ("MaybeConvertMode", "MaybeToTensor", "ToTensor") or getattr(step, "__name__", "") == "_convert_to_rgb"
    )


def grid_box(top: int, left: int, crop_h: int, crop_w: int, sy: float, sx: float) -> tuple[int, int, int, int]:
    """The crop (top, left, height, width of the full image) on the grid of an image decoded at
    scales ``sy``, ``sx``: (y0, x0, y1, x1) in decoded pixels, each corner rounded to the nearest one
    (at most half a decoded pixel away), never empty."""
    y0, x0 = round(top * sy), round(left * sx)
    return y0, x0, max(round((top + crop_h) * sy), y0 + 1), max(round((left + crop_w) * sx), x0 + 1)


class FastJpeg:
    """JPEG bytes → a 3×H×W uint8 tensor, cropped and resized as the transform would (module docstring)."""

    def __init__(self, geometry: CropGeometry):
        import simplejpeg  # a dependency; imported here so that importing the loader stays light

        self.simplejpeg = simplejpeg
        self.geometry = geometry

    def __call__(self, data: bytes, rng: random.Random) -> torch.Tensor:
        """Raises ValueError for bytes libjpeg-turbo cannot decode to RGB (the caller falls back)."""
        sj = self.simplejpeg
        height, width, _, _ = sj.decode_jpeg_header(data)
        g = self.geometry
        top, left, ch, cw = g.crop(height, width, rng)
        # The smallest decode that still holds the crop at the output size (libjpeg picks k/8 >= this).
        need = max(g.out_w / cw, g.out_h / ch)
        pixels = sj.decode_jpeg(
            data, colorspace="RGB", min_width=math.ceil(width * need), min_height=math.ceil(height * need)
        )
        y0, x0, y1, x1 = grid_box(top, left, ch, cw, pixels.shape[0] / height, pixels.shape[1] / width)
        # H×W×3 as decoded is a channels-last 1×3×H×W; a contiguous channels-last copy of the crop takes
        # torch's vectorised uint8 path (0.11 ms at 224 px, against 0.19 ms for the strided view).
        crop = torch.from_numpy(pixels).permute(2, 0, 1)[None, :, y0:y1, x0:x1]
        crop = crop.contiguous(memory_format=torch.channels_last)
        out = torch.nn.functional.interpolate(crop, size=(g.out_h, g.out_w), mode="bilinear", antialias=True)
        return out[0]


@dataclass
class EncodedImage:
    """What a worker ships in ``device`` mode: the JPEG bytes and the crop box in the full image."""

    data: torch.Tensor  # uint8, the file's bytes
    box: tuple[int, int, int, int]  # top, left, height, width


class DeviceImages:
    """A batch of images finished on the training device: ``.to(device, dtype)`` decodes the JPEGs
    there (torchvision, nvJPEG on CUDA), crops and resizes each (antialiased bilinear), stacks,
    scales to [0, 1] and normalises. Rows may also be already-decoded H×W×3 uint8 arrays (non-JPEG
    images, decoded by the worker). Stands in for the image tensor of a batch (``len``, ``shape``)."""

    def __init__(self, rows: list, out_hw: tuple[int, int], normalize: Normalize):
        self.rows, self.out_hw, self.normalize = rows, out_hw, normalize

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), 3, *self.out_hw))

    def to(
        self, device: torch.device | str, dtype: torch.dtype | None = None, non_blocking: bool = False
    ) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_jpeg

        device = torch.device(device)
        encoded = [i for i, r in enumerate(self.rows) if isinstance(r, EncodedImage)]
        decoded = {}
        if encoded:
            datas = [self.rows[i].data for i in encoded]
            images = decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)  # a list in, a list out
            decoded = dict(zip(encoded, images, strict=True))
        out = torch.empty((len(self.rows), 3, *self.out_hw), dtype=torch.uint8, device=device)
        for i, row in enumerate(self.rows):
            if i in decoded:
                top, left, h, w = row.box
                out[i] = F.resized_crop(
                    decoded[i], top, left, h, w, list(self.out_hw), InterpolationMode.BILINEAR, antialias=True
                )
            else:
                out[i] = (
                    torch.from_numpy(np.array(row, copy=True)).permute(2, 0, 1).to(device, non_blocking=non_blocking)
                )
        return normalize_uint8(out, self.normalize.mean, self.normalize.std, dtype)


def images_to(
    images: torch.Tensor | DeviceImages,
    device: torch.device | str,
    dtype: torch.dtype | None = None,
    normalize: tuple[Sequence[float], Sequence[float]] | None = None,
) -> torch.Tensor:
    """A batch's images as the model's input on ``device``: a float tensor as is (``pil``), a uint8
    one (``fast``) scaled and normalised there with ``normalize`` = (mean, std) (the batch's
    ``image_normalize``), a :class:`DeviceImages` (``device``) decoded there."""
    if isinstance(images, DeviceImages):
        return images.to(device, dtype, non_blocking=True)
    if images.dtype == torch.uint8:
        if normalize is None:
            raise ValueError("a uint8 image batch needs its (mean, std): the batch's image_normalize")
        return normalize_uint8(images.to(device, non_blocking=True), *normalize, dtype=dtype)
    return images.to(device, dtype=dtype, non_blocking=True)

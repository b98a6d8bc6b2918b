"""Running an image transform partly per sample and partly per batch.

open_clip's transforms end in ``ToTensor`` and ``Normalize``: a handful of small tensor operations
per image whose fixed cost is larger than their work at CLIP's image sizes. The loader applies the
PIL steps per sample and these two once per batch, with the same arithmetic element for element,
so the pixels are bit-identical to ``preprocess(image)`` stacked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import Compose, Normalize, ToTensor
from torchvision.transforms import functional as F


@dataclass
class SplitTransform:
    """``per_sample`` maps a PIL image to an H×W×C uint8 array (or, when the transform could not be
    split, to the finished tensor); ``per_batch`` stacks a list of those into a B×C×H×W tensor."""

    per_sample: Callable[[Image.Image], np.ndarray | torch.Tensor]
    normalize: Normalize | None

    def per_batch(self, items: Sequence[np.ndarray | torch.Tensor]) -> torch.Tensor:
        if self.normalize is None:
            return torch.stack(list(items))
        return normalize_uint8(stack_uint8(items), self.normalize.mean, self.normalize.std)


def stack_uint8(items: Sequence[np.ndarray | torch.Tensor]) -> torch.Tensor:
    """H×W×C uint8 arrays (PIL's pixels) → one B×C×H×W uint8 tensor (a quarter of the float batch's
    bytes), in channels-last memory: one copy, no transposition here; :func:`normalize_uint8` makes
    the float batch contiguous where it runs (on a GPU, for free). C×H×W uint8 tensors (the ``fast``
    JPEG path's) may stand among them; the batch is then contiguous."""
    if all(isinstance(item, np.ndarray) for item in items):
        return torch.from_numpy(np.stack(items)).permute(0, 3, 1, 2)
    # PIL's arrays are read-only; the transposing copy is a writable C×H×W array torch can wrap
    chw = [
        i if isinstance(i, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(i.transpose(2, 0, 1)))
        for i in items
    ]
    return torch.stack(chw)


def normalize_uint8(
    pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float], dtype: torch.dtype | None = None
) -> torch.Tensor:
    """ToTensor's arithmetic (x / 255) on one float copy of a uint8 batch, then torchvision's
    normalize in place on it: element for element what ``Normalize(ToTensor(image))`` gives, on
    whatever device ``pixels`` is (the ``fast`` decoder leaves this to the training device)."""
    pixels = pixels.to(torch.get_default_dtype(), memory_format=torch.contiguous_format).div_(255)
    pixels = F.normalize(pixels, list(mean), list(std), inplace=True)
    return pixels if dtype is None else pixels.to(dtype)


def _pil_to_array(steps: Callable[[Image.Image], Image.Image]) -> Callable[[Image.Image], np.ndarray]:
    def run(image: Image.Image) -> np.ndarray:
        out = steps(image)
        if not isinstance(out, Image.Image) or out.mode != "RGB":
            raise TypeError(f"the transform's PIL steps gave {type(out).__name__}, not an RGB image: {steps}")
        return np.asarray(out, dtype=np.uint8)

    return run


def split_transform(preprocess: Callable) -> SplitTransform:
    """Split a ``Compose([..., ToTensor(), Normalize(...)])`` (open_clip's, or any like it) into its
    PIL part and its batched tensor part; any other transform stays whole, per sample."""
    steps = getattr(preprocess, "transforms", None)
    if (
        isinstance(preprocess, Compose)
        and steps is not None
        and len(steps) >= 2
        and isinstance(steps[-2], ToTensor)  # open_clip's MaybeToTensor is one
        and type(steps[-1]) is Normalize
    ):
        return SplitTransform(_pil_to_array(Compose(list(steps[:-2]))), steps[-1])
    return SplitTransform(preprocess, None)

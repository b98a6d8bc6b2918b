"""One raw sample to (pixels, caption, negatives[, neighbour]) with per-sample seeds, and a list of those
to a batch. Everything random here is drawn from the sample's own seed, so it does not depend on what
was decoded before (or skipped on resume)."""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from ..shards.reader import (
    MISSING_IMAGE,
    MISSING_NEIGHBOUR,
    OTHER_NEIGHBOUR_KIND,
    SkipSample,
    caption,
    decode_image,
    image_member,
    metadata,
    negative_texts,
    neighbour_field,
)
from .jpeg import JPEG_EXTENSIONS, CropGeometry, DeviceImages, EncodedImage, FastJpeg
from .options import StreamOptions
from .order import stable_seed
from .transforms import split_transform, stack_uint8

log = logging.getLogger("data_pipelines")

# "random": K of a sample's negatives drawn afresh every epoch; "fixed": its first K, every epoch.
NEIGHBOUR_PREFIX = "neighbour."  # the neighbour's image member: neighbour.png, neighbour.jpg, ...


@dataclass
class View:
    """What one image of a batch row contributes: preprocessed pixels, a caption and its negatives."""

    pixels: Any
    text: str
    negs: list[str]
    key: str


@dataclass
class Item:
    own: View
    neighbour: View | None = None


class SampleDecoder:
    def __init__(self, preprocess: Callable, tokenizer: Callable, options: StreamOptions):
        decoder = options.decoder
        self.transform = split_transform(preprocess)
        # JPEG members take the fast path when the transform is open_clip's (jpeg.py); else PIL.
        geometry = CropGeometry.of(preprocess) if decoder != "pil" else None
        if decoder != "pil" and (geometry is None or self.transform.normalize is None):
            log.warning(
                "decoder %r: the image transform is not open_clip's (%s); decoding with PIL", decoder, preprocess
            )
            geometry = None
        self.geometry = geometry
        self.decoder = decoder if geometry is not None else "pil"
        self.jpeg = FastJpeg(geometry) if geometry is not None else None
        self.tokenizer = tokenizer
        self.num_negatives = options.num_negatives
        self.negative_types = options.negative_types
        self.negative_sampling = options.negative_sampling
        self.neighbours = options.neighbours
        self.neighbour_kinds = frozenset(options.neighbour_kinds or ())
        self.captions = options.captions

    def _negatives(self, meta: dict, sample: dict, rng: random.Random) -> list[str]:
        if not self.num_negatives:
            return []
        negs = negative_texts(meta, sample, self.negative_types)
        if len(negs) > self.num_negatives:
            negs = (
                negs[: self.num_negatives]
                if self.negative_sampling == "fixed"
                else rng.sample(negs, self.num_negatives)
            )
        return negs

    @staticmethod
    @contextlib.contextmanager
    def _seeded(seed: int, in_worker: bool) -> Iterator[None]:
        # Augmentations draw from torch's global generator: seed it per image, so an image's
        # augmentation does not depend on what was decoded before it (or skipped on resume). A
        # worker process owns its generator; in the trainer's process it is saved and restored.
        with contextlib.nullcontext() if in_worker else torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed & 0x7FFF_FFFF_FFFF_FFFF)
            yield

    def _pixels(self, sample: dict, prefix: str, missing: str, seed: int, in_worker: bool) -> Any:
        """The image member's pixels as the transform makes them: through the JPEG path when it
        applies (the same crop, drawn from the same seed), else decoded by PIL and transformed."""
        ext, data = image_member(sample, prefix, missing)
        if self.jpeg is not None and ext in JPEG_EXTENSIONS:
            rng = random.Random(stable_seed(seed, "crop"))  # no torch generator to seed and restore
            try:
                if self.decoder == "device":
                    height, width, _, _ = self.jpeg.simplejpeg.decode_jpeg_header(data)
                    box = self.geometry.crop(height, width, rng)
                    return EncodedImage(torch.frombuffer(bytearray(data), dtype=torch.uint8), box)
                return self.jpeg(data, rng)
            except ValueError:
                pass  # not decodable by libjpeg-turbo (broken, or a colour space it lacks): PIL decides
        image = decode_image(sample, prefix, missing)
        with self._seeded(seed, in_worker):
            return self.transform.per_sample(image)

    def _images(self, pixels: list) -> Any:
        if self.decoder == "device":
            return DeviceImages(pixels, (self.geometry.out_h, self.geometry.out_w), self.transform.normalize)
        if self.decoder == "fast":
            return stack_uint8(pixels)  # normalised where the model is (jpeg.images_to)
        return self.transform.per_batch(pixels)

    def decode(self, sample: dict, seed: int, in_worker: bool) -> Item:
        """Raises SkipSample (with its reason) for anything that cannot be used."""
        rng = random.Random(seed)
        # The JSON member is parsed only when it is needed (negatives, neighbour, or no .txt caption).
        meta = metadata(sample) if self.num_negatives or self.neighbours or "txt" not in sample else {}
        text = caption(sample, meta, rng)
        negs = self._negatives(meta, sample, rng)
        neighbour = None
        if self.neighbours:  # checked before any image is decoded: a sample without one is skipped cheaply
            field = neighbour_field(sample, meta)
            if self.neighbour_kinds and field.get("twin") not in self.neighbour_kinds:
                raise SkipSample(OTHER_NEIGHBOUR_KIND, f"neighbour of kind {field.get('twin')!r}")
            n_negs = self._negatives(field, sample, rng)
            image_member(sample, NEIGHBOUR_PREFIX, MISSING_NEIGHBOUR)  # present, before the own image is decoded
        own = View(self._pixels(sample, "", MISSING_IMAGE, seed, in_worker), text, negs, sample["__key__"])
        if self.neighbours:
            n_seed = stable_seed(seed, "neighbour")
            n_pixels = self._pixels(sample, NEIGHBOUR_PREFIX, MISSING_NEIGHBOUR, n_seed, in_worker)
            neighbour = View(n_pixels, field["caption"].strip(), n_negs, str(field.get("key", "")))
        return Item(own, neighbour)

    def _negative_tokens(self, negs: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.num_negatives
        flat = [(n[j] if j < len(n) else "") for n in negs for j in range(k)]
        tokens = self.tokenizer(flat).view(len(negs), k, -1)
        return tokens, torch.tensor([[j < len(n) for j in range(k)] for n in negs])

    def collate(self, items: list[Item]) -> dict[str, Any]:
        own = [it.own for it in items]
        batch: dict[str, Any] = {
            "image": self._images([v.pixels for v in own]),
            "text": self.tokenizer([v.text for v in own]),
            "key": [v.key for v in own],
        }
        if self.decoder == "fast":
            batch["image_normalize"] = (tuple(self.transform.normalize.mean), tuple(self.transform.normalize.std))
        if self.captions:
            batch["caption"] = [v.text for v in own]
        if self.num_negatives:
            batch["neg_text"], batch["neg_mask"] = self._negative_tokens([v.negs for v in own])
        if self.neighbours:
            nbs = [it.neighbour for it in items]
            batch["neighbour_image"] = self._images([v.pixels for v in nbs])
            batch["neighbour_text"] = self.tokenizer([v.text for v in nbs])
            batch["neighbour_key"] = [v.key for v in nbs]
            if self.captions:
                batch["neighbour_caption"] = [v.text for v in nbs]
            if self.num_negatives:
                batch["neighbour_neg_text"], batch["neighbour_neg_mask"] = self._negative_tokens([v.negs for v in nbs])
        return batch

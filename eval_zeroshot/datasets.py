"""Evaluation datasets: CLIP_benchmark's local ``wds`` layout, an ImageFolder, or a caption table.

Each reader returns an :class:`EvalSet`: its task (``classification`` or ``retrieval``), its items
(PIL image loader + label, or + captions), class names and templates. Problems of layout (a missing
``classnames.txt``, an empty split, a missing shard or image file) are reported before any compute;
an image that does not decode, when it is reached. Each message names the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import webdataset as wds
from PIL import Image

from data_pipelines.images import ImageError, open_rgb
from data_pipelines.sources.ingest import TableError, read_table

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
WDS_IMAGE_KEYS = ("webp", "png", "jpg", "jpeg")


class DatasetError(ValueError):
    """A dataset that cannot be evaluated; the message names the file or folder."""


@dataclass
class Item:
    load: Callable[[], Image.Image]  # decodes on demand
    label: int | None = None  # classification
    captions: list[str] = field(default_factory=list)  # retrieval
    name: str = ""


@dataclass
class EvalSet:
    name: str
    task: str  # classification | retrieval
    items: list[Item]
    classnames: list[str] | None = None
    templates: list[str] | None = None
    split: str = ""

    def counts(self) -> dict:
        out = {"images": len(self.items)}
        if self.task == "classification":
            out["classes"] = len(self.classnames or [])
        else:
            out["captions"] = sum(len(i.captions) for i in self.items)
        return out


def _loader(source: bytes | Path, name: str | None = None) -> Callable[[], Image.Image]:
    """Decodes ``source`` when called; a broken image is a DatasetError naming it."""

    def load() -> Image.Image:
        try:
            return open_rgb(source, name)
        except ImageError as exn:
            raise DatasetError(str(exn)) from None

    return load


def _lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def read_wds(root: Path, split: str = "test", require_classnames: bool = True) -> EvalSet:
    """CLIP_benchmark's local layout: ``root/{split}/nshards.txt`` + ``0.tar..N-1.tar``,
    ``root/classnames.txt``, ``root/zeroshot_classification_templates.txt``, ``root/dataset_type.txt``.
    ``require_classnames=False``: a named dataset brings its class names when the root has none."""
    nshards_file = root / split / "nshards.txt"
    if not nshards_file.is_file():
        raise DatasetError(f"{nshards_file} is missing (CLIP_benchmark's wds layout needs it)")
    try:
        nshards = int(nshards_file.read_text().strip())
    except ValueError:
        raise DatasetError(f"{nshards_file} must hold an integer") from None
    kind_file = root / "dataset_type.txt"
    task = (
        "retrieval"
        if kind_file.is_file() and kind_file.read_text().strip().lower() == "retrieval"
        else ("classification")
    )
    if nshards < 1:
        raise DatasetError(f"{root / split} holds no samples ({nshards_file} says {nshards} shards)")
    urls = [str(root / split / f"{i}.tar") for i in range(nshards)]
    missing = [u for u in urls if not os.path.isfile(u)]
    if missing:
        raise DatasetError(f"{len(missing)} of {nshards} shards listed by {nshards_file} are missing ({missing[0]})")
    items = []
    for sample in wds.DataPipeline(wds.SimpleShardList(urls), wds.tarfile_to_samples()):
        key = sample["__key__"]
        image_key = next((k for k in WDS_IMAGE_KEYS if k in sample), None)
        if image_key is None:
            raise DatasetError(f"sample {key} in {sample['__url__']} has no image ({'/'.join(WDS_IMAGE_KEYS)})")
        where = f"{key}.{image_key} in {sample['__url__']}"
        if task == "classification":
            if "cls" not in sample:
                raise DatasetError(f"sample {key} in {sample['__url__']} has no .cls label")
            items.append(Item(_loader(sample[image_key], where), label=int(sample["cls"].decode()), name=key))
        else:
            captions = [c for c in sample.get("txt", b"").decode("utf-8").splitlines() if c.strip()]
            if not captions:
                raise DatasetError(f"sample {key} in {sample['__url__']} has no caption (.txt)")
            items.append(Item(_loader(sample[image_key], where), captions=captions, name=key))
    if not items:
        raise DatasetError(f"{root / split} holds no samples")
    classnames = templates = None
    if task == "classification":
        names_file = root / "classnames.txt"
        if not names_file.is_file() and require_classnames:
            raise DatasetError(f"{names_file} is missing: zero-shot classification needs the class names")
        classnames = _lines(names_file) if names_file.is_file() else []
        templates_file = root / "zeroshot_classification_templates.txt"
        templates = _lines(templates_file) if templates_file.is_file() else None
    return EvalSet(root.name, task, items, classnames, templates, split)


def read_image_folder(root: Path, classnames_file: Path | None = None) -> EvalSet:
    """One sub-folder per class (sorted, as torchvision's ImageFolder); names from a file if given,
    otherwise from the folder names (underscores as spaces)."""
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise DatasetError(f"{root} has no class folders")
    if classnames_file is not None:
        if not classnames_file.is_file():
            raise DatasetError(f"classnames file {classnames_file} does not exist")
        classnames = _lines(classnames_file)
        if len(classnames) != len(folders):
            raise DatasetError(f"{classnames_file} lists {len(classnames)} names for {len(folders)} class folders")
    else:
        classnames = [f.name.replace("_", " ") for f in folders]
    items = [
        Item(_loader(p), label=label, name=str(p.relative_to(root)))
        for label, folder in enumerate(folders)
        for p in sorted(folder.rglob("*"))
        if p.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not items:
        raise DatasetError(f"{root} holds no images ({'/'.join(IMAGE_SUFFIXES)})")
    return EvalSet(root.name, "classification", items, classnames, None)


def read_caption_table(path: Path) -> EvalSet:
    """A CSV/TSV/JSONL of (image, caption) for retrieval; rows of the same image join its captions."""
    try:
        rows = read_table(path)
    except TableError as exn:
        raise DatasetError(str(exn)) from None
    by_image: dict[str, list[str]] = {}
    for row in rows:
        if not Path(row.image).is_file():
            raise DatasetError(f"{path}:{row.line}: image {row.image} does not exist")
        by_image.setdefault(row.image, []).append(row.caption)
    items = [Item(_loader(Path(img)), captions=caps, name=img) for img, caps in by_image.items()]
    return EvalSet(path.stem, "retrieval", items)

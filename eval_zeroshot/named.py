"""Named datasets: ``imagenet:PATH`` and the others whose class names and templates open_clip and
CLIP_benchmark ship, read offline from the installed packages.

ImageNet's validation set in its usual layout (one folder per WordNet synset, ``n01440764/…``, as
torchvision's ImageFolder and open_clip's ``--imagenet-val`` read it) is classified among all 1,000
classes, whatever subset of folders is present: a synset's class index is its rank in the sorted list of
the 1,000 synsets (the standard order, shipped by timm, which open_clip depends on) and its name is
open_clip's ``IMAGENET_CLASSNAMES`` at that index. The OpenAI templates (80) are the default;
``simple`` gives the 7 short ones. ImageNet-A and -R use their 200-synset subsets in the same order.
CLIP_benchmark's own ``wds`` exports of these datasets read as any wds root, with these names and
templates filling in what the root does not carry.
"""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .datasets import IMAGE_SUFFIXES, DatasetError, EvalSet, Item, _loader, read_wds

SYNSET = re.compile(r"^n\d{8}$")
# CLIP_benchmark's names for the ImageNet family -> timm's synset list of its classes
IMAGENET_FAMILY = {
    "imagenet1k": "imagenet_synsets.txt",
    "imagenetv2": "imagenet_synsets.txt",
    "imagenet_sketch": "imagenet_synsets.txt",
    "imagenet-a": "imagenet_a_synsets.txt",
    "imagenet-r": "imagenet_r_synsets.txt",
}
ALIASES = {"imagenet": "imagenet1k", "imagenet-1k": "imagenet1k", "imagenet_1k": "imagenet1k"}
TEMPLATE_SETS = ("openai", "simple")


@dataclass(frozen=True)
class Named:
    name: str  # CLIP_benchmark's name, e.g. imagenet1k
    classnames: tuple[str, ...] | None  # None: the dataset's own classnames.txt names them
    templates: tuple[str, ...]
    synsets: tuple[str, ...] | None  # the ImageNet family: class index -> synset folder name


def _package_dir(package: str) -> Path | None:
    """Where an installed package lives, without importing it (CLIP_benchmark imports torch datasets)."""
    spec = importlib.util.find_spec(package)
    return Path(spec.origin).parent if spec is not None and spec.origin else None


@cache
def _clip_benchmark_metadata() -> tuple[dict, dict]:
    """CLIP_benchmark's English class names and templates, from the JSON files in its package."""
    root = _package_dir("clip_benchmark")
    if root is None:
        return {}, {}
    folder = root / "datasets"
    names = folder / "en_classnames.json"
    templates = folder / "en_zeroshot_classification_templates.json"
    return (
        json.loads(names.read_text()) if names.is_file() else {},
        json.loads(templates.read_text()) if templates.is_file() else {},
    )


@cache
def imagenet_synsets(filename: str = "imagenet_synsets.txt") -> tuple[str, ...]:
    """The synsets of an ImageNet class list, in class-index order (timm's ``data/_info`` files)."""
    root = _package_dir("timm")
    path = root / "data" / "_info" / filename if root else None
    if path is None or not path.is_file():
        raise DatasetError(f"ImageNet's synset list ({filename}) comes with timm, which open_clip installs: not found")
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())


def template_set(name: str) -> list[str]:
    """``openai`` (CLIP's 80 ImageNet prompts) or ``simple`` (its 7 short ones), as open_clip ships them."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    chosen = {"openai": OPENAI_IMAGENET_TEMPLATES, "simple": SIMPLE_IMAGENET_TEMPLATES}[name]
    return [t("{c}") for t in chosen]  # open_clip keeps them as functions of the class name


def known_names() -> list[str]:
    names, templates = _clip_benchmark_metadata()
    return sorted(set(IMAGENET_FAMILY) | set(ALIASES) | set(names) | set(templates) - {"dummy"})


def lookup(name: str) -> Named:
    """The metadata of a named dataset; an unknown name lists the known ones."""
    key = ALIASES.get(name.lower(), name.lower())
    names, templates = _clip_benchmark_metadata()
    if key in IMAGENET_FAMILY:
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        synsets = imagenet_synsets(IMAGENET_FAMILY[key])
        index = {s: i for i, s in enumerate(imagenet_synsets())}
        classnames = tuple(IMAGENET_CLASSNAMES[index[s]] for s in synsets)
        return Named(key, classnames, tuple(template_set("openai")), synsets)
    if key in names or key in templates:
        classnames = tuple(names[key]) if key in names else None
        chosen = templates.get(key) or template_set("openai")
        return Named(key, classnames, tuple(chosen), None)
    hint = "" if names else " (install clip-benchmark for its datasets' names and templates)"
    raise DatasetError(f"unknown dataset name {name!r}; known: {', '.join(known_names())}{hint}")


def parse_named(spec: str) -> tuple[str | None, str]:
    """``imagenet:PATH`` -> ("imagenet", "PATH"); anything else -> (None, spec). A prefix that is an
    existing file or folder is a path with a split (``data/x:heldout``, ``./imagenet:val``) unless what
    follows is an existing path itself (``imagenet:/data/imagenet/val``)."""
    head, sep, rest = spec.partition(":")
    if not sep or not rest or "/" in head:
        return None, spec
    if Path(head).exists() and ("/" not in rest or not Path(rest).exists()):
        return None, spec  # ./imagenet:val is that folder's split; imagenet:/data/val stays a name
    key = ALIASES.get(head.lower(), head.lower())
    names, templates = _clip_benchmark_metadata()
    if key != "dummy" and (key in IMAGENET_FAMILY or key in names or key in templates):
        return head, rest
    return None, spec


def read_synset_folders(root: Path, named: Named) -> EvalSet:
    """ImageNet's validation layout: one folder per synset; labels index all of ``named``'s classes."""
    assert named.synsets is not None
    index = {s: i for i, s in enumerate(named.synsets)}
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        raise DatasetError(
            f"{root} has no synset folders: {named.name}: expects the validation set in one folder per "
            "synset (n01440764/, n01443537/, …), as torchvision's ImageFolder reads it"
        )
    for folder in folders:
        if not SYNSET.match(folder.name):
            raise DatasetError(f"{folder} is not a WordNet synset folder (n + 8 digits, e.g. n01440764)")
        if folder.name not in index:
            raise DatasetError(f"{folder}: synset {folder.name} is not one of {named.name}'s {len(index)} classes")
    items = [
        Item(_loader(p), label=index[folder.name], name=str(p.relative_to(root)))
        for folder in folders
        for p in sorted(folder.rglob("*"))
        if p.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not items:
        raise DatasetError(f"{root} holds no images ({'/'.join(IMAGE_SUFFIXES)}) in its synset folders")
    return EvalSet(named.name, "classification", items, list(named.classnames or []), list(named.templates))


def read_named(name: str, path: str, split: str = "test") -> EvalSet:
    """A named dataset at ``path``: a CLIP_benchmark wds root, or (the ImageNet family) synset folders."""
    named = lookup(name)
    root = Path(path)
    if not root.is_dir():
        raise DatasetError(f"{name}:{path}: {path} does not exist or is not a folder")
    if (root / split / "nshards.txt").is_file():
        dataset = read_wds(root, split, require_classnames=named.classnames is None)
        if dataset.task == "classification":
            if not (root / "classnames.txt").is_file():
                if named.classnames is None:
                    raise DatasetError(
                        f"{root / 'classnames.txt'} is missing and CLIP_benchmark ships no class names for {named.name}"
                    )
                dataset.classnames = list(named.classnames)
            dataset.templates = dataset.templates or list(named.templates)
        dataset.name = named.name
        return dataset
    splits = sorted(p.parent.name for p in root.glob("*/nshards.txt"))
    if splits:  # a wds root, but not this split: say so rather than reading it as synset folders
        missing = root / split / "nshards.txt"
        raise DatasetError(f"{name}:{path}: no split {split!r} ({missing} is missing); it has {splits}")
    if named.synsets is None:
        raise DatasetError(
            f"{name}:{path}: not a CLIP_benchmark wds root ({root / split / 'nshards.txt'} is missing); "
            f"{named.name} is read from its wds export"
        )
    dataset = read_synset_folders(root, named)
    dataset.split = ""
    return dataset

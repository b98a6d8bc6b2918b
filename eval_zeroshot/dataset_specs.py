"""Which reader a dataset spec picks: a named dataset (``imagenet:PATH``, :mod:`.named`), a wds root,
an ImageFolder or a caption table (:mod:`.datasets`); templates by set name or file; ``PATH:split``.

It sits above both readers, so that neither imports the other."""

from __future__ import annotations

import json
from pathlib import Path

from .datasets import DatasetError, EvalSet, _lines, read_caption_table, read_image_folder, read_wds
from .named import TEMPLATE_SETS, known_names, parse_named, read_named, template_set


def read_dataset(spec: str, split: str = "test", classnames: str | None = None) -> EvalSet:
    """Pick the reader from what ``spec`` is: a named dataset (``imagenet:PATH``, see named.py), a wds
    root, an ImageFolder, or a caption table."""
    name, rest = parse_named(spec)
    if name is not None:
        if classnames:
            raise DatasetError(f"{spec}: a named dataset brings its class names; --classnames is for plain folders")
        return read_named(name, rest, split)
    path = Path(spec)
    if path.is_file():
        return read_caption_table(path)
    if not path.is_dir():
        head, sep, _ = spec.partition(":")
        if sep and head and "/" not in head and not Path(head).exists():  # NAME:PATH with an unknown NAME
            known = ", ".join(known_names())
            raise DatasetError(f"dataset {spec} does not exist, and {head!r} is not a dataset name ({known})")
        raise DatasetError(f"dataset {spec} does not exist")
    if (path / split / "nshards.txt").is_file() or (path / "classnames.txt").is_file():
        return read_wds(path, split)
    return read_image_folder(path, Path(classnames) if classnames else None)


def read_templates(path: str) -> list[str]:
    """``openai`` / ``simple`` (open_clip's ImageNet templates), or a templates file: one per line with
    ``{c}``, or a JSON list."""
    if path in TEMPLATE_SETS and not Path(path).is_file():
        return template_set(path)
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"templates file {p} does not exist (or name a set: openai, simple)")
    text = p.read_text(encoding="utf-8")
    templates = json.loads(text) if text.lstrip().startswith("[") else _lines(p)
    bad = [t for t in templates if "{c}" not in t]
    if bad or not templates:
        raise DatasetError(f"{p}: every template needs a {{c}} placeholder (e.g. 'a photo of a {{c}}.'): {bad[:2]}")
    return templates


def split_spec(spec: str) -> tuple[str, str]:
    """``PATH:split`` -> (PATH, split); a plain PATH -> (PATH, "test"). A named dataset keeps its name:
    ``imagenet:PATH:val`` -> ("imagenet:PATH", "val"), ``imagenet:PATH`` -> ("imagenet:PATH", "test")."""
    name, rest = parse_named(spec)
    prefix = f"{name}:" if name is not None else ""
    head, sep, tail = rest.rpartition(":")
    if sep and head and tail and "/" not in tail:
        return prefix + head, tail
    return spec, "test"

"""Atomic writes: a reader (or a crash) never sees half a file or half a folder.

A file is written under a temporary name beside it and renamed into place; a folder is built beside
its final name (``NAME.partial``) and renamed into place when complete. ``os.replace`` is atomic
within one file system, which the sibling names guarantee.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def temporary_name(path: str | os.PathLike) -> Path:
    """The sibling name a file is written under before it is renamed to ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_file(p) as tmp: write(tmp)``: ``p`` appears, complete, only if the block succeeds."""
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` through a temporary name so a reader never sees half a file."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: object, *, indent: int = 2, sort_keys: bool = False) -> None:
    """Write ``obj`` as JSON (ending with a newline) through a temporary name."""
    write_text_atomic(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def staging_path(final: str | os.PathLike) -> Path:
    """Where ``final`` is built: ``final.partial`` beside it."""
    final = Path(final)
    return final.with_name(final.name + ".partial")


def staging_dir(final: str | os.PathLike) -> Path:
    """The folder to build ``final`` in (``final.partial``): any leftover of a crashed run removed, created."""
    staging = staging_path(final)
    _remove(staging)
    staging.mkdir(parents=True)
    return staging


def publish_dir(staging: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Put the complete folder ``staging`` in place of ``final`` (removed first if it exists)."""
    final = Path(final)
    _remove(final)
    os.replace(staging, final)
    return final


@contextlib.contextmanager
def staged(final: str | os.PathLike) -> Iterator[Path]:
    """Build the folder ``final`` in its staging folder (yielded) and put it in place when the block
    ends; if the block raises, the staging folder is removed instead (nothing half-built is left beside
    ``final``) and ``final`` is untouched."""
    staging = staging_dir(final)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    publish_dir(staging, final)

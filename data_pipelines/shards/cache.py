"""Local, seekable copies of shards that cannot be read by offset where they are.

The loader reads samples by offset (:mod:`.index`). A local uncompressed tar is read in place; any other
shard (``pipe:``, ``http(s)://``, fsspec URLs, ``.tar.gz``) is first copied, once per machine, into
``cache_dir``: its samples are read with :func:`~.reader.iter_shard` (so transient failures are retried
and a cut shard keeps what it holds), written to an uncompressed tar with its index, and renamed into
place. Processes on one machine share the copy: the first to need it writes it under a file lock, the
others wait for it. What it costs: the shard's bytes once per machine, and their (uncompressed) size
on the cache's disk. Nothing is evicted; point ``cache_dir`` at a disk with room for the remote data.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

import webdataset as wds

from vlp.common.atomic import temporary_name

from .index import ShardIndex, build_index, load_index, write_index
from .reader import SkipCounter, iter_shard
from .specs import is_local_url, local_path, shard_name


def needs_copy(url: str) -> bool:
    """Whether ``url`` must be copied before it can be read by offset."""
    return not is_local_url(url) or not str(local_path(url)).endswith(".tar")


def cached_name(url: str) -> str:
    digest = hashlib.sha1(url.encode()).hexdigest()[:16]
    base = shard_name(url)
    for suffix in (".tar.gz", ".tgz", ".tar"):
        base = base.removesuffix(suffix)
    return f"{base}.{digest}.tar"


def _write_copy(url: str, dest: Path, counter: SkipCounter, retries: int, backoff_s: float) -> None:
    tmp = temporary_name(dest)
    try:
        with open(tmp, "wb") as stream:
            writer = wds.TarWriter(stream, encoder=False, mtime=0, user="vlp", group="vlp", mode=0o644)
            for sample in iter_shard(url, counter, retries=retries, backoff_s=backoff_s):
                writer.write({k: v for k, v in sample.items() if k == "__key__" or not k.startswith("__")})
            writer.close()
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    write_index(dest, build_index(dest))


def local_copy(
    url: str, cache_dir: str | os.PathLike, counter: SkipCounter, *, retries: int = 0, backoff_s: float = 1.0
) -> tuple[Path, ShardIndex]:
    """The path of a seekable local copy of ``url`` (made now unless the machine has one) and its index.
    Read failures count in ``counter`` as :func:`~.reader.iter_shard` counts them; a shard that cannot
    be read at all becomes an empty copy (it is not tried again by this machine)."""
    folder = Path(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / cached_name(url)
    with open(folder / (dest.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one writer per machine; the others wait, then read its copy
        if not dest.is_file():
            _write_copy(url, dest, counter, retries, backoff_s)
    return dest, load_index(dest)

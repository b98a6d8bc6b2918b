"""Writing webdataset shards: reproducible bytes, atomic files, and a ``sizes.json`` index."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import webdataset as wds

from vlp.common.atomic import temporary_name, write_json_atomic

from .index import build_index, write_index


class ShardSink:
    """Split samples into tar shards of ``shard_size`` samples each.

    Each shard is written under a temporary name and renamed when complete, so a crash leaves only
    whole shards. Tar headers carry a fixed mtime and owner, so the same samples give the same bytes.
    Each shard gets its sample index (``<shard>.idx``, :mod:`.index`) beside it.
    ``close()`` writes ``sizes.json`` (shard file name -> sample count, the open_clip convention) and
    returns it.
    """

    def __init__(self, out_dir: str | os.PathLike, pattern: str = "shard-{:06d}.tar", shard_size: int = 1000):
        if shard_size < 1:
            raise ValueError(f"shard size must be at least 1, got {shard_size}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.pattern = pattern
        self.shard_size = shard_size
        self.sizes: dict[str, int] = {}
        self._writer: wds.TarWriter | None = None
        self._stream = None
        self._name = ""
        self._count = 0

    def _open(self) -> None:
        self._name = self.pattern.format(len(self.sizes))
        self._stream = open(temporary_name(self.out_dir / self._name), "wb")
        # An integer mtime: a float one makes tarfile add a 1 KiB PAX header to every member.
        self._writer = wds.TarWriter(self._stream, encoder=False, mtime=0, user="vlp", group="vlp", mode=0o644)
        self._count = 0

    def _finish(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._stream.close()
        os.replace(temporary_name(self.out_dir / self._name), self.out_dir / self._name)
        # The sample index (data_pipelines.shards.index): readers seek to any sample from it.
        write_index(self.out_dir / self._name, build_index(self.out_dir / self._name))
        self.sizes[self._name] = self._count
        self._writer = None

    def write(self, key: str, members: Mapping[str, bytes]) -> None:
        if self._writer is None:
            self._open()
        self._writer.write({"__key__": key, **members})
        self._count += 1
        if self._count >= self.shard_size:
            self._finish()

    def close(self, sizes_file: str | None = "sizes.json") -> dict[str, int]:
        self._finish()
        if sizes_file:
            write_json_atomic(self.out_dir / sizes_file, self.sizes, sort_keys=True)
        return self.sizes

    def __enter__(self) -> ShardSink:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._writer is not None:  # leave no half-written shard behind
            self._writer.close()
            self._stream.close()
            os.remove(temporary_name(self.out_dir / self._name))

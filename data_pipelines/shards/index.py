"""A shard's sample index: where each sample's bytes start in the tar, so a reader can seek to any
sample instead of reading through the ones before it.

The index of ``shard-000000.tar`` is ``shard-000000.tar.idx`` beside it, JSON::

    {"format": "vlp-shard-index/1", "shard_bytes": 12345, "keys": [...], "offsets": [...]}

Sample ``i`` (the ``i``-th group of consecutive members with one key, as webdataset groups them) is the
bytes ``offsets[i]:offsets[i + 1]`` of the shard: its members' headers and data. ``vlp-data`` writes the
index with every shard it writes; for any other uncompressed local tar it is built once, by reading the
member headers only (seeking over the data), and cached beside the shard, or under ``cache_dir`` when
the shard's folder is read-only. An index whose ``shard_bytes`` is not the shard's size is stale and
is built again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from webdataset.tariterators import base_plus_ext, group_by_keys, tar_file_iterator

from vlp.common.atomic import write_json_atomic

FORMAT = "vlp-shard-index/1"
INDEX_SUFFIX = ".idx"
BLOCK = 512  # tar's block: every member's header and data start on one


class ShardIndexError(ValueError):
    """A shard that cannot be indexed (not a tar, cut short inside a member)."""


@dataclass(frozen=True)
class ShardIndex:
    keys: tuple[str, ...]
    offsets: tuple[int, ...]  # len(keys) + 1: sample i is offsets[i]:offsets[i + 1]
    shard_bytes: int
    complete: bool = True  # False: the tar is cut short; the index holds the whole samples before the cut

    def __len__(self) -> int:
        return len(self.keys)

    def span(self, i: int) -> tuple[int, int]:
        """(start, length) of sample ``i``'s bytes."""
        return self.offsets[i], self.offsets[i + 1] - self.offsets[i]

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "shard_bytes": self.shard_bytes,
            "complete": self.complete,
            "keys": list(self.keys),
            "offsets": list(self.offsets),
        }

    @classmethod
    def from_json(cls, obj: dict) -> ShardIndex:
        if obj.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} index (format {obj.get('format')!r})")
        keys, offsets = tuple(obj["keys"]), tuple(int(o) for o in obj["offsets"])
        if len(offsets) != len(keys) + 1 or any(b < a for a, b in zip(offsets, offsets[1:], strict=False)):
            raise ValueError("offsets do not bound the samples")
        return cls(keys, offsets, int(obj["shard_bytes"]), bool(obj.get("complete", True)))


def _padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def index_members(members: list[tuple[str, int, int]], shard_bytes: int, complete: bool = True) -> ShardIndex:
    """The index of a tar from its members as (name, header offset, end of the padded data), in order,
    grouped into samples as webdataset groups them (a new sample when the key changes or a member's
    extension repeats); members without a key (no extension, ``__meta__`` files) join the span of the
    sample before them, where the reader drops them again."""
    keys: list[str] = []
    offsets: list[int] = []
    seen: set[str] = set()
    end = 0
    for name, start, stop in members:
        prefix, suffix = base_plus_ext(name)
        if prefix is not None and (not keys or prefix != keys[-1] or suffix.lower() in seen):
            keys.append(prefix)
            offsets.append(start)
            seen = set()
        if prefix is not None:
            seen.add(suffix.lower())
        end = stop
    return ShardIndex(tuple(keys), tuple([*offsets, end]) if keys else (0,), shard_bytes, complete)


def build_index(path: str | os.PathLike) -> ShardIndex:
    """Index an uncompressed local tar by reading its member headers (the data is seeked over).

    A tar cut short inside a member is indexed up to the last whole sample before the cut
    (``complete=False``); bytes that are not a tar raise :class:`ShardIndexError`."""
    size = os.path.getsize(path)
    members: list[tuple[str, int, int]] = []
    complete = True
    try:
        with tarfile.open(path, mode="r:") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                stop = info.offset_data + _padded(info.size)
                if stop > size:
                    complete = False
                    break
                members.append((info.name, info.offset, stop))
    except tarfile.ReadError as exn:
        if not members:
            raise ShardIndexError(f"{path} is not a readable tar: {exn}") from None
        complete = False
    except (tarfile.TarError, EOFError) as exn:
        if not members:
            raise ShardIndexError(f"{path} is not a readable tar: {exn}") from None
        complete = False
    if complete and members:
        # tarfile ends quietly when the bytes stop at a member boundary: a whole tar has its end
        # marker (zero blocks) after the last member.
        with open(path, "rb") as f:
            f.seek(members[-1][2])
            marker = f.read(BLOCK)
        complete = len(marker) == BLOCK and not marker.strip(b"\0")
    index = index_members(members, size, complete)
    if not complete and len(index):
        # The last sample may have lost members after the cut: keep only the samples before it.
        index = ShardIndex(index.keys[:-1], index.offsets[:-1], size, False)
    return index


def index_path(shard: str | os.PathLike) -> Path:
    return Path(str(shard) + INDEX_SUFFIX)


def _cached_path(shard: Path, cache_dir: str | os.PathLike) -> Path:
    digest = hashlib.sha1(str(shard.resolve()).encode()).hexdigest()[:16]
    return Path(cache_dir) / "index" / f"{shard.name}.{digest}{INDEX_SUFFIX}"


def _read(path: Path, shard_bytes: int) -> ShardIndex | None:
    try:
        index = ShardIndex.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return index if index.shard_bytes == shard_bytes else None  # stale: the shard was rewritten


def write_index(shard: str | os.PathLike, index: ShardIndex) -> Path:
    path = index_path(shard)
    write_json_atomic(path, index.to_json(), indent=0)
    return path


def load_index(shard: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> ShardIndex:
    """The index of a local uncompressed tar: read beside it (or from ``cache_dir``), else built and
    cached (beside it when its folder is writable, else under ``cache_dir``)."""
    shard = Path(shard)
    size = shard.stat().st_size
    candidates = [index_path(shard)] + ([_cached_path(shard, cache_dir)] if cache_dir else [])
    for path in candidates:
        if path.is_file():
            found = _read(path, size)
            if found is not None:
                return found
    index = build_index(shard)
    for path in candidates:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, index.to_json(), indent=0)
            break
        except OSError:
            continue  # a read-only folder: try the cache, else use it uncached
    return index


def read_sample(fd: int, index: ShardIndex, i: int, url: str) -> tuple[dict | None, int]:
    """Sample ``i`` of a shard open as ``fd``, parsed as webdataset parses it (``__key__``, ``__url__``
    and one entry of bytes per member), and the bytes read. None when its bytes do not parse as one
    sample with the indexed key."""
    start, length = index.span(i)
    data = os.pread(fd, length, start)
    try:
        files = ({**f, "__url__": url} for f in tar_file_iterator(io.BytesIO(data)))
        samples = list(group_by_keys(files))
    except (tarfile.TarError, EOFError, ValueError):
        return None, len(data)
    if len(samples) != 1 or samples[0]["__key__"] != index.keys[i]:
        return None, len(data)
    return samples[0], len(data)

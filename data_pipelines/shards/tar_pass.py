"""One pass over a shard's tar: its samples as dicts of raw bytes, then how the pass ended (read to the
tar end marker, cut short, unreadable, or reading differently than an earlier pass) and whether the
failure came from the transport or from the bytes, which is what :func:`~.reader.iter_shard` needs to
decide whether to try again.
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Iterator

from webdataset.tariterators import group_by_keys, tar_file_iterator

from .skips import TRUNCATED_SHARD, UNREADABLE_SHARD
from .specs import open_url


class _TailTracker:
    """Passes reads through and remembers the stream's first and last bytes.

    Python's tarfile ends an archive silently when the stream stops at (or inside) a member header,
    so a shard cut there would look complete. Every tar ends with zero blocks; an uncompressed
    stream whose last 512 bytes are not all zero was cut short.
    """

    def __init__(self, raw, url: str):
        self.raw = raw
        self.url = url
        self.head = b""
        self.tail = b""

    def __str__(self) -> str:  # webdataset appends the stream to its error messages
        return self.url

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if len(self.head) < 6:
            self.head = (self.head + data)[:6]
        self.tail = (self.tail + data)[-512:]
        return data

    def drain(self) -> None:
        while self.read(1 << 16):
            pass

    def was_cut(self) -> bool:
        compressed = self.head.startswith((b"\x1f\x8b", b"BZh", b"\xfd7zXZ"))  # decompressors detect cuts
        return not compressed and self.tail.count(0) != len(self.tail)

    def close(self) -> None:
        self.raw.close()


# Errors in the bytes of a shard (not a tar, cut short, clashing names), as opposed to the transport's
# (opening fails, an OSError while reading, a `pipe:` command's non-zero exit, an fsspec/network error).
_FORMAT_ERRORS = (tarfile.TarError, EOFError, ValueError, zlib.error)


class TarPass:
    """One pass over a shard: opens it, passes over the first ``skip`` samples (delivered by an earlier
    pass; the ``skip``-th must have key ``last_key``) and yields the rest; then says how it ended."""

    def __init__(self, url: str, skip: int, last_key: str | None):
        self.url, self.skip, self.last_key = url, skip, last_key
        self.members = 0  # tar members parsed
        self.seen = 0  # samples parsed, the skipped ones included
        self.error: str | None = None  # None: read to the tar end marker
        self.reason = UNREADABLE_SHARD  # what the failure alone would count as
        self.transport = False  # the failure came from opening or reading, not from the bytes
        self.cut = False  # ended without the end marker: the last sample may lack members
        self.changed = False  # the shard reads differently than in the earlier pass

    def _fail(self, error, transport: bool) -> None:
        self.error = str(error)
        self.transport = transport
        self.reason = UNREADABLE_SHARD if self.members == 0 else TRUNCATED_SHARD

    def samples(self) -> Iterator[dict]:
        try:
            stream = _TailTracker(open_url(self.url), self.url)
        except Exception as exn:  # noqa: BLE001 - any failure to open is the same fact for the user
            self._fail(exn, transport=True)
            return

        def tagged(files):
            for f in files:
                self.members += 1
                yield {**f, "__url__": self.url}

        finished = False
        try:
            samples = group_by_keys(tagged(tar_file_iterator(stream)))
            while True:
                try:
                    sample = next(samples)
                except StopIteration:
                    break
                except Exception as exn:  # noqa: BLE001 - fsspec backends raise their own errors
                    self._fail(exn, transport=not isinstance(exn, _FORMAT_ERRORS))
                    break
                self.seen += 1
                if self.seen < self.skip:
                    continue
                if self.seen == self.skip:
                    if sample["__key__"] != self.last_key:
                        self._changed(f"sample {self.seen} is {sample['__key__']}, was {self.last_key}")
                        break
                    continue
                yield sample
            if self.error is None and not self.changed:  # the tar ended (end marker or end of stream)
                try:
                    stream.drain()
                    late = None
                except Exception as exn:  # noqa: BLE001
                    late = exn
                # The tail is the end marker's when tarfile stopped there, whatever draining then met.
                if stream.was_cut():
                    self._fail("ends without the tar end marker", transport=late is not None)
                    self.reason, self.cut = TRUNCATED_SHARD, True
                    if late is not None:
                        self.error += f"; {late}"
                elif late is not None:
                    self._fail(late, transport=not isinstance(late, _FORMAT_ERRORS))
                elif self.seen < self.skip:
                    self._changed(f"it holds {self.seen} samples")
            finished = True
        finally:
            try:
                stream.close()  # a `pipe:` command reports a failing exit status here
            except Exception as exn:  # noqa: BLE001
                # After a complete tar a late exit status is ignored, as is any on an early stop.
                if finished and self.error is None and self.members == 0:
                    self._fail(exn, transport=True)
                elif finished and self.error is not None and not self.transport:
                    self.error, self.transport = f"{self.error}; {exn}", True  # the command failed: transient

    def _changed(self, detail: str) -> None:
        self._fail(f"reads differently than before ({detail})", transport=False)
        self.changed = True
        self.reason = TRUNCATED_SHARD

"""One benchmark file fetched and checked: downloaded through ``DEST.part`` (resumed by an HTTP Range
request, or a seek for ``file://``), checked against its source's size and sha256 (or parsed, for JSON
without a checksum), renamed into place, and a zip unpacked into its folder. A failure is
:class:`FetchFailed` (the ``.part`` kept for the next run) or :class:`Damaged` (the bad bytes deleted).
Standard library only (urllib).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from http.client import HTTPException
from pathlib import Path
from urllib.error import HTTPError, URLError

from .download_sources import Source

TIMEOUT_S = 60
CHUNK = 1 << 20
PROGRESS_MIN_BYTES = 8 << 20  # below this a file arrives before a progress line would help
USER_AGENT = "vlp-eval (benchmark download; python urllib)"


class FetchFailed(Exception):
    """One file could not be fetched (network, not found, an HTML page instead of the file); ``host_down``
    when the server could not be reached at all."""

    def __init__(self, message: str, host_down: bool = False):
        super().__init__(message)
        self.host_down = host_down


class Damaged(Exception):
    """One file arrived but failed its checks; its partial download was deleted."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check(path: Path, src: Source) -> str | None:
    """Why ``path`` is not a good copy of ``src`` (naming the expected and actual values), or None."""
    size = path.stat().st_size
    if src.size is not None and size != src.size:
        return f"{path} has {size} bytes, expected {src.size}"
    if src.sha256:
        actual = sha256_of(path)
        if actual != src.sha256:
            return f"{path}: sha256 mismatch: expected {src.sha256}, got {actual}"
    elif src.dest.endswith(".json"):
        # Without a checksum, parsing catches the usual failures: a truncated file, or the HTML page a
        # file host serves instead of the file.
        try:
            json.loads(path.read_bytes())
        except ValueError as exn:
            return f"{path} is not valid JSON ({exn})"
    return None


class _Progress:
    """bytes/total on stderr, at most once a second, for files big enough to wait for."""

    def __init__(self, label: str, total: int | None, log: Callable[[str], None]):
        self.label, self.total, self.log = label, total, log
        self.last = 0.0

    def __call__(self, done: int, final: bool = False) -> None:
        if (self.total or done) < PROGRESS_MIN_BYTES:
            return
        now = time.monotonic()
        if final or now - self.last >= 1.0:
            self.last = now
            total = f"{self.total / 1e6:.1f}" if self.total else "?"
            self.log(f"  {self.label}: {done / 1e6:.1f}/{total} MB")


def _open(url: str, offset: int) -> tuple:
    """(stream, start, total, content type): the resource from byte ``offset`` where the server allows,
    else from ``start`` = 0; ``total`` the resource's full length when known."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        path = Path(urllib.request.url2pathname(parsed.path))
        try:
            f = open(path, "rb")  # the caller closes it
        except OSError as exn:
            raise FetchFailed(f"{url}: {exn.strerror or exn}") from None
        total = os.fstat(f.fileno()).st_size
        start = offset if offset <= total else 0
        f.seek(start)
        return f, start, total, None
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except HTTPError as exn:
        exn.close()
        if exn.code == 416 and offset:  # the .part reaches the end: whole ("bytes */SIZE") or too long
            whole = (exn.headers.get("Content-Range") or "").rpartition("/")[2]
            if whole == str(offset):
                return io.BytesIO(b""), offset, offset, None
            return _open(url, 0)
        raise FetchFailed(f"{url}: HTTP {exn.code} {exn.reason}") from None
    start = 0
    total = int(resp.headers["Content-Length"]) if resp.headers.get("Content-Length") else None
    if offset and resp.status == 206:
        content_range = resp.headers.get("Content-Range", "")  # bytes START-END/TOTAL
        span, _, whole = content_range.removeprefix("bytes ").partition("/")
        try:
            start = int(span.partition("-")[0])
            total = None if whole in ("", "*") else int(whole)
        except ValueError:
            resp.close()
            raise FetchFailed(f"{url}: unreadable Content-Range {content_range!r}") from None
        if start != offset:
            resp.close()
            return _open(url, 0)
    return resp, start, total, resp.headers.get("Content-Type")


def download(url: str, dest: Path, src: Source, log: Callable[[str], None]) -> None:
    """Fetch ``url`` to ``dest`` through ``dest.part`` (resumed when present), check it, rename it into place.

    Raises FetchFailed (the .part kept for the next run) or Damaged (the .part deleted)."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    if src.size is not None and offset > src.size:  # longer than the file: cannot be a prefix of it
        part.unlink()
        offset = 0
    if src.size is None or offset < src.size:
        try:
            stream, start, total, content_type = _open(url, offset)
        except (URLError, HTTPException, OSError) as exn:  # DNS, refused, timeout: the host is out of reach
            raise FetchFailed(f"{url}: {getattr(exn, 'reason', None) or exn}", host_down=True) from None
        if content_type and content_type.startswith("text/html") and not dest.name.endswith(".html"):
            stream.close()
            raise FetchFailed(
                f"{url}: the server sent an HTML page instead of the file (a Google Drive quota or sign-in page?)"
            )
        if start:
            log(f"resuming {dest} at {start} bytes from {url}")
        else:
            log(f"fetching {dest} from {url}")
        progress = _Progress(dest.name, total, log)
        done = start
        try:
            with stream, open(part, "ab" if start else "wb") as out:
                while chunk := stream.read(CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    progress(done)
                out.flush()
                os.fsync(out.fileno())
        except (URLError, HTTPException, OSError) as exn:
            raise FetchFailed(f"{url}: interrupted after {done} bytes ({exn}); run again to resume") from None
        progress(done, final=True)
        if total is not None and done != total:
            raise FetchFailed(f"{url}: the connection ended after {done} of {total} bytes; run again to resume")
    problem = check(part, src)
    if problem:
        part.unlink()
        raise Damaged(f"{problem} (fetched from {url}; the partial download was deleted)")
    os.replace(part, dest)


def unpack(archive: Path, folder: Path, log: Callable[[str], None]) -> None:
    """Unpack the zip ``archive`` so that ``folder`` appears complete (built beside it, then renamed), then
    delete the archive: the folder is what later runs reuse, and keeping both would double the disk used."""
    staging = folder.with_name(f".{folder.name}.unpacking")
    shutil.rmtree(staging, ignore_errors=True)
    log(f"unpacking {archive} into {folder}")
    try:
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
            z.extractall(staging)  # zipfile drops absolute paths and '..' from member names
    except (zipfile.BadZipFile, OSError, EOFError) as exn:
        shutil.rmtree(staging, ignore_errors=True)
        archive.unlink(missing_ok=True)
        raise Damaged(f"{archive} is not a whole zip file ({exn}); it was deleted") from None
    inner = staging / folder.name
    if inner.is_dir():  # the usual layout: the archive holds FOLDER/...
        os.replace(inner, folder)
        shutil.rmtree(staging)
    elif all("/" not in n.rstrip("/") for n in names):  # the files themselves, at the top
        os.replace(staging, folder)
    else:
        shutil.rmtree(staging)
        tops = sorted({n.split("/")[0] for n in names})[:5]
        raise Damaged(f"{archive} does not hold a folder {folder.name}/ (it holds {', '.join(tops)}, ...)")
    archive.unlink()

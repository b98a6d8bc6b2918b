"""Fetch the compositional benchmarks' official files: ``vlp-eval compositional --download DIR``.

:data:`BENCHMARKS` lists, per benchmark, each file's official location, where it lands under ``DIR`` and
what it is checked against. Only SugarCrepe's seven JSON files have a known size and sha256 (computed from
the official files, identical to the blobs at the pinned commit); ARO's annotation files (Google Drive),
the Karpathy test files (BLIP's bucket) and the image archives publish no checksum, so they are checked
only as far as they can be without one: a JSON file must parse, a download must have the length the
server announced, an archive must pass its own CRCs while being unpacked. No checksum here is invented.

A file is downloaded to ``DEST.part``; a later run resumes it (an HTTP Range request, or a seek for
``file://``), and only a file that passes its checks is renamed to ``DEST``. A file already at ``DEST``
that passes its checks is reused without any request. A checksum mismatch deletes the ``.part`` (its
bytes are wrong, so resuming it would never succeed); a network failure keeps it for the next run. All
files are tried before one :class:`DownloadError` lists what is missing and where to put it by hand.

Mirror: ``--mirror URL`` or ``$VLP_BENCHMARK_MIRROR`` replaces every official location by
``URL/<path under DIR>`` (e.g. ``URL/sugarcrepe/add_att.json``), so a copy of a download folder is a
mirror; a plain folder path is taken as ``file://``. Standard library only (urllib).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from urllib.error import HTTPError, URLError

MIRROR_ENV = "VLP_BENCHMARK_MIRROR"
TIMEOUT_S = 60
CHUNK = 1 << 20
PROGRESS_MIN_BYTES = 8 << 20  # below this a file arrives before a progress line would help
USER_AGENT = "vlp-eval (benchmark download; python urllib)"

# SugarCrepe's files at the commit that last changed data/ (same bytes as main as of 2024): a pinned
# URL keeps the checksums below valid if main ever changes.
SUGARCREPE_RAW = "https://raw.githubusercontent.com/RAIVNLab/sugar-crepe/546eb51ecd55859f1d1888636bb9399a8df4cd92/data"
BLIP_BUCKET = "https://storage.googleapis.com/sfr-vision-language-research/datasets"
# ARO's code fetches these with gdown by Google Drive id; this endpoint serves the same id without the
# "cannot scan for viruses" page that large files otherwise get.
GDRIVE = "https://drive.usercontent.google.com/download?export=download&confirm=t&id="


@dataclass(frozen=True)
class Source:
    """One file of a benchmark."""

    dest: str  # path under DIR, and under a mirror
    url: str | None  # official location; None when there is no public download (sign-up)
    sha256: str | None = None  # None: not known (no official copy was at hand to compute it)
    size: int | None = None  # bytes; None: not known
    unpack: str | None = None  # a zip: the folder under DIR that unpacking it yields (then the zip is deleted)
    about: str = ""  # how big, or how to get it by hand

    @property
    def target(self) -> str:
        """What must exist under DIR once this source is in place (the unpacked folder for an archive)."""
        return self.unpack or self.dest

    def checks(self) -> str:
        if self.sha256:
            return f"sha256 {self.sha256}, {self.size} bytes"
        if self.unpack:
            return "no published checksum; the zip's own CRCs are checked"
        if self.dest.endswith(".json"):
            return "no published checksum; checked to be whole JSON"
        return "no published checksum"


@dataclass(frozen=True)
class Benchmark:
    files: tuple[Source, ...]
    data: str  # the --data to use, under DIR
    images: str  # the --images to use, under DIR
    image_source: Source  # fetched with --with-images (or placed by hand)


def _sugarcrepe(name: str, size: int, sha256: str) -> Source:
    return Source(f"sugarcrepe/{name}.json", f"{SUGARCREPE_RAW}/{name}.json", sha256, size)


COCO_VAL2017 = Source(
    "coco/val2017.zip", "http://images.cocodataset.org/zips/val2017.zip", unpack="coco/val2017", about="about 0.8 GB"
)
COCO_VAL2014 = Source(  # the Karpathy test images are all from val2014 (ARO also fetches test2014, unused)
    "coco/val2014.zip", "http://images.cocodataset.org/zips/val2014.zip", unpack="coco/val2014", about="about 6 GB"
)
ARO_IMAGES = Source(
    "aro/vgr_vga_images.zip", GDRIVE + "1qaPlrwhGNMrR3a11iopZUT_GPP_LrgP9", unpack="aro/images", about="about 1 GB"
)
FLICKR_IMAGES = Source(
    "flickr30k/flickr30k-images",
    None,
    about="no public download: sign up at https://forms.illinois.edu/sec/229675 and unpack the images there",
)

BENCHMARKS: dict[str, Benchmark] = {
    "sugarcrepe": Benchmark(
        files=(
            _sugarcrepe("add_att", 158863, "012d88d729693d193760e6f3393b06a1cf874380a9db0062e937201199fe044d"),
            _sugarcrepe("add_obj", 484593, "1b9d76b93139a937b8dc1ada92a4f05ecc821bb3c291d752428bafadd4bb0682"),
            _sugarcrepe("replace_att", 176843, "9fe55fd4c0a9ad1f85d486d9f6d0215b41f867eb025026e7f7b5ce44352545ee"),
            _sugarcrepe("replace_obj", 361126, "9d299600639947e9d15281a9ded1382b376cf4ea088a8d08a1314bfe76e81898"),
            _sugarcrepe("replace_rel", 312629, "356bcc2fc4c6aed3f4d9fd50acc58489bb1fe70c28791f9368d4cbf9ea39cdc9"),
            _sugarcrepe("swap_att", 154665, "7a7ce04e5c4c80412b48c6f0c1347fb1a2f5d54c0be6aa429b64d390e442f8d0"),
            _sugarcrepe("swap_obj", 57569, "073cdb8e253d053614e80710834d9773b09dbc1dd0a412f6f9492262caa1dcad"),
        ),
        data="sugarcrepe",
        images="coco/val2017",
        image_source=COCO_VAL2017,
    ),
    "aro-vgr": Benchmark(
        files=(Source("aro/visual_genome_relation.json", GDRIVE + "1kX2iCHEv0CADL8dSO1nMdW-V0NqIAiP3"),),
        data="aro/visual_genome_relation.json",
        images="aro/images",
        image_source=ARO_IMAGES,
    ),
    "aro-vga": Benchmark(
        files=(Source("aro/visual_genome_attribution.json", GDRIVE + "13tWvOrNOLHxl3Rm9cR3geAdHx2qR3-Tw"),),
        data="aro/visual_genome_attribution.json",
        images="aro/images",
        image_source=ARO_IMAGES,
    ),
    "aro-coco-order": Benchmark(
        files=(Source("coco/coco_karpathy_test.json", f"{BLIP_BUCKET}/coco_karpathy_test.json"),),
        data="coco/coco_karpathy_test.json",
        images="coco",  # the file's image paths start with val2014/
        image_source=COCO_VAL2014,
    ),
    "aro-flickr-order": Benchmark(
        files=(Source("flickr30k/flickr30k_test.json", f"{BLIP_BUCKET}/flickr30k_test.json"),),
        data="flickr30k/flickr30k_test.json",
        images="flickr30k",  # the file's image paths start with flickr30k-images/
        image_source=FLICKR_IMAGES,
    ),
}


class DownloadError(Exception):
    """Files that could not be fetched; the message lists each one, where it goes and where it comes from."""


class FetchFailed(Exception):
    """One file could not be fetched (network, not found, an HTML page instead of the file); ``host_down``
    when the server could not be reached at all."""

    def __init__(self, message: str, host_down: bool = False):
        super().__init__(message)
        self.host_down = host_down


class Damaged(Exception):
    """One file arrived but failed its checks; its partial download was deleted."""


@dataclass
class Fetched:
    """Where a benchmark's files are after :func:`ensure`."""

    data: Path
    images: Path
    images_ready: bool  # whether the image folder is in place
    images_hint: str  # what to do when it is not


def resolve_mirror(mirror: str | None) -> str | None:
    """``--mirror``, else ``$VLP_BENCHMARK_MIRROR``; a plain folder path becomes a ``file://`` URL."""
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    if mirror and "://" not in mirror:
        mirror = Path(mirror).resolve().as_uri()
    return mirror.rstrip("/") if mirror else None


def source_url(src: Source, mirror: str | None) -> str | None:
    """Where ``src`` is fetched from: the mirror's copy (``MIRROR/<dest>``) or the official location."""
    if src.url is None:
        return None
    return f"{mirror}/{urllib.parse.quote(src.dest)}" if mirror else src.url


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


def _host(url: str) -> str:
    return urllib.parse.urlparse(url).netloc


def _place_line(root: Path, src: Source) -> str:
    if src.url is None:
        return f"  {root / src.target}  <-  {src.about}"
    about = f"; {src.about}" if src.about else ""
    unpacked = f", unpacked into {root / src.target}" if src.unpack else ""
    return f"  {root / src.dest}  <-  {src.url}  ({src.checks()}{about}{unpacked})"


def ensure(
    benchmark: str,
    root: Path,
    mirror: str | None = None,
    with_images: bool = False,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> Fetched:
    """Put ``benchmark``'s files (and with ``with_images`` its images) under ``root``; reuse what is there.

    Raises DownloadError listing every file still missing, its place under ``root`` and its source."""
    if benchmark not in BENCHMARKS:
        raise DownloadError(f"--download knows {', '.join(BENCHMARKS)}; not {benchmark}")
    bench = BENCHMARKS[benchmark]
    mirror = resolve_mirror(mirror)
    sources = list(bench.files) + ([bench.image_source] if with_images else [])
    problems: list[tuple[Source, str]] = []
    down: dict[str, str] = {}  # host -> why: one unreachable host is not asked again for every file
    for src in sources:
        target = root / src.target
        if target.is_dir() or (target.is_file() and check(target, src) is None):
            log(f"reusing {target} ({'present' if target.is_dir() else 'checked: ' + src.checks()})")
            continue
        if target.exists():
            log(f"{check(target, src)}: fetching it again")
        url = source_url(src, mirror)
        if url is None:
            problems.append((src, f"{target} is missing and has no public download"))
            continue
        if _host(url) in down:
            problems.append((src, f"{url}: not tried, {_host(url)} did not answer ({down[_host(url)]})"))
            continue
        fetched = root / src.dest
        try:
            # An archive downloaded whole by a run that stopped before unpacking it is not fetched again.
            if not (src.unpack and fetched.is_file() and check(fetched, src) is None):
                download(url, fetched, src, log)
            if src.unpack:
                unpack(fetched, target, log)
        except FetchFailed as exn:
            problems.append((src, str(exn)))
            if exn.host_down and _host(url):
                down[_host(url)] = str(exn).removeprefix(f"{url}: ")
        except Damaged as exn:
            problems.append((src, str(exn)))
    if problems:
        lines = [f"{benchmark}: {len(problems)} of {len(sources)} files could not be fetched into {root}:"]
        lines += [f"  {why}" for _, why in problems]
        lines.append(
            "Files already in place were kept. Place these by hand (or give --mirror), then run the same command again:"
        )
        lines += [_place_line(root, src) for src, _ in problems]
        raise DownloadError("\n".join(lines))
    images = root / bench.image_source.target
    src = bench.image_source
    if src.url:
        hint = f"add --with-images to fetch {src.url} ({src.about}) and unpack it there, or pass --images"
    else:
        hint = f"{src.about}, or pass --images"
    return Fetched(
        data=root / bench.data,
        images=root / bench.images,
        images_ready=images.is_dir(),
        images_hint=f"{images} does not exist: {hint}",
    )

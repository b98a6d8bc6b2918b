"""``vlp-eval compositional --download``: fetched from a mirror made in the test (file://, or a loopback HTTP
server that honours Range requests), checked, resumed, reused without a request, and an offline or damaged
source reported file by file. Nothing here reaches the internet."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import shutil
import socket
import threading
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from eval_zeroshot import download as D
from eval_zeroshot.cli import main as vlp_eval

SUGARCREPE = D.BENCHMARKS["sugarcrepe"]


def mirror_of(sugarcrepe: Path, root: Path) -> Path:
    """A mirror (``MIRROR/sugarcrepe/<file>.json``) holding writable copies of the official files."""
    (root / "sugarcrepe").mkdir(parents=True)
    for f in sugarcrepe.glob("*.json"):
        (root / "sugarcrepe" / f.name).write_bytes(f.read_bytes())
    return root


def fetch(benchmark: str, out: Path, mirror: str | Path, **kw) -> tuple[D.Fetched, list[str]]:
    log: list[str] = []
    return D.ensure(benchmark, out, str(mirror), log=log.append, **kw), log


def test_the_table_matches_the_official_files(sugarcrepe):
    # The checksums in the table were computed from these files; this keeps the two together.
    names = {Path(s.dest).name for s in SUGARCREPE.files}
    assert names == {f.name for f in sugarcrepe.glob("*.json")}
    for src in SUGARCREPE.files:
        data = (sugarcrepe / Path(src.dest).name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (src.size, src.sha256)
    # No checksum is claimed where no official copy was at hand.
    for name in ("aro-vgr", "aro-vga", "aro-coco-order", "aro-flickr-order"):
        assert all(s.sha256 is None and s.size is None for s in D.BENCHMARKS[name].files)


def test_fresh_download_then_reuse_without_any_request(sugarcrepe, tmp_path):
    mirror = mirror_of(sugarcrepe, tmp_path / "mirror")
    out = tmp_path / "bench"
    fetched, log = fetch("sugarcrepe", out, mirror)  # a plain folder path is a file:// mirror
    assert fetched.data == out / "sugarcrepe" and fetched.images == out / "coco" / "val2017"
    assert not fetched.images_ready and "--with-images" in fetched.images_hint
    for f in sugarcrepe.glob("*.json"):
        assert (out / "sugarcrepe" / f.name).read_bytes() == f.read_bytes()
    assert not list(out.rglob("*.part"))
    assert sum(line.startswith("fetching ") for line in log) == 7
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.json")}
    shutil.rmtree(mirror)  # any request now would fail
    fetched, log = fetch("sugarcrepe", out, mirror.as_uri())
    assert sum(line.startswith("reusing ") and "sha256" in line for line in log) == 7
    assert not any(line.startswith(("fetching", "resuming")) for line in log)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.json")} == stamps


def test_a_part_file_is_resumed_not_restarted(sugarcrepe, tmp_path):
    mirror = mirror_of(sugarcrepe, tmp_path / "mirror")
    official = (sugarcrepe / "replace_rel.json").read_bytes()
    half = len(official) // 2
    dest = tmp_path / "bench" / "sugarcrepe" / "replace_rel.json"
    dest.parent.mkdir(parents=True)
    dest.with_name("replace_rel.json.part").write_bytes(official[:half])
    # The mirror's first half is garbage: only a download that keeps the .part and asks for the rest
    # ends with the official bytes (and passes the checksum).
    (mirror / "sugarcrepe" / "replace_rel.json").write_bytes(b"x" * half + official[half:])
    _, log = fetch("sugarcrepe", tmp_path / "bench", mirror.as_uri())
    assert dest.read_bytes() == official
    assert any(line.startswith(f"resuming {dest} at {half} bytes") for line in log)
    assert not dest.with_name("replace_rel.json.part").exists()


def test_a_damaged_file_fails_with_both_checksums_and_keeps_the_others(sugarcrepe, tmp_path, capsys):
    mirror = mirror_of(sugarcrepe, tmp_path / "mirror")
    out = tmp_path / "bench"
    fetch("sugarcrepe", out, mirror)
    kept = {p.name: p.read_bytes() for p in (out / "sugarcrepe").glob("*.json")}
    (out / "sugarcrepe" / "swap_obj.json").unlink()
    bad = mirror / "sugarcrepe" / "swap_obj.json"
    bad.write_bytes(bad.read_bytes().replace(b"a", b"e", 1))  # same size, other bytes
    src = next(s for s in SUGARCREPE.files if s.dest.endswith("swap_obj.json"))
    args = ["compositional", "--model", "local-dir:unused", "--benchmark", "sugarcrepe"]
    assert vlp_eval([*args, "--download", str(out), "--mirror", mirror.as_uri()]) == 2
    err = capsys.readouterr().err
    actual = hashlib.sha256(bad.read_bytes()).hexdigest()
    assert f"{out / 'sugarcrepe' / 'swap_obj.json.part'}: sha256 mismatch: expected {src.sha256}, got {actual}" in err
    assert "1 of 7 files" in err and f"{out / 'sugarcrepe' / 'swap_obj.json'}  <-  {src.url}" in err
    assert not list((out / "sugarcrepe").glob("swap_obj.json*"))  # the bad .part is gone
    for name, data in kept.items():
        if name != "swap_obj.json":
            assert (out / "sugarcrepe" / name).read_bytes() == data


def test_offline_says_which_files_to_place_where(tmp_path, capsys, monkeypatch):
    out = tmp_path / "bench"
    # A .part from an earlier, interrupted run must survive a failed one.
    (out / "sugarcrepe").mkdir(parents=True)
    (out / "sugarcrepe" / "add_obj.json.part").write_bytes(b"{")
    monkeypatch.setenv(D.MIRROR_ENV, "file:///nonexistent")  # the environment variable is a mirror too
    args = ["compositional", "--model", "local-dir:unused", "--benchmark", "sugarcrepe", "--download", str(out)]
    assert vlp_eval(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("vlp-eval: error: sugarcrepe: 7 of 7 files could not be fetched")
    assert "file:///nonexistent/sugarcrepe/add_att.json" in err and "Place these by hand" in err
    for src in SUGARCREPE.files:
        assert f"{out / src.dest}  <-  {src.url}  (sha256 {src.sha256}, {src.size} bytes)" in err
    assert (out / "sugarcrepe" / "add_obj.json.part").read_bytes() == b"{"
    # ARO's Flickr30k images have no public download: the message says where to sign up and what goes where.
    monkeypatch.delenv(D.MIRROR_ENV)
    (tmp_path / "m" / "flickr30k").mkdir(parents=True)
    (tmp_path / "m" / "flickr30k" / "flickr30k_test.json").write_text("[]")
    with pytest.raises(D.DownloadError) as exn:
        fetch("aro-flickr-order", out, tmp_path / "m", with_images=True)
    assert f"{out / 'flickr30k' / 'flickr30k-images'}  <-  no public download: sign up at https://" in str(exn.value)
    assert (out / "flickr30k" / "flickr30k_test.json").read_text() == "[]"  # the annotation file still landed


def test_argument_errors(tmp_path, capsys):
    base = ["compositional", "--model", "local-dir:unused"]
    assert vlp_eval([*base, "--benchmark", "sugarcrepe"]) == 2
    assert "--data is required (or --download DIR" in capsys.readouterr().err
    assert vlp_eval([*base, "--benchmark", "shapes", "--download", str(tmp_path)]) == 2
    assert "shapes is made by vlp-data" in capsys.readouterr().err
    assert vlp_eval([*base, "--benchmark", "sugarcrepe", "--data", str(tmp_path), "--with-images"]) == 2
    assert "go with --download DIR" in capsys.readouterr().err


# ------------------------------------------------------------------ HTTP: Range requests, restarts, errors


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 -- http.server's name
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if self.headers.get("Range") and srv.honour_range:
            start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("Content-Type", srv.content_type)
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def http_mirror():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.honour_range, srv.content_type = {}, [], True, "application/json"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_http_range_resume_restart_and_errors(sugarcrepe, tmp_path, http_mirror):
    url = f"http://127.0.0.1:{http_mirror.server_address[1]}"
    official = {f"/sugarcrepe/{f.name}": f.read_bytes() for f in sugarcrepe.glob("*.json")}
    http_mirror.files.update(official)
    path = "/sugarcrepe/add_obj.json"
    half = len(official[path]) // 2
    part = tmp_path / "a" / "sugarcrepe" / "add_obj.json.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(official[path][:half])
    http_mirror.files[path] = b"x" * half + official[path][half:]  # only a resumed download comes out right
    fetch("sugarcrepe", tmp_path / "a", url)
    assert (tmp_path / "a" / "sugarcrepe" / "add_obj.json").read_bytes() == official[path]
    assert (path, f"bytes={half}-") in http_mirror.requests
    # A server that ignores Range answers 200 with the whole file: the .part is overwritten, not appended to.
    http_mirror.files[path] = official[path]
    http_mirror.honour_range = False
    part = tmp_path / "b" / "sugarcrepe" / "add_obj.json.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(official[path][:half])
    _, log = fetch("sugarcrepe", tmp_path / "b", url)
    assert (tmp_path / "b" / "sugarcrepe" / "add_obj.json").read_bytes() == official[path]
    assert any(line.startswith("fetching") and "add_obj" in line for line in log)
    assert not any(line.startswith("resuming") for line in log)
    # A .part that is already whole (a run stopped before the rename; size not in the table) is not fetched
    # again: the server's 416 says so.
    flickr = b'[{"image": "flickr30k-images/1.jpg", "caption": ["a dog"]}]'
    http_mirror.files["/flickr30k/flickr30k_test.json"] = flickr
    http_mirror.honour_range = True
    part = tmp_path / "f" / "flickr30k" / "flickr30k_test.json.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(flickr)
    fetch("aro-flickr-order", tmp_path / "f", url)
    assert (tmp_path / "f" / "flickr30k" / "flickr30k_test.json").read_bytes() == flickr
    assert http_mirror.requests[-1] == ("/flickr30k/flickr30k_test.json", f"bytes={len(flickr)}-")
    # A missing file is an HTTP error for that file alone; an HTML page is not taken for the file.
    del http_mirror.files["/sugarcrepe/swap_att.json"]
    with pytest.raises(D.DownloadError, match=r"1 of 7 files(.|\n)*swap_att.json: HTTP 404"):
        fetch("sugarcrepe", tmp_path / "c", url)
    http_mirror.content_type = "text/html; charset=utf-8"
    with pytest.raises(D.DownloadError, match="an HTML page instead of the file"):
        fetch("sugarcrepe", tmp_path / "d", url)
    # A host that does not answer is asked once, not once per file.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(D.DownloadError) as exn:
        fetch("sugarcrepe", tmp_path / "e", closed)
    assert str(exn.value).count("not tried, 127.0.0.1:") == 6


# ------------------------------------------------------------------ the command line, end to end


def test_cli_sugarcrepe_download_then_score(exported, tmp_path, monkeypatch, capsys):
    mirror = tmp_path / "mirror"
    (mirror / "sugarcrepe").mkdir(parents=True)
    images = tmp_path / "val2017"
    images.mkdir()
    files = []
    for k, name in enumerate(("replace_rel", "swap_obj")):  # small stand-ins: the real ones need 1,560 images
        items = {
            str(i): {"filename": f"{i:012d}.jpg", "caption": "a dog on a mat", "negative_caption": "a mat on a dog"}
            for i in range(3 + k)
        }
        body = json.dumps(items).encode()
        (mirror / "sugarcrepe" / f"{name}.json").write_bytes(body)
        files.append(
            dataclasses.replace(
                SUGARCREPE.files[0],
                dest=f"sugarcrepe/{name}.json",
                size=len(body),
                sha256=hashlib.sha256(body).hexdigest(),
            )
        )
    for i in range(4):
        Image.new("RGB", (16, 16), (60 * i, 90, 30)).save(images / f"{i:012d}.jpg")
    monkeypatch.setitem(D.BENCHMARKS, "sugarcrepe", dataclasses.replace(SUGARCREPE, files=tuple(files)))
    out = tmp_path / "sc.json"
    args = ["compositional", "--model", f"local-dir:{exported}", "--benchmark", "sugarcrepe"]
    args += ["--download", str(tmp_path / "bench"), "--mirror", mirror.as_uri(), "--out", str(out)]
    assert vlp_eval([*args, "--images", str(images)]) == 0  # no --data: the downloaded folder
    result = json.loads(out.read_text())
    assert {k: v["n"] for k, v in result["subsets"].items()} == {"replace_rel": 3, "swap_obj": 4}
    # Without --images the downloaded COCO folder is the default; it is not there, and the error says how.
    assert vlp_eval(args) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'bench' / 'coco' / 'val2017'} does not exist: add --with-images to fetch http" in err


def test_cli_aro_vgr_with_images_from_a_zip(exported, tmp_path, capsys):
    mirror = tmp_path / "mirror" / "aro"
    mirror.mkdir(parents=True)
    records = [
        {
            "image_path": f"{i % 2}.jpg",
            "bbox_x": 1,
            "bbox_y": 1,
            "bbox_w": 12,
            "bbox_h": 10,
            "true_caption": "the cup is on the table",
            "false_caption": "the table is on the cup",
            "relation_name": ["on", "under"][i % 2],
        }
        for i in range(4)
    ]
    (mirror / "visual_genome_relation.json").write_text(json.dumps(records))
    with zipfile.ZipFile(mirror / "vgr_vga_images.zip", "w") as z:  # unpacks to images/ as ARO's does
        for i in range(2):
            jpg = tmp_path / f"{i}.jpg"
            Image.new("RGB", (20, 16), (100 * i, 50, 50)).save(jpg)
            z.write(jpg, f"images/{i}.jpg")
    bench = tmp_path / "bench"
    args = ["compositional", "--model", f"local-dir:{exported}", "--benchmark", "aro-vgr", "--download", str(bench)]
    args += ["--mirror", mirror.parent.as_uri()]
    assert vlp_eval(args) == 2  # the annotations land, but no images yet: say how to get them
    assert f"{bench / 'aro' / 'images'} does not exist: add --with-images" in capsys.readouterr().err
    out = tmp_path / "vgr.json"
    assert vlp_eval([*args, "--with-images", "--out", str(out)]) == 0
    assert sorted(p.name for p in (bench / "aro" / "images").iterdir()) == ["0.jpg", "1.jpg"]
    assert not (bench / "aro" / "vgr_vga_images.zip").exists()  # unpacked, then deleted
    assert json.loads(out.read_text())["subsets"]["vg_relation"]["n"] == 4
    shutil.rmtree(mirror)  # a second run needs nothing from the mirror
    assert vlp_eval([*args, "--with-images"]) == 0
    assert "reusing " in capsys.readouterr().err

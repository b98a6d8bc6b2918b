"""`vlp-data photos`: JPEG crops of the photographs scikit-image and scikit-learn ship."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import open_clip
import pytest
from PIL import Image, JpegImagePlugin

from data_pipelines.cli import main as vlp_data
from data_pipelines.loader import StreamingLoader
from data_pipelines.sources import photos

N, SHARD = 24, 10


def _run(out: Path, *args: str) -> int:
    return vlp_data(["photos", "--out", str(out), "--n", str(N), "--shard-size", str(SHARD), "--workers", "1", *args])


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("photos")
    runs = {"coco": (), "coco_again": (), "border": ("--size", "256"), "seed1": ("--seed", "1")}
    for name, args in runs.items():
        assert _run(root / name, *args) == 0
    return {name: root / name for name in runs}


def _samples(folder: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                assert ext not in samples.setdefault(key, {}), f"{member.name} twice"
                samples[key][ext] = tar.extractfile(member).read()
    return samples


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _q90_tables() -> dict:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 30, 200)).save(buf, format="JPEG", quality=90)
    return Image.open(buf).quantization


@pytest.mark.parametrize("name,size", [("coco", (640, 480)), ("border", (256, 256))])
def test_shards_hold_captioned_jpegs_of_the_requested_size(corpora, name, size):
    folder = corpora[name]
    assert json.loads((folder / "sizes.json").read_text()) == {
        "photos-000000.tar": 10,
        "photos-000001.tar": 10,
        "photos-000002.tar": 4,
    }
    samples = _samples(folder)
    assert len(samples) == N  # keys are unique across shards
    q90 = _q90_tables()
    sources = set()
    for key, members in samples.items():
        assert set(members) == {"jpg", "txt", "json"}, key
        im = Image.open(io.BytesIO(members["jpg"]))
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", size)
        assert im.quantization == q90  # quality 90: libjpeg's tables scaled to it
        assert JpegImagePlugin.get_sampling(im) == 2  # 4:2:0
        assert "icc_profile" not in im.info and "exif" not in im.info
        meta = json.loads(members["json"])
        caption = members["txt"].decode()
        assert caption == meta["caption"] and meta["source"] in caption and "photograph of" in caption
        assert meta["size"] == list(size) and isinstance(meta["flip"], bool) and len(meta["crop"]) == 4
        sources.add(meta["source"])
    assert len(sources) >= 5  # crops of many photographs, not one
    manifest = json.loads((folder / "photos.json").read_text())
    assert manifest["counts"]["samples"] == N and len(manifest["sources"]) == len(photos.PHOTOS)


def test_border_mode_pads_with_white_as_img2dataset():
    sources = photos.find_sources()
    cfg = photos.PhotosConfig(n=40, width=256, height=256, border=True)
    padded = 0
    for index in range(cfg.n):
        members = photos.make_sample(cfg, sources, index)
        x, y, w, h = json.loads(members["json"])["crop"]
        im = Image.open(io.BytesIO(members["jpg"])).convert("RGB")
        corner = im.getpixel((0, 0)) if w < h else im.getpixel((128, 0))  # in the margin if not square
        if abs(w - h) > 0.1 * max(w, h):
            padded += 1
            assert min(corner) > 235, (index, corner)
    assert padded > 10


def test_same_arguments_give_the_same_bytes_and_another_seed_does_not(corpora):
    assert _digests(corpora["coco"]) == _digests(corpora["coco_again"])
    first, other = _samples(corpora["coco"]), _samples(corpora["seed1"])
    assert first.keys() == other.keys()
    assert sum(first[k]["jpg"] != other[k]["jpg"] for k in first) > N // 2


def test_an_existing_output_is_refused_and_left_alone(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert _run(out) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "taken.partial").exists()


def test_missing_packages_name_the_extra(tmp_path, capsys, monkeypatch):
    real = photos.find_spec
    monkeypatch.setattr(photos, "find_spec", lambda name: None if name == "sklearn" else real(name))
    assert _run(tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "scikit-learn is not installed" in err and "pip install 'vlp[bench]'" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


@pytest.mark.parametrize("size", ["640x", "x480", "big", "8x8"])
def test_bad_sizes_are_refused(tmp_path, size, capsys):
    assert _run(tmp_path / "out", "--size", size) == 2
    assert "--size" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_loader_streams_the_photos(corpora):
    loader = StreamingLoader(
        str(corpora["coco"]),
        preprocess=open_clip.image_transform(224, is_train=True),
        tokenizer=open_clip.get_tokenizer("ViT-B-32"),
        batch_size=8,
        num_workers=0,
        epochs=1,
    )
    batches = list(loader)
    assert len(batches) == N // 8
    assert all(tuple(b["image"].shape) == (8, 3, 224, 224) for b in batches)
    assert sorted(k for b in batches for k in b["key"]) == [photos.sample_key(i) for i in range(N)]
    assert not loader.skipped

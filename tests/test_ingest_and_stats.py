"""`vlp-data shards` from a user's table and `vlp-data stats` on shards."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from PIL import Image

from data_pipelines.cli import main as vlp_data
from data_pipelines.shards.reader import SkipCounter, iter_shard
from tests.conftest import png, simple_samples, write_shards


def _image_files(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, fmt in (("a.png", "PNG"), ("b.jpg", "JPEG"), ("c.webp", "WEBP"), ("d.bmp", "BMP")):
        buf = io.BytesIO()
        Image.new("RGB", (12, 10), (10, 200, 30)).save(buf, format=fmt)
        (folder / name).write_bytes(buf.getvalue())
        files[name] = buf.getvalue()
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    return files


def _read_all(folder: Path) -> list[dict]:
    counter = SkipCounter()
    out = [s for tar in sorted(folder.glob("*.tar")) for s in iter_shard(str(tar), counter)]
    assert not counter.counts
    return out


def test_csv_to_shards_round_trip(tmp_path, capsys):
    files = _image_files(tmp_path / "imgs")
    table = tmp_path / "pairs.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "caption", "negatives", "source_id"])
        w.writerow(["imgs/a.png", "a green block", json.dumps(["a red block", "a green ball"]), "1"])
        w.writerow(["imgs/b.jpg", "a jpeg", "", "2"])
        w.writerow(["imgs/c.webp", "a webp", "not a webp|a gif", "3"])
        w.writerow([str(tmp_path / "imgs" / "d.bmp"), "a bitmap", "", "4"])  # absolute path; BMP becomes PNG
        w.writerow(["imgs/missing.png", "gone", "", "5"])
        w.writerow(["imgs/broken.jpg", "broken", "", "6"])
    out = tmp_path / "shards"
    assert vlp_data(["shards", "--input", str(table), "--out", str(out), "--shard-size", "3"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["written"] == 4 and summary["shards"] == 2
    assert summary["skipped"] == {"missing_image": 1, "corrupt_image": 1}
    assert json.loads((out / "sizes.json").read_text()) == {"shard-000000.tar": 3, "shard-000001.tar": 1}
    samples = _read_all(out)
    assert [s["txt"].decode() for s in samples] == ["a green block", "a jpeg", "a webp", "a bitmap"]
    assert samples[0]["png"] == files["a.png"] and samples[1]["jpg"] == files["b.jpg"]
    assert samples[2]["webp"] == files["c.webp"]
    assert Image.open(io.BytesIO(samples[3]["png"])).size == (12, 10)
    meta = [json.loads(s["json"]) for s in samples]
    assert meta[0]["negatives"] == ["a red block", "a green ball"] and meta[0]["source_id"] == "1"
    assert meta[2]["negatives"] == ["not a webp", "a gif"] and "negatives" not in meta[1]


def test_jsonl_input_and_bad_tables(tmp_path, capsys):
    _image_files(tmp_path)
    good = tmp_path / "ok.jsonl"
    good.write_text(
        json.dumps({"image": "a.png", "text": "first", "negatives": [{"text": "second", "type": "swap_nouns"}]})
        + "\n\n"
        + json.dumps({"image": "b.jpg", "text": "again"})
        + "\n"
    )
    assert vlp_data(["shards", "--input", str(good), "--out", str(tmp_path / "o1")]) == 0
    assert [s["txt"] for s in _read_all(tmp_path / "o1")] == [b"first", b"again"]
    capsys.readouterr()

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"image": "a.png", "caption": "x"}) + "\n" + '{"image": "b.jpg", "caption": \n')
    assert vlp_data(["shards", "--input", str(bad), "--out", str(tmp_path / "o2")]) == 2
    assert f"{bad}:2: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()  # checked before anything is written

    nocap = tmp_path / "nocap.csv"
    nocap.write_text("path,label\na.png,3\n")
    assert vlp_data(["shards", "--input", str(nocap), "--out", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err
    assert "no a caption column" in err and "columns: label, path" in err

    assert vlp_data(["shards", "--input", str(good), "--out", str(tmp_path / "o1")]) == 2  # not empty
    assert "not empty" in capsys.readouterr().err
    assert vlp_data(["shards", "--input", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o4")]) == 2

    allbad = tmp_path / "allbad.csv"
    allbad.write_text("image,caption\nmissing.png,x\n")
    assert vlp_data(["shards", "--input", str(allbad), "--out", str(tmp_path / "o5")]) == 1


def test_stats_counts_samples_skips_and_caption_lengths(tmp_path, capsys):
    samples = simple_samples(25)  # captions "caption N": two words
    samples[3]["txt"] = b"a much longer caption with seven words"
    samples += [
        {"__key__": "zz_corrupt", "png": b"nope", "txt": b"x"},
        {"__key__": "zz_nocap", "png": png()},
    ]
    write_shards(tmp_path, samples, shard_size=10)
    (tmp_path / "shard-999999.tar").write_bytes(b"garbage" * 100)
    assert vlp_data(["stats", str(tmp_path), "--workers", "2"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["samples"] == 25 and stats["shards"] == 4
    assert stats["skipped"] == {"corrupt_image": 1, "missing_caption": 1, "unreadable_shard": 1}
    words = stats["caption_words"]
    assert words["p50"] == 2 and words["max"] == 7 and words["mean"] == round((24 * 2 + 7) / 25, 3)
    assert stats["image_formats"] == {"png": 25} and stats["samples_with_neighbour"] == 0
    brace = str(tmp_path / "shard-{000000..000001}.tar")
    assert vlp_data(["stats", brace, "--workers", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 20
    assert vlp_data(["stats", str(tmp_path / "none-{0..3}.tar")]) == 2
    assert "matches no file" in capsys.readouterr().err


def test_stats_on_the_shapes_world(world, capsys):
    assert vlp_data(["stats", str(world / "train")]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["samples"] == 400 and stats["shards"] == 8 and stats["skipped"] == {}
    assert stats["negatives"]["samples_with_negatives"] == 400
    assert stats["samples_with_neighbour"] == 400  # every sample's twin

"""The shapes world: captions agree with scenes and pixels, held-out pairs stay out of training,
the output is byte-deterministic, and the evaluation sets have the layouts their readers expect."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_pipelines.cli import main as vlp_data
from data_pipelines.sources.shapes import DEFAULT_HELDOUT, WorldConfig, generate_world
from data_pipelines.sources.shapes.captions import NEGATIVE_TYPES, SUGARCREPE_TYPES, ZEROSHOT_TEMPLATES, classname
from data_pipelines.sources.shapes.scene import COLOURS

PHRASE = re.compile(
    r"\b(?:(small|large) )?(red|green|blue|yellow|purple|orange) (circle|square|triangle|star|cross|diamond)\b"
)
RELATION = re.compile(r"\b(to the left of|to the right of|above|below)\b")
REL_NAME = {"to the left of": "left of", "to the right of": "right of", "above": "above", "below": "below"}


def train_records(world: Path):
    for tar in sorted((world / "train").glob("*.tar")):
        with tarfile.open(tar) as tf:
            members = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
        for name in sorted(members):
            if name.endswith(".json"):
                key = name[: -len(".json")]
                yield key, json.loads(members[name]), members[key + ".txt"].decode(), members[key + ".png"]


def holds(rel: str, x: dict, y: dict) -> bool:
    """Whether object x stands in `rel` to object y, judged from the bounding boxes alone."""
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = x["bbox"], y["bbox"]
    return {
        "left of": ax1 <= bx0,
        "right of": bx1 <= ax0,
        "above": ay1 <= by0,
        "below": by1 <= ay0,
    }[rel]


def caption_claims(text: str, objects: list[dict]) -> tuple[list[tuple], list[tuple]]:
    """Noun phrases (size, colour, shape) in order, and the (subject, relation, object) index
    triples that the caption could be asserting (two when the objects read the same)."""
    phrases = PHRASE.findall(text)
    if len(objects) == 1:
        return phrases, []
    rel = RELATION.findall(text)
    assert len(rel) == 1, text
    rel = REL_NAME[rel[0]]
    match = re.search(r", the (\w+) is .* the (\w+)$", text)
    if match:  # "A and B, the <shape> is R the <shape>" (the two shapes differ)
        subj = next(i for i, o in enumerate(objects) if o["shape"] == match.group(1))
        obj = next(i for i, o in enumerate(objects) if o["shape"] == match.group(2))
        return phrases, [(subj, rel, obj)]

    def fits(phrase, o):
        size, colour, shape = phrase
        return o["colour"] == colour and o["shape"] == shape and (not size or o["size"] == size)

    first, second = phrases[0], phrases[1]
    if text.endswith(" it"):  # "B with A R it"
        first, second = second, first
    return phrases, [
        (i, rel, j)
        for i in range(2)
        for j in range(2)
        if i != j and fits(first, objects[i]) and fits(second, objects[j])
    ]


def nearest_colour(rgb) -> str:
    return min(COLOURS, key=lambda c: sum((a - b) ** 2 for a, b in zip(COLOURS[c], rgb, strict=True)))


def test_captions_match_scene_and_pixels(world):
    n_pairs = 0
    for key, record, txt, png in train_records(world):
        objects = record["objects"]
        assert txt == record["caption"]
        phrases, claims = caption_claims(txt, objects)
        # Every object is named with its true colour and shape, and nothing else is named.
        named = sorted((c, s) for _, c, s in phrases)
        assert named == sorted((o["colour"], o["shape"]) for o in objects), (key, txt)
        for size, colour, shape in phrases:
            if size:
                assert any(o["size"] == size and o["colour"] == colour and o["shape"] == shape for o in objects)
        if len(objects) == 2:
            assert claims, (key, txt)
            assert any(holds(rel, objects[i], objects[j]) for i, rel, j in claims), (key, txt, objects)
            n_pairs += 1
        # The pixels agree: the centre of every bounding box shows the object's colour.
        image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)
        assert image.shape == (64, 64, 3)
        for o in objects:
            x0, y0, x1, y1 = o["bbox"]
            patch = image[(y0 + y1) // 2 - 1 : (y0 + y1) // 2 + 2, (x0 + x1) // 2 - 1 : (x0 + x1) // 2 + 2]
            assert nearest_colour(patch.reshape(-1, 3).mean(0)) == o["colour"], (key, o)
        if len(objects) == 2:  # non-overlapping
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = objects[0]["bbox"], objects[1]["bbox"]
            assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0
    assert n_pairs > 100


def test_negatives_are_false_and_typed(world):
    types = set()
    for _, record, txt, _ in train_records(world):
        texts = [n["text"] for n in record["negatives"]]
        assert txt not in texts and len(set(texts)) == len(texts)
        for neg in record["negatives"]:
            types.add(neg["type"])
            assert neg["type"] in NEGATIVE_TYPES
            if neg["type"] in ("swap_adjectives", "swap_nouns", "reshuffle_order"):
                assert sorted(re.findall(r"\w+", neg["text"])) == sorted(re.findall(r"\w+", txt))  # same bag of words
            if neg["type"] == "replace_relation":
                assert RELATION.findall(neg["text"]) != RELATION.findall(txt)
    assert types == set(NEGATIVE_TYPES)


def test_heldout_combinations_never_reach_training(world):
    heldout = set(DEFAULT_HELDOUT)
    seen = set()
    for _, record, txt, _ in train_records(world):
        for o in record["objects"]:
            seen.add((o["colour"], o["shape"]))
        for text in [txt] + [n["text"] for n in record["negatives"]]:
            assert not {(c, s) for _, c, s in PHRASE.findall(text)} & heldout, text
    assert not seen & heldout
    assert len(seen) == 36 - len(heldout)  # every other combination does appear


def test_zeroshot_layout_reads_in_clip_benchmark(world):
    from clip_benchmark.datasets.builder import build_dataset

    classnames = (world / "zeroshot" / "classnames.txt").read_text().splitlines()
    heldout_ids = {classnames.index(classname(c, s)) for c, s in DEFAULT_HELDOUT}
    for split, expected_ids in (("test", set(range(36)) - heldout_ids), ("heldout", heldout_ids)):
        ds = build_dataset("wds/shapes", root=str(world / "zeroshot"), split=split, transform=None)
        assert ds.classes == classnames and len(classnames) == 36
        assert ds.templates == list(ZEROSHOT_TEMPLATES)
        labels = [label for _, label in ds]
        assert set(labels) == expected_ids
        assert len(labels) == 2 * len(expected_ids)


def test_compositional_files_have_sugarcrepe_keys(world):
    root = world / "compositional"
    for folder, want_heldout in ((root, False), (root / "heldout", True)):
        assert sorted(p.stem for p in folder.glob("*.json")) == sorted(SUGARCREPE_TYPES)
        for path in folder.glob("*.json"):
            data = json.loads(path.read_text())
            assert len(data) == 12 and all(isinstance(k, str) for k in data)
            for item in data.values():
                assert {"filename", "caption", "negative_caption"} <= set(item)
                assert (root / "images" / item["filename"]).is_file()
                assert item["caption"] != item["negative_caption"]
                pairs = {(c, s) for _, c, s in PHRASE.findall(item["caption"] + " " + item["negative_caption"])}
                has_heldout = bool({(c, s) for _, c, s in PHRASE.findall(item["caption"])} & set(DEFAULT_HELDOUT))
                assert has_heldout == want_heldout
                if not want_heldout:
                    assert not pairs & set(DEFAULT_HELDOUT)


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_arguments_give_identical_bytes(tmp_path):
    cfg = WorldConfig(train_samples=300, shard_size=100, zeroshot_per_class=1, compositional_per_type=3, seed=7)
    generate_world(tmp_path / "a", cfg, workers=1, log=lambda _: None)
    generate_world(tmp_path / "b", cfg, workers=2, log=lambda _: None)  # a process pool (300 >= 256 samples)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    generate_world(tmp_path / "c", WorldConfig(**{**cfg.__dict__, "seed": 8}), workers=1, log=lambda _: None)
    for part in ("train", "zeroshot/test", "zeroshot/heldout", "compositional"):  # not only the manifest's seed
        assert _digest(tmp_path / "a" / part) != _digest(tmp_path / "c" / part), part


def test_cli_refuses_to_clobber_and_reuses_identical(tmp_path, capsys):
    out = tmp_path / "w"
    args = [
        "shapes",
        "--out",
        str(out),
        "--train-samples",
        "20",
        "--zeroshot-per-class",
        "1",
        "--compositional-per-type",
        "1",
        "--workers",
        "1",
    ]
    assert vlp_data(args) == 0
    before = _digest(out)
    assert vlp_data(args) == 0  # same arguments: reused, untouched
    assert "reusing" in capsys.readouterr().out
    assert vlp_data(args[:-2] + ["--seed", "3", "--workers", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _digest(out) == before
    other = tmp_path / "user_folder"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert vlp_data(["shapes", "--out", str(other), "--train-samples", "5"]) == 2
    assert (other / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("bad", ["red", "pink star", "red star,blue blob"])
def test_bad_heldout_is_refused(bad, capsys):
    assert vlp_data(["shapes", "--out", "unused", "--heldout", bad]) == 2
    assert "held-out combination" in capsys.readouterr().err


def test_an_older_format_is_regenerated_not_reused(tmp_path):
    from data_pipelines.sources.shapes.world import FORMAT_VERSION, MANIFEST

    out, logs = tmp_path / "w", []
    cfg = WorldConfig(train_samples=10, zeroshot_per_class=1, compositional_per_type=1, twins=False)
    generate_world(out, cfg, workers=1, log=logs.append)
    manifest = json.loads((out / MANIFEST).read_text())
    del manifest["config"]["twins"]  # as format 3 wrote it: the option did not exist yet
    (out / MANIFEST).write_text(json.dumps({**manifest, "format_version": FORMAT_VERSION - 1}))
    assert not generate_world(out, WorldConfig(**{**cfg.__dict__, "twins": True}), workers=1, log=logs.append).reused
    assert any("older generator" in m for m in logs)
    assert json.loads((out / MANIFEST).read_text())["format_version"] == FORMAT_VERSION
    # Other arguments (here the zero-shot and compositional defaults) are refused, not regenerated.
    assert vlp_data(["shapes", "--out", str(out), "--train-samples", "10", "--no-twins"]) == 2
    with pytest.raises(ValueError, match="--no-twins"):
        WorldConfig(heldout=tuple((c, "star") for c in COLOURS if c != "red")).validate()
    WorldConfig(heldout=tuple((c, "star") for c in COLOURS if c != "red"), twins=False).validate()

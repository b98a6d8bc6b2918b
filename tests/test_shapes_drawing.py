"""The shapes world's second drawing (``alt``) and ``vlp-data shapes-probes``.

The default drawing's pixels are the world's, byte for byte (pinned from the code before drawings
existed); the alt drawing changes pixels and positions only, never what a scene means; its boxes keep
every relation unambiguous; and the probes command writes the layouts the evaluators read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_pipelines.cli import main as vlp_data
from data_pipelines.sources.shapes import DEFAULT_HELDOUT
from data_pipelines.sources.shapes.captions import SUGARCREPE_TYPES, ZEROSHOT_TEMPLATES, classname
from data_pipelines.sources.shapes.render import ALT_DRAWING, DEFAULT_DRAWING, DRAWINGS, Drawing, render
from data_pipelines.sources.shapes.samples import compositional_example, train_sample, zeroshot_sample
from data_pipelines.sources.shapes.scene import COLOURS, all_combos, sample_rng, sample_scene
from tests.test_data_truth import holds, is_true

SEEN = [c for c in all_combos() if c not in set(DEFAULT_HELDOUT)]
KINDS = list(SUGARCREPE_TYPES.values())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def semantics(record: dict) -> tuple:
    """What a probe means: its captions, relation and objects without their boxes."""
    objects = [(o["colour"], o["shape"], o["size"]) for o in record["scene"]["objects"]]
    return record["caption"], record["negative_caption"], record["scene"]["relation"], objects


# ------------------------------------------------------------------ (a) the default drawing is the world's


def test_default_drawing_pixels_are_pinned():
    # Digests computed with the code before drawings existed (format 4): the world's bytes must not move.
    members = train_sample(0, 3, 64, SEEN, 0.3, twins=True)
    assert sha(members["png"]) == "a30f2d07e1d178deb24e7a037863e8f8b578eba281d35f97d3d7ad9a9fd6be5c"
    assert sha(members["neighbour.png"]) == "0082501debf5b337e25626d45ed05da6344bd66cd1a8714b5bdf9a4488aa4ed7"
    assert sha(members["json"]) == "b7459b94789b60e954152af936ebdfbe47d701410f1cef97efa16987dbbbfab7"
    _, png = compositional_example(0, "compositional", 5, SUGARCREPE_TYPES["replace_rel"], 64, SEEN)
    assert sha(png) == "f814f2851bf3a22ced702bbbada3ec2e4fc4a8a40d1321dd6da0e3272e13b2cb"
    kind = SUGARCREPE_TYPES["swap_att"]
    _, png = compositional_example(0, "compositional_heldout", 7, kind, 64, all_combos(), list(DEFAULT_HELDOUT))
    assert sha(png) == "1888389ab5d0617d1ee4fec57880e9d4ea5c892a818c01e9be27e0b89f99f6ad"
    png = zeroshot_sample(0, "zeroshot", 2, 64, ("red", "circle"), 0)["png"]
    assert sha(png) == "4a183e58cc52ae8d2b9d8fb67924d8f5a57d7fe52625490a0e217f7cf0182c39"


def test_explicit_default_drawing_changes_nothing():
    for index in range(6):
        for kind in KINDS[:3]:
            implicit = compositional_example(1, "compositional", index, kind, 64, SEEN)
            explicit = compositional_example(1, "compositional", index, kind, 64, SEEN, drawing=DEFAULT_DRAWING)
            assert implicit == explicit
        scene = sample_scene(sample_rng(1, "train", index), SEEN, 64, 0.3)
        assert scene == sample_scene(sample_rng(1, "train", index), SEEN, 64, 0.3, drawing=DEFAULT_DRAWING)
        a = render(scene, 64, sample_rng(9, "train", index))
        b = render(scene, 64, sample_rng(9, "train", index), drawing=DEFAULT_DRAWING)
        assert a.tobytes() == b.tobytes()
        combo = SEEN[index]
        assert zeroshot_sample(1, "zeroshot", index, 64, combo, 3) == zeroshot_sample(
            1, "zeroshot", index, 64, combo, 3, drawing=DEFAULT_DRAWING
        )


def test_registry():
    assert DRAWINGS == {"default": DEFAULT_DRAWING, "alt": ALT_DRAWING}
    assert DEFAULT_DRAWING == Drawing(name="default")  # the dataclass's defaults are the world's drawing
    with pytest.raises(AttributeError):
        ALT_DRAWING.noise = 0.0  # frozen
    differs = [f for f in DEFAULT_DRAWING.to_json() if getattr(ALT_DRAWING, f) != getattr(DEFAULT_DRAWING, f)]
    for field in ("sizes", "margin_div", "gap_div", "supersample", "outline_px", "background", "gradient", "noise"):
        assert field in differs, field


# ------------------------------------------------------------------ (b) same meaning, other pixels


def test_alt_redraws_the_same_scene_differently():
    for index in range(10):
        scene = sample_scene(sample_rng(0, "compositional", index), SEEN, 64, 0.0)
        before = json.dumps(scene.to_json())
        a = np.asarray(render(scene, 64, sample_rng(5, "train", index)), dtype=float)
        b = np.asarray(render(scene, 64, sample_rng(5, "train", index), drawing=ALT_DRAWING), dtype=float)
        assert json.dumps(scene.to_json()) == before  # drawing never touches the scene
        assert np.abs(a - b).mean() > 20, index  # the background alone is ~70 levels darker on average
        rows = b.mean(axis=(1, 2))
        assert rows[-8:].mean() - rows[:8].mean() > 25  # alt's background: a vertical gradient


def test_alt_probes_mean_what_default_probes_mean():
    # The probes' splits place from their own stream, so both drawings give the very same probes.
    differing_boxes = 0
    for split, combos, second in (
        ("probes_compositional", SEEN, None),
        ("probes_compositional_heldout", all_combos(), list(DEFAULT_HELDOUT)),
    ):
        for kind in KINDS:
            for index in range(40):
                d, d_png = compositional_example(3, split, index, kind, 64, combos, second)
                a, a_png = compositional_example(3, split, index, kind, 64, combos, second, drawing=ALT_DRAWING)
                assert semantics(a) == semantics(d), (split, kind, index)
                assert a_png != d_png
                differing_boxes += a["scene"]["objects"] != d["scene"]["objects"]
    assert differing_boxes > 0.9 * 2 * len(KINDS) * 40  # positions and sizes do change


def test_probe_streams_are_not_the_worlds():
    for index in range(30):
        world, _ = compositional_example(0, "compositional", index, KINDS[4], 64, SEEN)
        probe, _ = compositional_example(0, "probes_compositional", index, KINDS[4], 64, SEEN)
        assert world["scene"] != probe["scene"]


# ------------------------------------------------------------------ (c) alt's boxes keep relations exact


@pytest.mark.parametrize("image_size", [16, 31, 64, 224])
def test_alt_boxes_are_consistent_with_relations(image_size):
    d = ALT_DRAWING
    margin, gap = d.margin(image_size), d.gap(image_size)
    pairs = 0
    for index in range(1500 if image_size == 64 else 300):
        scene = sample_scene(sample_rng(2, "probes_compositional", index), all_combos(), image_size, 0.2, drawing=d)
        objects = scene.to_json()["objects"]
        for o in objects:
            x0, y0, x1, y1 = o["bbox"]
            assert x1 - x0 == y1 - y0 == d.side(o["size"], image_size)
            assert margin <= x0 and x1 <= image_size - margin and margin <= y0 and y1 <= image_size - margin
        if scene.relation is None:
            continue
        pairs += 1
        a, b = objects
        assert holds(scene.relation, a, b), scene  # entirely on that side, and more along than across
        (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = a["bbox"], b["bbox"]
        horizontal = scene.relation in ("left of", "right of")
        along = max(bx0 - ax1, ax0 - bx1) if horizontal else max(by0 - ay1, ay0 - by1)
        assert along >= gap  # no overlap: at least a gap apart along the relation's axis
    assert pairs > 200


def test_alt_sizes_still_read_small_and_large():
    for n in (16, 64, 224):
        assert ALT_DRAWING.side("large", n) > ALT_DRAWING.side("small", n)
    assert ALT_DRAWING.sizes[1] / ALT_DRAWING.sizes[0] > 1.5


def test_every_image_size_places_in_alt():
    for n in range(16, 1025):
        ALT_DRAWING.check(n)
    with pytest.raises(ValueError, match="side by side"):
        DEFAULT_DRAWING.check(17)  # the world at 17 px could never place two large objects side by side


def test_alt_probes_are_exactly_false():
    for kind in KINDS:
        for index in range(60):
            record, _ = compositional_example(4, "probes_compositional", index, kind, 64, SEEN, drawing=ALT_DRAWING)
            objects = record["scene"]["objects"]
            assert is_true(record["caption"], objects), record
            assert not is_true(record["negative_caption"], objects), record


def test_alt_draws_inside_boxes_without_anti_aliasing():
    clean = replace(ALT_DRAWING, noise=0.0)  # without noise, every pixel is background, fill or outline
    for index in range(20):
        scene = sample_scene(sample_rng(6, "probes_compositional", index), SEEN, 64, 0.3, drawing=clean)
        img = np.asarray(render(scene, 64, sample_rng(6, "train", index), drawing=clean)).astype(int)
        inside = np.zeros((64, 64), bool)
        for o in scene.objects:
            x0, y0, x1, y1 = o.bbox
            inside[y0:y1, x0:x1] = True
        for y in range(64):
            outside = img[y][~inside[y]]
            assert (outside == outside[0]).all(), y  # each row of the background is one colour
        colours = {tuple(p) for p in img[inside]}
        backgrounds = {tuple(img[y][~inside[y]][0]) for y in range(64)}
        # fill and outline per object, the background rows; no blended edge shades
        assert len(colours - backgrounds) <= 2 * len(scene.objects), index
        fills = colours - backgrounds
        for o in scene.objects:
            ref = np.array(COLOURS[o.colour])
            assert any(np.abs(np.array(c) - ref).max() <= ALT_DRAWING.colour_jitter for c in fills)


# ------------------------------------------------------------------ (d) vlp-data shapes-probes


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha(p.read_bytes()) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_shapes_probes_command(tmp_path, capsys):
    from eval_zeroshot.compositional import read_sugarcrepe
    from eval_zeroshot.datasets import read_wds

    out = tmp_path / "alt"
    args = ["shapes-probes", "--out", str(out), "--per-type", "10", "--zeroshot-per-class", "2", "--workers", "1"]
    assert vlp_data([*args, "--drawing", "alt"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["drawing"] == "alt" and not summary["reused"]

    manifest = json.loads((out / "shapes_probes.json").read_text())
    assert manifest["drawing"] == ALT_DRAWING.to_json() and manifest["drawing"]["name"] == "alt"
    assert manifest["config"]["seed"] == 0 and manifest["heldout"] == [classname(c, s) for c, s in DEFAULT_HELDOUT]
    assert manifest["counts"]["compositional_replace_rel"] == 10
    assert manifest["counts"]["zeroshot_test"] == 2 * 30 and manifest["counts"]["zeroshot_heldout"] == 2 * 6
    assert sorted(p.name for p in out.iterdir()) == ["compositional", "shapes_probes.json", "zeroshot"]

    # The compositional folder reads as the world's does (vlp-eval compositional --benchmark shapes).
    comp = out / "compositional"
    for folder in (comp, comp / "heldout"):
        subsets = read_sugarcrepe(folder, comp / "images")
        assert sorted(subsets) == sorted(SUGARCREPE_TYPES) and all(len(v) == 10 for v in subsets.values())
        with Image.open(subsets["replace_rel"][0]["image"]) as im:
            assert im.size == (64, 64)
    # The zero-shot folder is CLIP_benchmark's wds layout, as the world's.
    classnames = (out / "zeroshot" / "classnames.txt").read_text().splitlines()
    assert len(classnames) == 36
    heldout_ids = {classnames.index(classname(c, s)) for c, s in DEFAULT_HELDOUT}
    for split, ids in (("test", set(range(36)) - heldout_ids), ("heldout", heldout_ids)):
        data = read_wds(out / "zeroshot", split)
        assert data.templates == list(ZEROSHOT_TEMPLATES)
        assert {i.label for i in data.items} == ids and len(data.items) == 2 * len(ids)
        assert (out / "zeroshot" / split / "nshards.txt").read_text().strip() == str(
            len(list((out / "zeroshot" / split).glob("*.tar")))
        )

    # Same arguments: reused untouched; other arguments: refused unless --overwrite.
    before = _digest(out)
    assert vlp_data([*args, "--drawing", "alt"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["reused"]
    assert _digest(out) == before
    assert vlp_data([*args, "--drawing", "alt", "--seed", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _digest(out) == before

    # --drawing default with the same seed: the same probes, drawn the world's way.
    assert vlp_data([*args[:2], str(tmp_path / "default"), *args[3:], "--drawing", "default"]) == 0
    for name in SUGARCREPE_TYPES:
        a = json.loads((comp / f"{name}.json").read_text())
        d = json.loads((tmp_path / "default" / "compositional" / f"{name}.json").read_text())
        assert [semantics(r) for r in a.values()] == [semantics(r) for r in d.values()]
        first = a["0"]["filename"]
        default_images = tmp_path / "default" / "compositional" / "images"
        assert (comp / "images" / first).read_bytes() != (default_images / first).read_bytes()

    assert vlp_data([*args, "--drawing", "alt", "--seed", "1", "--overwrite"]) == 0
    assert _digest(out) != before
    assert not (tmp_path / "alt.partial").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--drawing", "sketchy"], "unknown drawing 'sketchy'; known: default, alt"),
        (["--image-size", "8"], "--image-size"),
        (["--heldout", "pink star"], "held-out combination"),
        (["--per-type", "0"], "--per-type"),
    ],
)
def test_shapes_probes_bad_arguments(tmp_path, capsys, extra, message):
    assert vlp_data(["shapes-probes", "--out", str(tmp_path / "p"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and err.startswith("vlp-data: error:")
    assert not (tmp_path / "p").exists()


def test_shapes_probes_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        vlp_data(["shapes-probes", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("--drawing", "default, alt", "--per-type", "probes_*", "compositional"):
        assert words in text, words

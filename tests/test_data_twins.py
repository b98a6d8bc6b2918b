"""Twins in the shapes world: each training sample's neighbour is an image its caption is exactly false
of, captioned in the same phrasing, drawn on the same background; the originals' bytes do not move."""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from data_pipelines.sources.shapes.captions import describe, reads_same
from data_pipelines.sources.shapes.samples import train_sample
from data_pipelines.sources.shapes.scene import INVERSE_RELATION, TWIN_STREAM, sample_rng
from data_pipelines.sources.shapes.twins import MIRROR, RECOLOUR, SWAP, twin
from tests.test_data_truth import FORBIDDEN, IMAGE_SIZE, PHRASE, REL, SEEN, is_true, scenes


def skeleton(text: str) -> str:
    """The caption's template: noun phrases (with or without a size) and the relation as placeholders."""
    return re.sub(REL, "REL", PHRASE.sub(lambda m: "NP+size" if m.group(1) else "NP", text))


def objects_ok(objects: list[dict]) -> bool:
    inside = all(0 < o["bbox"][0] < o["bbox"][2] < IMAGE_SIZE and 0 < o["bbox"][1] < o["bbox"][3] < IMAGE_SIZE
                 for o in objects)  # fmt: skip
    if len(objects) < 2:
        return inside
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = objects[0]["bbox"], objects[1]["bbox"]
    return inside and (ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0)


def check_pair(caption: str, objects: list[dict], twin_caption: str, twin_objects: list[dict]) -> None:
    assert is_true(caption, objects) and is_true(twin_caption, twin_objects), (caption, twin_caption)
    assert not is_true(caption, twin_objects), (caption, twin_objects)
    assert not is_true(twin_caption, objects), (twin_caption, objects)
    assert skeleton(caption) == skeleton(twin_caption), (caption, twin_caption)
    assert objects_ok(twin_objects) and not {(o["colour"], o["shape"]) for o in twin_objects} & FORBIDDEN


def test_twins_are_exactly_false_of_each_other():
    kinds: Counter[str] = Counter()
    first_choice: Counter[str] = Counter()
    for index, (scene, phrasing, record) in enumerate(scenes(4000)):
        other, kind = twin(scene, phrasing, sample_rng(0, "train", index, TWIN_STREAM), IMAGE_SIZE, FORBIDDEN)
        objects, twin_objects = scene.to_json()["objects"], other.to_json()["objects"]
        check_pair(record["caption"], objects, describe(other, phrasing), twin_objects)
        same = [(o["shape"], o["size"]) for o in objects] == [(o["shape"], o["size"]) for o in twin_objects]
        colours = [o["colour"] for o in objects], [o["colour"] for o in twin_objects]
        if kind == MIRROR:
            assert same and colours[0] == colours[1] and other.relation == INVERSE_RELATION[scene.relation]
        elif kind == SWAP:
            assert colours[1] == colours[0][::-1] and colours[0][0] != colours[0][1]
            assert [o["bbox"] for o in objects] == [o["bbox"] for o in twin_objects] and same
        else:
            assert kind == RECOLOUR and same and other.relation == scene.relation
            assert sum(a != b for a, b in zip(*colours, strict=True)) == 1
            assert len(objects) == 1 or reads_same(*scene.objects, phrasing)  # only the fallback
        kinds[kind if len(objects) == 2 else "single"] += 1
        a, b = scene.objects if len(objects) == 2 else (None, None)
        swappable = a is not None and a.colour != b.colour and (b.colour, a.shape) not in FORBIDDEN
        if swappable and (a.colour, b.shape) not in FORBIDDEN and not reads_same(a, b, phrasing):
            first_choice[kind] += 1  # both kinds were possible: the draw decided
    assert kinds[RECOLOUR] > 0 and kinds["single"] > 800
    share = first_choice[MIRROR] / (first_choice[MIRROR] + first_choice[SWAP])
    assert 0.45 < share < 0.55, first_choice


def members_of(world: Path):
    for tar in sorted((world / "train").glob("*.tar")):
        with tarfile.open(tar) as tf:
            files = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
        for name in sorted(files):
            if name.endswith(".json"):
                key = name[: -len(".json")]
                yield key, {n[len(key) + 1 :]: v for n, v in files.items() if n.split(".")[0] == key}


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=int)


def test_the_worlds_twins_on_disk(world):
    n = 0
    for key, members in members_of(world):
        assert set(members) == {"png", "txt", "json", "neighbour.png"}, key
        record = json.loads(members["json"])
        nb = record["neighbour"]
        assert nb["key"] == f"{key}-twin" and nb["twin"] in (MIRROR, SWAP, RECOLOUR)
        check_pair(record["caption"], record["objects"], nb["caption"], nb["objects"])
        for neg in nb["negatives"]:
            assert not is_true(neg["text"], nb["objects"]), (key, neg)
        # One background, one noise: the images differ only inside the two scenes' boxes.
        a, b = pixels(members["png"]), pixels(members["neighbour.png"])
        changed = np.zeros(a.shape[:2], bool)
        for o in record["objects"] + nb["objects"]:
            x0, y0, x1, y1 = o["bbox"]
            changed[y0:y1, x0:x1] = True
        assert np.array_equal(a[~changed], b[~changed]) and not np.array_equal(a, b), key
        n += 1
    assert n == 400


def test_twins_leave_the_original_samples_bytes_alone():
    for index in range(60):
        plain = train_sample(3, index, IMAGE_SIZE, SEEN, 0.3, twins=False)
        with_twin = train_sample(3, index, IMAGE_SIZE, SEEN, 0.3, twins=True)
        assert set(plain) == {"png", "txt", "json"} and set(with_twin) == set(plain) | {"neighbour.png"}
        assert plain["png"] == with_twin["png"] and plain["txt"] == with_twin["txt"]
        record = json.loads(with_twin["json"])
        del record["neighbour"]
        assert record == json.loads(plain["json"])

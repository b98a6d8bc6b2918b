"""Exactness of the shapes world, judged by a truth checker written here, independently of the generator:
every caption is true of its scene, and every negative, probe negative and twin caption is false.

The checker reads a caption's noun phrases ((size,) colour, shape) and its relation from the text, and
decides from the scene's objects (colour, shape, size, bbox) whether *some* assignment of distinct
objects to the noun phrases makes the claim hold.
"""

from __future__ import annotations

import re

from data_pipelines.negatives import types as ntypes
from data_pipelines.sources.shapes import DEFAULT_HELDOUT
from data_pipelines.sources.shapes.captions import SUGARCREPE_TYPES, sample_phrasing, scene_record
from data_pipelines.sources.shapes.samples import compositional_example
from data_pipelines.sources.shapes.scene import all_combos, sample_rng, sample_scene

NP = r"(?:an? )?(?:(small|large) )?(red|green|blue|yellow|purple|orange) (circle|square|triangle|star|cross|diamond)"
REL = r"(to the left of|to the right of|above|below)"
REL_NAME = {"to the left of": "left of", "to the right of": "right of", "above": "above", "below": "below"}
NAMED = re.compile(rf"^({NP}) and ({NP}), the (\w+) is {REL} the (\w+)$")
WITH_IT = re.compile(rf"^({NP}) with ({NP}) {REL} it$")
PLAIN_PAIR = re.compile(rf"({NP})(?: is)? {REL} ({NP})$")
PHRASE = re.compile(NP)

IMAGE_SIZE = 64
SEEN = [c for c in all_combos() if c not in set(DEFAULT_HELDOUT)]
FORBIDDEN = frozenset(all_combos()) - set(SEEN)


def holds(rel: str, x: dict, y: dict) -> bool:
    """x stands in ``rel`` to y: entirely on that side of it, and more along that axis than across."""
    (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = x["bbox"], y["bbox"]
    dx = (bx0 + bx1) / 2 - (ax0 + ax1) / 2  # > 0: y's centre is right of x's
    dy = (by0 + by1) / 2 - (ay0 + ay1) / 2  # > 0: y's centre is below x's
    return {
        "left of": ax1 <= bx0 and abs(dy) <= dx,
        "right of": bx1 <= ax0 and abs(dy) <= -dx,
        "above": ay1 <= by0 and abs(dx) <= dy,
        "below": by1 <= ay0 and abs(dx) <= -dy,
    }[rel]


def fits(phrase: tuple[str, str, str], o: dict) -> bool:
    size, colour, shape = phrase
    return o["colour"] == colour and o["shape"] == shape and (not size or o["size"] == size)


def claim(text: str) -> tuple[tuple, str | None, tuple | None]:
    """(subject phrase, relation, object phrase) of a caption; relation and object None for one object."""
    if m := NAMED.match(text):
        a, b = PHRASE.match(m.group(1)).groups(), PHRASE.match(m.group(5)).groups()
        by_shape = {a[2]: a, b[2]: b}
        assert len(by_shape) == 2 and {m.group(9), m.group(11)} == set(by_shape), text
        return by_shape[m.group(9)], REL_NAME[m.group(10)], by_shape[m.group(11)]
    if m := WITH_IT.match(text):  # "B with A R it": A stands in R to B
        return PHRASE.match(m.group(5)).groups(), REL_NAME[m.group(9)], PHRASE.match(m.group(1)).groups()
    if m := PLAIN_PAIR.search(text):
        return PHRASE.match(m.group(1)).groups(), REL_NAME[m.group(5)], PHRASE.match(m.group(6)).groups()
    phrases = PHRASE.findall(text)
    assert len(phrases) == 1 and not re.search(REL, text), text
    return phrases[0], None, None


def is_true(text: str, objects: list[dict]) -> bool:
    subject, rel, obj = claim(text)
    if rel is None:
        return any(fits(subject, o) for o in objects)
    return any(
        fits(subject, x) and fits(obj, y) and holds(rel, x, y)
        for i, x in enumerate(objects)
        for j, y in enumerate(objects)
        if i != j
    )


def test_checker_reads_every_template():
    a = {"colour": "red", "shape": "circle", "size": "small", "bbox": (2, 20, 18, 36)}
    b = {"colour": "blue", "shape": "star", "size": "large", "bbox": (30, 18, 56, 44)}
    objects = [a, b]
    true = [
        "a red circle to the left of a large blue star",
        "there is a small red circle to the left of a blue star",
        "a blue star is to the right of a red circle",
        "a blue star with a red circle to the left of it",
        "a picture of a red circle to the left of a blue star",
        "a blue star and a red circle, the star is to the right of the circle",
    ]
    for text in true:
        assert is_true(text, objects), text
    for text in ("a red circle to the right of a blue star", "a large red circle to the left of a blue star"):
        assert not is_true(text, objects), text
    twin = {**a, "colour": "red", "shape": "circle", "size": "large"}  # "a red circle" fits both
    assert is_true("a red circle to the left of a red circle", [a, twin | {"bbox": b["bbox"]}])
    assert is_true("a red circle to the right of a red circle", [a, twin | {"bbox": b["bbox"]}])


def scenes(n: int, seed: int = 0):
    """Training scenes as the world draws them (without pixels): (scene, phrasing, record)."""
    for index in range(n):
        rng = sample_rng(seed, "train", index)
        scene = sample_scene(rng, SEEN, IMAGE_SIZE, 0.3)
        phrasing = sample_phrasing(rng, scene)
        yield scene, phrasing, scene_record(scene, phrasing, rng, forbidden=FORBIDDEN)


def test_training_negatives_are_exactly_false():
    pairs = 0
    kinds: set[str] = set()
    for scene, _, record in scenes(4000):
        objects = scene.to_json()["objects"]
        assert is_true(record["caption"], objects), record
        for neg in record["negatives"]:
            kinds.add(neg["type"])
            assert not is_true(neg["text"], objects), (neg, record)
        pairs += len(objects) == 2
    assert pairs > 2000 and kinds == set(ntypes.TYPES)


def test_compositional_probes_are_exactly_false():
    # replace_rel most of all: its false negatives were the ones found (objects that read the same).
    per_kind = {kind: 150 for kind in SUGARCREPE_TYPES.values()} | {ntypes.REPLACE_RELATION: 1500}
    for split, combos, second, share in (
        ("compositional", SEEN, None, 1),
        ("compositional_heldout", all_combos(), list(DEFAULT_HELDOUT), 5),
    ):
        for t, (kind, n) in enumerate(per_kind.items()):
            for k in range(n // share):
                record, _ = compositional_example(0, split, t * 10_000 + k, kind, IMAGE_SIZE, combos, second)
                objects = record["scene"]["objects"]
                assert is_true(record["caption"], objects), record
                assert not is_true(record["negative_caption"], objects), (split, kind, record)

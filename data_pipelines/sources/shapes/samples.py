"""Whole samples of each split, each drawn from its own generator seeded by ``(seed, split, index)``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

from .captions import describe, negatives, sample_phrasing, scene_record
from .render import png_bytes, render
from .scene import INVERSE_RELATION, Scene, ShapeObject, all_combos, place, sample_rng, sample_scene


def train_sample(seed: int, index: int, image_size: int, combos: Sequence[tuple[str, str]], p_single: float) -> dict:
    """One training sample as tar members: png, txt, json. No combination outside ``combos``
    appears in its image, caption or negatives."""
    rng = sample_rng(seed, "train", index)
    scene = sample_scene(rng, combos, image_size, p_single)
    phrasing = sample_phrasing(rng, scene)
    record = scene_record(scene, phrasing, rng, forbidden=frozenset(all_combos()) - set(combos))
    image = render(scene, image_size, rng)
    return {
        "png": png_bytes(image),
        "txt": record["caption"].encode(),
        "json": json.dumps(record, sort_keys=True).encode(),
    }


def zeroshot_sample(seed: int, split: str, index: int, image_size: int, combo: tuple[str, str], label: int) -> dict:
    rng = sample_rng(seed, split, index)
    obj = ShapeObject(shape=combo[1], colour=combo[0], size=("small", "large")[int(rng.integers(2))])
    obj = place(obj, rng, image_size)
    image = render(Scene((obj,)), image_size, rng)
    return {"png": png_bytes(image), "cls": str(label).encode()}


def compositional_example(
    seed: int,
    split: str,
    index: int,
    kind: str,
    image_size: int,
    combos: Sequence[tuple[str, str]],
    second_combos: Sequence[tuple[str, str]] | None = None,
) -> tuple[dict, bytes]:
    """A two-object image with a caption and one negative of ``kind`` (SugarCrepe fields)."""
    rng = sample_rng(seed, split, index)
    while True:  # a few scenes admit no negative of this kind (e.g. equal colours for a swap)
        scene = sample_scene(rng, combos, image_size, p_single=0.0, second_combos=second_combos)
        if second_combos is not None and rng.random() < 0.5:
            scene = replace(scene, objects=scene.objects[::-1], relation=INVERSE_RELATION[scene.relation])
        phrasing = sample_phrasing(rng, scene)
        forbidden = frozenset() if second_combos is not None else frozenset(all_combos()) - set(combos)
        negs = negatives(scene, phrasing, rng, kinds=(kind,), forbidden=forbidden)
        if negs:
            break
    image = render(scene, image_size, rng)
    record = {"caption": describe(scene, phrasing), "negative_caption": negs[0]["text"], "scene": scene.to_json()}
    return record, png_bytes(image)

"""Whole samples of each split, each drawn from its own generator seeded by ``(seed, split, index)``."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from .captions import describe, negatives, sample_phrasing, scene_record
from .drawing import DEFAULT_DRAWING, Drawing
from .render import png_bytes, render
from .scene import (
    INVERSE_RELATION,
    ORDER_STREAM,
    PLACEMENT_STREAM,
    TWIN_STREAM,
    Scene,
    ShapeObject,
    all_combos,
    is_probe_split,
    place,
    sample_rng,
    sample_scene,
)
from .twins import twin

NEIGHBOUR_MEMBER = "neighbour.png"


def train_key(index: int) -> str:
    return f"{index:08d}"


def twin_key(index: int) -> str:
    return f"{train_key(index)}-twin"


def _shuffled(items: list, rng: np.random.Generator) -> list:
    return [items[int(i)] for i in rng.permutation(len(items))]


def train_sample(
    seed: int,
    index: int,
    image_size: int,
    combos: Sequence[tuple[str, str]],
    p_single: float,
    twins: bool = False,
) -> dict:
    """One training sample as tar members: png, txt, json (and with ``twins``, ``neighbour.png`` and
    the JSON's ``neighbour``). No combination outside ``combos`` appears in its images, captions or
    negatives. The negatives come in a per-sample seeded order, so the first K are not always the same
    K types."""
    rng = sample_rng(seed, "train", index)
    forbidden = frozenset(all_combos()) - set(combos)
    scene = sample_scene(rng, combos, image_size, p_single)
    phrasing = sample_phrasing(rng, scene)
    record = scene_record(scene, phrasing, rng, forbidden=forbidden)
    record["negatives"] = _shuffled(record["negatives"], sample_rng(seed, "train", index, ORDER_STREAM))
    render_rng = copy.deepcopy(rng)  # the generator as the original's drawing starts
    members = {"png": png_bytes(render(scene, image_size, rng)), "txt": record["caption"].encode()}
    if twins:
        # The twin's choices come from its own stream; it is drawn with the original's background,
        # noise and colour jitter, so the two images differ only where the scenes do.
        twin_rng = sample_rng(seed, "train", index, TWIN_STREAM)
        other, kind = twin(scene, phrasing, twin_rng, image_size, forbidden)
        negs = _shuffled(negatives(other, phrasing, twin_rng, forbidden=forbidden), twin_rng)
        members[NEIGHBOUR_MEMBER] = png_bytes(render(other, image_size, render_rng))
        record["neighbour"] = {
            "key": twin_key(index),
            "caption": describe(other, phrasing),
            "negatives": negs,
            "twin": kind,
            **other.to_json(),
        }
    members["json"] = json.dumps(record, sort_keys=True).encode()
    return members


def zeroshot_sample(
    seed: int,
    split: str,
    index: int,
    image_size: int,
    combo: tuple[str, str],
    label: int,
    drawing: Drawing = DEFAULT_DRAWING,
) -> dict:
    rng = sample_rng(seed, split, index)
    obj = ShapeObject(shape=combo[1], colour=combo[0], size=("small", "large")[int(rng.integers(2))])
    obj = place(obj, rng, image_size, drawing)
    image = render(Scene((obj,)), image_size, rng, drawing)
    return {"png": png_bytes(image), "cls": str(label).encode()}


def compositional_example(
    seed: int,
    split: str,
    index: int,
    kind: str,
    image_size: int,
    combos: Sequence[tuple[str, str]],
    second_combos: Sequence[tuple[str, str]] | None = None,
    drawing: Drawing = DEFAULT_DRAWING,
) -> tuple[dict, bytes]:
    """A two-object image with a caption and one negative of ``kind`` (SugarCrepe fields), sized,
    placed and drawn as ``drawing`` says."""
    rng = sample_rng(seed, split, index)
    # Probes place from their own stream, so every drawing of a probe has the same meaning (see scene.py).
    pos = sample_rng(seed, split, index, PLACEMENT_STREAM) if is_probe_split(split) else None
    while True:  # a few scenes admit no negative of this kind (e.g. equal colours for a swap)
        scene = sample_scene(
            rng, combos, image_size, p_single=0.0, second_combos=second_combos, drawing=drawing, placement_rng=pos
        )
        if second_combos is not None and rng.random() < 0.5:
            scene = replace(scene, objects=scene.objects[::-1], relation=INVERSE_RELATION[scene.relation])
        phrasing = sample_phrasing(rng, scene)
        forbidden = frozenset() if second_combos is not None else frozenset(all_combos()) - set(combos)
        negs = negatives(scene, phrasing, rng, kinds=(kind,), forbidden=forbidden)
        if negs:
            break
    image = render(scene, image_size, rng, drawing)
    record = {"caption": describe(scene, phrasing), "negative_caption": negs[0]["text"], "scene": scene.to_json()}
    return record, png_bytes(image)

"""Captions of scenes and their exact hard negatives (a changed scene's caption is false for the image)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from ...negatives import types as ntypes
from .scene import COLOURS, INVERSE_RELATION, SHAPES, Scene, ShapeObject

RELATION_PHRASE = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}

# The order in which a scene's negatives are made; each draw consumes the scene's generator, so the
# order is part of what makes the world's bytes.
NEGATIVE_TYPES: tuple[str, ...] = (
    ntypes.SWAP_ADJECTIVES,
    ntypes.SWAP_NOUNS,
    ntypes.REPLACE_ADJECTIVES,
    ntypes.REPLACE_NOUNS,
    ntypes.REPLACE_RELATION,
    ntypes.RESHUFFLE_ORDER,
)
# SugarCrepe file name -> the negative type of its probes here (its exact counterpart).
SUGARCREPE_TYPES: dict[str, str] = {name: kinds[0] for name, kinds in ntypes.SUGARCREPE_TYPES.items() if kinds}
ZEROSHOT_TEMPLATES: tuple[str, ...] = (
    "a photo of the {c}.",
    "the {c}.",
    "one {c}.",
    "a picture showing one {c}.",
)

_SINGLE_TEMPLATES = (
    "{A}",
    "a photo of {A}",
    "there is {A}",
    "{A} on a plain background",
    "a picture showing {A}",
    "one {A_bare}",
)
_PAIR_TEMPLATES = (
    "{A} {R} {B}",
    "there is {A} {R} {B}",
    "{A} is {R} {B}",
    "{B} is {R_inv} {A}",
    "a picture of {A} {R} {B}",
    "{B} with {A} {R} it",
    "{A} and {B}, the {a} is {R} the {b}",  # only when the two shapes differ
)
_NAMED_PAIR_TEMPLATE = len(_PAIR_TEMPLATES) - 1


@dataclass(frozen=True)
class Phrasing:
    template: int
    sizes: bool  # whether sizes are mentioned


def classname(colour: str, shape: str) -> str:
    return f"{colour} {shape}"


def sample_phrasing(rng: np.random.Generator, scene: Scene) -> Phrasing:
    if len(scene.objects) == 1:
        template = int(rng.integers(len(_SINGLE_TEMPLATES)))
    else:
        different = scene.objects[0].shape != scene.objects[1].shape
        n = len(_PAIR_TEMPLATES) if different else _NAMED_PAIR_TEMPLATE
        template = int(rng.integers(n))
    return Phrasing(template=template, sizes=bool(rng.random() < 0.6))


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _noun_phrase(obj: ShapeObject, sizes: bool) -> str:
    return f"{obj.size} {obj.colour} {obj.shape}" if sizes else f"{obj.colour} {obj.shape}"


def describe(scene: Scene, phrasing: Phrasing) -> str:
    """The caption of ``scene`` in the given phrasing."""
    a = scene.objects[0]
    if len(scene.objects) == 1:
        bare = _noun_phrase(a, phrasing.sizes)
        return _SINGLE_TEMPLATES[phrasing.template].format(A=_with_article(bare), A_bare=bare)
    b = scene.objects[1]
    template = _PAIR_TEMPLATES[phrasing.template]
    if a.shape == b.shape and phrasing.template == _NAMED_PAIR_TEMPLATE:
        template = _PAIR_TEMPLATES[0]  # unreachable for sampled phrasings; kept for hand-made scenes
    return template.format(
        A=_with_article(_noun_phrase(a, phrasing.sizes)),
        B=_with_article(_noun_phrase(b, phrasing.sizes)),
        R=RELATION_PHRASE[scene.relation],
        R_inv=RELATION_PHRASE[INVERSE_RELATION[scene.relation]],
        a=a.shape,
        b=b.shape,
    )


def reads_same(a: ShapeObject, b: ShapeObject, phrasing: Phrasing) -> bool:
    """Whether the two objects are described identically in this phrasing (sizes omitted: a small and
    a large red circle are both "a red circle"); then no caption can tell them apart."""
    return _noun_phrase(a, phrasing.sizes) == _noun_phrase(b, phrasing.sizes)


def _negative_scene(
    scene: Scene, kind: str, phrasing: Phrasing, rng: np.random.Generator, forbidden: frozenset[tuple[str, str]]
) -> Scene | None:
    """A scene that differs from ``scene`` in one structural way; its caption is false for the image."""
    objs = scene.objects
    if (
        kind in (ntypes.SWAP_ADJECTIVES, ntypes.SWAP_NOUNS, ntypes.REPLACE_RELATION, ntypes.RESHUFFLE_ORDER)
        and len(objs) < 2
    ):
        return None
    if kind == ntypes.SWAP_ADJECTIVES:
        a, b = objs
        if a.colour != b.colour:
            return replace(scene, objects=(replace(a, colour=b.colour), replace(b, colour=a.colour)))
        if phrasing.sizes and a.size != b.size:
            return replace(scene, objects=(replace(a, size=b.size), replace(b, size=a.size)))
        return None
    if kind == ntypes.SWAP_NOUNS:
        a, b = objs
        if a.shape == b.shape:
            return None
        return replace(scene, objects=(replace(a, shape=b.shape), replace(b, shape=a.shape)))
    if kind == ntypes.REPLACE_RELATION:
        if reads_same(objs[0], objs[1], phrasing):
            return None  # "a red circle left of a red circle" flipped is true of the same image
        return replace(scene, relation=INVERSE_RELATION[scene.relation])
    if kind == ntypes.RESHUFFLE_ORDER:
        a, b = objs
        if reads_same(a, b, phrasing):
            return None  # the two objects read the same: reordering changes nothing
        return replace(scene, objects=(b, a))
    i = int(rng.integers(len(objs)))
    target = objs[i]
    if kind == ntypes.REPLACE_ADJECTIVES:
        choices = [c for c in COLOURS if c != target.colour and (c, target.shape) not in forbidden]
        if not choices:
            return None
        new = replace(target, colour=choices[int(rng.integers(len(choices)))])
    elif kind == ntypes.REPLACE_NOUNS:
        # The "the {a} is ... the {b}" phrasing needs two different shapes to stay the same phrasing.
        taken = {o.shape for o in objs} if phrasing.template == _NAMED_PAIR_TEMPLATE else {target.shape}
        choices = [s for s in SHAPES if s not in taken and (target.colour, s) not in forbidden]
        if not choices:
            return None
        new = replace(target, shape=choices[int(rng.integers(len(choices)))])
    else:
        raise ValueError(f"unknown negative type {kind!r}")
    return replace(scene, objects=objs[:i] + (new,) + objs[i + 1 :])


def negatives(
    scene: Scene,
    phrasing: Phrasing,
    rng: np.random.Generator,
    kinds: Sequence[str] = NEGATIVE_TYPES,
    forbidden: frozenset[tuple[str, str]] = frozenset(),
) -> list[dict]:
    """Exact hard negatives, at most one per type, each ``{"text", "type"}``; never the caption,
    never a duplicate, and never naming a ``forbidden`` (colour, shape) pair (held-out pairs must not
    reach the text tower through negatives either)."""
    seen = {describe(scene, phrasing)}
    out = []
    for kind in kinds:
        neg = _negative_scene(scene, kind, phrasing, rng, forbidden)
        if neg is None or any((o.colour, o.shape) in forbidden for o in neg.objects):
            continue
        text = describe(neg, phrasing)
        if text not in seen:  # two types can coincide, e.g. swapping nouns vs. order of equal colours
            seen.add(text)
            out.append({"text": text, "type": kind})
    return out


def scene_record(
    scene: Scene, phrasing: Phrasing, rng: np.random.Generator, forbidden: frozenset[tuple[str, str]] = frozenset()
) -> dict:
    return {
        **scene.to_json(),
        "caption": describe(scene, phrasing),
        "phrasing": asdict(phrasing),
        "negatives": negatives(scene, phrasing, rng, forbidden=forbidden),
    }

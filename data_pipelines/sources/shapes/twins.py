"""Twins: for every training scene, a second scene that its caption is exactly false of (and whose own
caption is exactly false of the first), the world's counterpart of NegCLIP's hard-negative image.

* two objects, ``mirror_relation``: the scene mirrored along its relation's axis, so the objects trade
  sides and the relation is inverted; false only when the two objects read differently;
* two objects, ``swap_colours``: the same layout with the two colours exchanged; false only when the
  colours differ (and allowed only when no held-out pair results);
* ``replace_colour``: one object recoloured (never into a held-out pair); the only twin of a single
  object, and the fallback when neither of the above is exactly false.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .captions import Phrasing, reads_same
from .scene import COLOURS, INVERSE_RELATION, Scene, ShapeObject

MIRROR = "mirror_relation"
SWAP = "swap_colours"
RECOLOUR = "replace_colour"
TWIN_KINDS: tuple[str, ...] = (MIRROR, SWAP, RECOLOUR)


def mirror(scene: Scene, image_size: int) -> Scene:
    """``scene`` reflected left-right (a horizontal relation) or top-bottom (a vertical one).

    Reflection keeps every margin and the placement's guarantees (no overlap, one dominant axis).
    """
    horizontal = scene.relation in ("left of", "right of")

    def flip(o: ShapeObject) -> ShapeObject:
        x0, y0, x1, y1 = o.bbox  # x1, y1 exclusive: pixel x goes to image_size - 1 - x
        if horizontal:
            return replace(o, bbox=(image_size - x1, y0, image_size - x0, y1))
        return replace(o, bbox=(x0, image_size - y1, x1, image_size - y0))

    return replace(scene, objects=tuple(flip(o) for o in scene.objects), relation=INVERSE_RELATION[scene.relation])


def _swapped(scene: Scene, forbidden: frozenset[tuple[str, str]]) -> Scene | None:
    a, b = scene.objects
    if a.colour == b.colour or (b.colour, a.shape) in forbidden or (a.colour, b.shape) in forbidden:
        return None
    return replace(scene, objects=(replace(a, colour=b.colour), replace(b, colour=a.colour)))


def recolour_choices(obj: ShapeObject, forbidden: frozenset[tuple[str, str]]) -> list[str]:
    return [c for c in COLOURS if c != obj.colour and (c, obj.shape) not in forbidden]


def _recoloured(scene: Scene, rng: np.random.Generator, forbidden: frozenset[tuple[str, str]]) -> Scene:
    objs = scene.objects
    first = int(rng.integers(len(objs)))
    for i in (first, *(j for j in range(len(objs)) if j != first)):
        choices = recolour_choices(objs[i], forbidden)
        if choices:
            new = replace(objs[i], colour=choices[int(rng.integers(len(choices)))])
            return replace(scene, objects=objs[:i] + (new,) + objs[i + 1 :])
    # WorldConfig.validate refuses held-out sets that leave a trained shape a single colour.
    raise ValueError(f"no allowed colour to recolour {[(o.colour, o.shape) for o in objs]} into")


def twin(
    scene: Scene,
    phrasing: Phrasing,
    rng: np.random.Generator,
    image_size: int,
    forbidden: frozenset[tuple[str, str]] = frozenset(),
) -> tuple[Scene, str]:
    """The twin of ``scene`` and its kind; ``rng`` is the twin's own stream (even odds of mirror or swap)."""
    if len(scene.objects) == 1:
        return _recoloured(scene, rng, forbidden), RECOLOUR
    a, b = scene.objects
    order = (MIRROR, SWAP) if rng.random() < 0.5 else (SWAP, MIRROR)
    for kind in order:
        if kind == MIRROR and not reads_same(a, b, phrasing):
            return mirror(scene, image_size), MIRROR
        if kind == SWAP:
            swapped = _swapped(scene, forbidden)
            if swapped is not None:
                return swapped, SWAP
    # Reached only when the two objects read the same (hence share a colour): recolouring one of
    # them leaves a single object that fits the caption's two noun phrases.
    return _recoloured(scene, rng, forbidden), RECOLOUR

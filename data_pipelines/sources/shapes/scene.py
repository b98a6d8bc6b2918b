"""Scenes of the shapes world: objects, their colours, shapes and sizes, and where they are placed.

Placement makes every relation unambiguous: two objects never overlap, and one that is "left of" the
other is far more to the left than above or below it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from .drawing import DEFAULT_DRAWING, Drawing

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 60),
    "blue": (35, 75, 215),
    "yellow": (235, 205, 30),
    "purple": (135, 55, 175),
    "orange": (245, 135, 25),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond")
# Side of the bounding square / image side, in the default drawing (a Drawing may change them).
SIZES: dict[str, float] = dict(zip(("small", "large"), DEFAULT_DRAWING.sizes, strict=True))
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
INVERSE_RELATION = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

# One held-out combination per colour and per shape, so every colour and every shape is still seen
# in training, just never in these pairings.
DEFAULT_HELDOUT: tuple[tuple[str, str], ...] = (
    ("red", "star"),
    ("green", "triangle"),
    ("blue", "cross"),
    ("yellow", "square"),
    ("purple", "diamond"),
    ("orange", "circle"),
)
# The probes of ``vlp-data shapes-probes`` ("probes_" + a world split) draw from streams of their own, so
# none of their scenes is a training sample's or one of the world's own probes (whatever the drawing).
# A split's code is the second entry of every one of its samples' seeds: (seed, code, index[, stream]).
_SPLIT_CODES = {
    "train": 1,
    "zeroshot": 2,
    "heldout": 3,
    "compositional": 4,
    "compositional_heldout": 5,
    "probes_zeroshot": 6,
    "probes_heldout": 7,
    "probes_compositional": 8,
    "probes_compositional_heldout": 9,
}


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    colour: str
    size: str
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)  # x0, y0, x1, y1 in pixels (x1, y1 exclusive)


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]
    relation: str | None = None  # relation of objects[0] to objects[1]

    def to_json(self) -> dict:
        return {"objects": [asdict(o) for o in self.objects], "relation": self.relation}


def all_combos() -> list[tuple[str, str]]:
    return [(c, s) for c in COLOURS for s in SHAPES]


def parse_heldout(text: str) -> tuple[tuple[str, str], ...]:
    """Parse ``"red star,green triangle"`` (or ``"none"``) into (colour, shape) pairs."""
    if text.strip().lower() in ("", "none"):
        return ()
    pairs = []
    for item in text.split(","):
        words = item.strip().replace(":", " ").split()
        if len(words) != 2 or words[0] not in COLOURS or words[1] not in SHAPES:
            raise ValueError(
                f"held-out combination {item.strip()!r} must be 'COLOUR SHAPE' with colour in "
                f"{sorted(COLOURS)} and shape in {list(SHAPES)}"
            )
        pairs.append((words[0], words[1]))
    return tuple(pairs)


# Further, independent streams of a sample (stream 0 is the sample's own, unchanged since format 1):
# drawing a twin or ordering the negatives must not shift what the sample itself draws.
TWIN_STREAM = 1
ORDER_STREAM = 2
# The probes' splits place objects from a stream of their own: a drawing changes the ranges of the
# placement's draws, and numpy draws nothing for a range of one value, so placing from the sample's own
# stream would let a drawing shift every later draw (the caption, the negative) in ~4% of scenes.
PLACEMENT_STREAM = 3
PROBE_SPLIT_PREFIX = "probes_"


def is_probe_split(split: str) -> bool:
    return split.startswith(PROBE_SPLIT_PREFIX)


def sample_rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODES[split], index, *([stream] if stream else [])])


def _side(size: str, image_size: int, drawing: Drawing = DEFAULT_DRAWING) -> int:
    return drawing.side(size, image_size)


def _place_single(
    rng: np.random.Generator, side: int, image_size: int, drawing: Drawing = DEFAULT_DRAWING
) -> tuple[int, int, int, int]:
    margin = drawing.margin(image_size)
    x0 = int(rng.integers(margin, image_size - margin - side + 1))
    y0 = int(rng.integers(margin, image_size - margin - side + 1))
    return (x0, y0, x0 + side, y0 + side)


def _place_left_of(
    rng: np.random.Generator, side_a: int, side_b: int, image_size: int, drawing: Drawing = DEFAULT_DRAWING
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """Boxes with A entirely left of B and their vertical offset at most half the horizontal one,
    so that 'left of' is the only natural description."""
    margin, gap = drawing.margin(image_size), drawing.gap(image_size)
    ax0 = int(rng.integers(margin, image_size - margin - side_a - gap - side_b + 1))
    bx0 = int(rng.integers(ax0 + side_a + gap, image_size - margin - side_b + 1))
    dx = (bx0 + side_b / 2) - (ax0 + side_a / 2)
    ay0 = int(rng.integers(margin, image_size - margin - side_a + 1))
    acy = ay0 + side_a / 2
    lo = max(margin, math.ceil(acy - dx / 2 - side_b / 2))
    hi = min(image_size - margin - side_b, math.floor(acy + dx / 2 - side_b / 2))
    by0 = int(rng.integers(lo, hi + 1))
    return (ax0, ay0, ax0 + side_a, ay0 + side_a), (bx0, by0, bx0 + side_b, by0 + side_b)


def _transpose(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return (y0, x0, y1, x1)


def place(
    obj: ShapeObject, rng: np.random.Generator, image_size: int, drawing: Drawing = DEFAULT_DRAWING
) -> ShapeObject:
    """``obj`` alone at a random position (whole, off the border)."""
    return replace(obj, bbox=_place_single(rng, _side(obj.size, image_size, drawing), image_size, drawing))


def sample_object(rng: np.random.Generator, combos: Sequence[tuple[str, str]]) -> ShapeObject:
    colour, shape = combos[int(rng.integers(len(combos)))]
    size = ("small", "large")[int(rng.integers(2))]
    return ShapeObject(shape=shape, colour=colour, size=size)


def sample_scene(
    rng: np.random.Generator,
    combos: Sequence[tuple[str, str]],
    image_size: int,
    p_single: float,
    second_combos: Sequence[tuple[str, str]] | None = None,
    drawing: Drawing = DEFAULT_DRAWING,
    placement_rng: np.random.Generator | None = None,
) -> Scene:
    """A random scene; objects take their (colour, shape) from ``combos`` (the second object of a
    pair from ``second_combos`` when given), sized and placed as ``drawing`` says.

    Positions come from ``placement_rng`` when given (else from ``rng``, as the world's samples always
    did); then what ``rng`` draws, now and later, does not depend on the drawing."""
    pos = placement_rng if placement_rng is not None else rng
    if rng.random() < p_single:
        return Scene((place(sample_object(rng, combos), pos, image_size, drawing),))
    a = sample_object(rng, combos)
    b = sample_object(rng, second_combos if second_combos is not None else combos)
    relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
    sa, sb = _side(a.size, image_size, drawing), _side(b.size, image_size, drawing)
    if relation in ("left of", "above"):
        box_a, box_b = _place_left_of(pos, sa, sb, image_size, drawing)
    else:  # right of / below: B is left of (above) A
        box_b, box_a = _place_left_of(pos, sb, sa, image_size, drawing)
    if relation in ("above", "below"):
        box_a, box_b = _transpose(box_a), _transpose(box_b)
    return Scene((replace(a, bbox=box_a), replace(b, bbox=box_b)), relation)

"""The shapes world: a synthetic, compositional image-caption world.

Every scene holds one or two coloured shapes on a lightly noisy background; two-object scenes
carry a spatial relation. Because every caption is derived from a structured scene, the truth is
known exactly, which makes the world useful for three things at once:

* training data that needs no download (``train/``),
* a zero-shot classification set in CLIP_benchmark's ``wds`` layout (``zeroshot/``), with a split
  of (colour, shape) combinations that never appear in training (``heldout``),
* SugarCrepe-format compositional probes whose negatives are exactly false (``compositional/``).

Every sample is drawn from its own generator seeded by ``(seed, split, index)``, so output does not
depend on worker count or order, and the same arguments give byte-identical files.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 60),
    "blue": (35, 75, 215),
    "yellow": (235, 205, 30),
    "purple": (135, 55, 175),
    "orange": (245, 135, 25),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond")
SIZES: dict[str, float] = {"small": 0.25, "large": 0.4}  # side of the bounding square / image side
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
INVERSE_RELATION = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
RELATION_PHRASE = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}

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

# Negative types shared with data_pipelines.negatives (DeGLA's five plus replace_relation).
NEGATIVE_TYPES: tuple[str, ...] = (
    "swap_adjectives",
    "swap_nouns",
    "replace_adjectives",
    "replace_nouns",
    "replace_relation",
    "reshuffle_order",
)
# SugarCrepe file name -> our negative type.
SUGARCREPE_TYPES: dict[str, str] = {
    "swap_att": "swap_adjectives",
    "swap_obj": "swap_nouns",
    "replace_att": "replace_adjectives",
    "replace_obj": "replace_nouns",
    "replace_rel": "replace_relation",
}
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
_SPLIT_CODES = {"train": 1, "zeroshot": 2, "heldout": 3, "compositional": 4, "compositional_heldout": 5}
_SUPERSAMPLE = 4


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


@dataclass(frozen=True)
class Phrasing:
    template: int
    sizes: bool  # whether sizes are mentioned


def all_combos() -> list[tuple[str, str]]:
    return [(c, s) for c in COLOURS for s in SHAPES]


def classname(colour: str, shape: str) -> str:
    return f"{colour} {shape}"


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


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_CODES[split], index])


# ---------------------------------------------------------------- scene sampling


def _side(size: str, image_size: int) -> int:
    return max(4, round(SIZES[size] * image_size))


def _place_single(rng: np.random.Generator, side: int, image_size: int) -> tuple[int, int, int, int]:
    margin = max(1, image_size // 32)
    x0 = int(rng.integers(margin, image_size - margin - side + 1))
    y0 = int(rng.integers(margin, image_size - margin - side + 1))
    return (x0, y0, x0 + side, y0 + side)


def _place_left_of(
    rng: np.random.Generator, side_a: int, side_b: int, image_size: int
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """Boxes with A entirely left of B and their vertical offset at most half the horizontal one,
    so that 'left of' is the only natural description."""
    margin = max(1, image_size // 32)
    gap = max(2, image_size // 16)
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
) -> Scene:
    """A random scene; objects take their (colour, shape) from ``combos`` (the second object of a
    pair from ``second_combos`` when given)."""
    if rng.random() < p_single:
        obj = sample_object(rng, combos)
        return Scene((replace(obj, bbox=_place_single(rng, _side(obj.size, image_size), image_size)),))
    a = sample_object(rng, combos)
    b = sample_object(rng, second_combos if second_combos is not None else combos)
    relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
    sa, sb = _side(a.size, image_size), _side(b.size, image_size)
    if relation in ("left of", "above"):
        box_a, box_b = _place_left_of(rng, sa, sb, image_size)
    else:  # right of / below: B is left of (above) A
        box_b, box_a = _place_left_of(rng, sb, sa, image_size)
    if relation in ("above", "below"):
        box_a, box_b = _transpose(box_a), _transpose(box_b)
    return Scene((replace(a, bbox=box_a), replace(b, bbox=box_b)), relation)


def sample_phrasing(rng: np.random.Generator, scene: Scene) -> Phrasing:
    if len(scene.objects) == 1:
        template = int(rng.integers(len(_SINGLE_TEMPLATES)))
    else:
        different = scene.objects[0].shape != scene.objects[1].shape
        n = len(_PAIR_TEMPLATES) if different else _NAMED_PAIR_TEMPLATE
        template = int(rng.integers(n))
    return Phrasing(template=template, sizes=bool(rng.random() < 0.6))


# ---------------------------------------------------------------- rendering


def _polygon(shape: str, box: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if shape == "triangle":
        return [(cx, y0), (x1, y1), (x0, y1)]
    if shape == "diamond":
        return [(cx, y0), (x1, cy), (cx, y1), (x0, cy)]
    if shape == "cross":  # a plus sign with arms a third of the side wide
        a = (x1 - x0) / 6
        return [
            (cx - a, y0),
            (cx + a, y0),
            (cx + a, cy - a),
            (x1, cy - a),
            (x1, cy + a),
            (cx + a, cy + a),
            (cx + a, y1),
            (cx - a, y1),
            (cx - a, cy + a),
            (x0, cy + a),
            (x0, cy - a),
            (cx - a, cy - a),
        ]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.45 * r
            ang = -math.pi / 2 + math.pi / 5 * k
            pts.append((cx + rad * math.cos(ang), cy + rad * math.sin(ang)))
        return pts
    raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene, image_size: int, rng: np.random.Generator) -> Image.Image:
    """Draw the scene (anti-aliased by supersampling) on a light background with mild noise."""
    base = rng.integers(200, 241) + rng.integers(-8, 9, size=3)
    big = image_size * _SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), tuple(int(v) for v in base))
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        colour = tuple(int(np.clip(v + rng.integers(-15, 16), 0, 255)) for v in COLOURS[obj.colour])
        box = tuple(v * _SUPERSAMPLE for v in obj.bbox)
        box = (box[0], box[1], box[2] - 1, box[3] - 1)
        if obj.shape == "circle":
            draw.ellipse(box, fill=colour)
        elif obj.shape == "square":
            inset = (box[2] - box[0]) * 0.06  # equalise the visual area with the other shapes
            draw.rectangle((box[0] + inset, box[1] + inset, box[2] - inset, box[3] - inset), fill=colour)
        else:
            draw.polygon(_polygon(obj.shape, box), fill=colour)
    small = canvas.resize((image_size, image_size), Image.Resampling.BOX)
    arr = np.asarray(small, dtype=np.int16) + rng.normal(0.0, 4.0, size=(image_size, image_size, 3)).round().astype(
        np.int16
    )
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


# ---------------------------------------------------------------- captions and negatives


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


def _negative_scene(
    scene: Scene, kind: str, phrasing: Phrasing, rng: np.random.Generator, forbidden: frozenset[tuple[str, str]]
) -> Scene | None:
    """A scene that differs from ``scene`` in one structural way; its caption is false for the image."""
    objs = scene.objects
    if kind in ("swap_adjectives", "swap_nouns", "replace_relation", "reshuffle_order") and len(objs) < 2:
        return None
    if kind == "swap_adjectives":
        a, b = objs
        if a.colour != b.colour:
            return replace(scene, objects=(replace(a, colour=b.colour), replace(b, colour=a.colour)))
        if phrasing.sizes and a.size != b.size:
            return replace(scene, objects=(replace(a, size=b.size), replace(b, size=a.size)))
        return None
    if kind == "swap_nouns":
        a, b = objs
        if a.shape == b.shape:
            return None
        return replace(scene, objects=(replace(a, shape=b.shape), replace(b, shape=a.shape)))
    if kind == "replace_relation":
        return replace(scene, relation=INVERSE_RELATION[scene.relation])
    if kind == "reshuffle_order":
        a, b = objs
        if describe(Scene((a,)), Phrasing(0, phrasing.sizes)) == describe(Scene((b,)), Phrasing(0, phrasing.sizes)):
            return None  # the two objects read the same: reordering changes nothing
        return replace(scene, objects=(b, a))
    i = int(rng.integers(len(objs)))
    target = objs[i]
    if kind == "replace_adjectives":
        choices = [c for c in COLOURS if c != target.colour and (c, target.shape) not in forbidden]
        if not choices:
            return None
        new = replace(target, colour=choices[int(rng.integers(len(choices)))])
    elif kind == "replace_nouns":
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


def scene_from_json(record: dict) -> Scene:
    objs = tuple(ShapeObject(o["shape"], o["colour"], o["size"], tuple(o["bbox"])) for o in record["objects"])
    return Scene(objs, record.get("relation"))


# ---------------------------------------------------------------- whole samples


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
    obj = replace(obj, bbox=_place_single(rng, _side(obj.size, image_size), image_size))
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

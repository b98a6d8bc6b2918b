"""Drawing a scene: anti-aliased shapes on a light, mildly noisy background, saved as PNG."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw

from .scene import COLOURS, Scene

_SUPERSAMPLE = 4


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

"""Drawing a scene as a :class:`~.drawing.Drawing` says, saved as PNG.

The default drawing: anti-aliased shapes on a light, mildly noisy background (``ALT_DRAWING``: see
:mod:`.drawing`)."""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageDraw

from .drawing import ALT_DRAWING, DEFAULT_DRAWING, DRAWINGS, Drawing, get_drawing
from .scene import COLOURS, Scene

__all__ = ["ALT_DRAWING", "DEFAULT_DRAWING", "DRAWINGS", "Drawing", "get_drawing", "png_bytes", "render"]


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


def _background(base: np.ndarray, big: int, gradient: int) -> Image.Image:
    """``base`` at the top, ``gradient`` levels brighter at the bottom, linear in between."""
    ramp = np.linspace(0.0, float(gradient), big).round().astype(np.int16)
    arr = base.astype(np.int16)[None, None, :] + ramp[:, None, None] + np.zeros((1, big, 1), np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def render(scene: Scene, image_size: int, rng: np.random.Generator, drawing: Drawing = DEFAULT_DRAWING) -> Image.Image:
    """Draw the scene as ``drawing`` says (by default: anti-aliased by supersampling, on a light
    background with mild noise; byte-identical to the world's images before drawings existed)."""
    d = drawing
    # The default drawing's draws, in the default's order: its pixels must not change.
    base = rng.integers(d.background[0], d.background[1] + 1) + rng.integers(
        -d.background_tint, d.background_tint + 1, size=3
    )
    ss = d.supersample
    big = image_size * ss
    if d.gradient:
        canvas = _background(base, big, d.gradient)
    else:
        canvas = Image.new("RGB", (big, big), tuple(int(v) for v in base))
    draw = ImageDraw.Draw(canvas)
    jitter = d.colour_jitter
    for obj in scene.objects:
        colour = tuple(int(np.clip(v + rng.integers(-jitter, jitter + 1), 0, 255)) for v in COLOURS[obj.colour])
        # An outline is a darker shade of the object's own colour, so it adds an edge, not a colour.
        line = {}
        if d.outline_px:
            line = {"outline": tuple(int(v * d.outline_shade) for v in colour), "width": d.outline_px * ss}
        box = tuple(v * ss for v in obj.bbox)
        box = (box[0], box[1], box[2] - 1, box[3] - 1)
        if obj.shape == "circle":
            draw.ellipse(box, fill=colour, **line)
        elif obj.shape == "square":
            inset = (box[2] - box[0]) * 0.06  # equalise the visual area with the other shapes
            draw.rectangle((box[0] + inset, box[1] + inset, box[2] - inset, box[3] - inset), fill=colour, **line)
        else:
            draw.polygon(_polygon(obj.shape, box), fill=colour, **line)
    small = canvas.resize((image_size, image_size), Image.Resampling.BOX) if ss > 1 else canvas
    arr = np.asarray(small, dtype=np.int16) + rng.normal(0.0, d.noise, size=(image_size, image_size, 3)).round().astype(
        np.int16
    )
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()

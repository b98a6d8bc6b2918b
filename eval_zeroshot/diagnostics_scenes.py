"""The relation probe's data: fresh two-object scenes of the shapes world, drawn from a seeded stream no
world sample or probe uses, and their labels (the targets of :data:`TARGETS`).

The label. With ``sample_scene`` the first-named object (``objects[0]``) is drawn exactly like the
second, so nothing in the image says which of the two is named first: "relation of objects[0] to
objects[1]" can only be guessed up to its axis from pixels (best possible accuracy 0.5, chance 0.25).
The probe therefore keeps scenes whose two objects differ in colour and names the one whose colour comes
first in ``COLOURS`` first (the scene re-expressed, relation inverted when swapped): the target
``relation`` is then the relation of objects[0] to objects[1] *and* visible, as in a ``replace_rel``
probe where the caption names the objects. The label as sampled is reported too
(``relation_as_sampled``, ceiling 0.5), and ``colour`` (the colour of objects[0]) is a sanity reference
that needs no relation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

# The world's generators are default_rng([seed, split code (1..9), index, (stream)]): with 99 in the
# split code's place, no probe scene is one of the world's samples or probes.
PROBE_STREAM = 99

# target -> (number of classes, best possible accuracy from the image alone)
TARGETS: dict[str, tuple[int, float]] = {"relation": (4, 1.0), "relation_as_sampled": (4, 0.5), "colour": (6, 1.0)}


def _drawing_kw(drawing: object | None) -> dict:
    # Only passed when given: sample_scene / render without a ``drawing`` keyword still work.
    return {} if drawing is None else {"drawing": drawing}


def probe_scenes(n: int, image_size: int, seed: int, drawing: object | None = None) -> list[tuple]:
    """``n`` fresh two-object scenes: ``(scene, sampled, image)`` with ``scene`` in colour order (see the
    module's docstring), ``sampled`` as ``sample_scene`` drew it, ``image`` the PIL rendering.

    Scene ``i`` draws from ``default_rng([seed, PROBE_STREAM, i])``; scenes whose objects share a colour
    are skipped (their order would not be visible), so the result depends only on ``seed`` and ``n``.
    """
    # Looked up when called: the shapes world loads only when scenes are drawn, and a stand-in put in
    # those modules (as the tests do) is the one used.
    from data_pipelines.sources.shapes.render import render
    from data_pipelines.sources.shapes.scene import COLOURS, INVERSE_RELATION, all_combos, sample_scene

    order = list(COLOURS)
    combos = all_combos()
    out = []
    i = 0
    while len(out) < n:
        rng = np.random.default_rng([seed, PROBE_STREAM, i])
        i += 1
        sampled = sample_scene(rng, combos, image_size, p_single=0.0, **_drawing_kw(drawing))
        a, b = sampled.objects
        if a.colour == b.colour:
            continue
        scene = sampled
        if order.index(a.colour) > order.index(b.colour):
            scene = replace(sampled, objects=(b, a), relation=INVERSE_RELATION[sampled.relation])
        out.append((scene, sampled, render(sampled, image_size, rng, **_drawing_kw(drawing))))
    return out


def probe_labels(scenes: Sequence[tuple]) -> dict[str, torch.Tensor]:
    """The targets of :data:`TARGETS` for ``probe_scenes``' output, as class indices."""
    from data_pipelines.sources.shapes.scene import COLOURS, RELATIONS

    colours = list(COLOURS)
    return {
        "relation": torch.tensor([RELATIONS.index(s.relation) for s, _, _ in scenes]),
        "relation_as_sampled": torch.tensor([RELATIONS.index(x.relation) for _, x, _ in scenes]),
        "colour": torch.tensor([colours.index(s.objects[0].colour) for s, _, _ in scenes]),
    }

"""Probes of the shapes world in another drawing (``vlp-data shapes-probes``): its compositional probes and
zero-shot sets only, drawn as a named :class:`~.drawing.Drawing` (``alt``: one no training sample uses).

Layout of ``OUT`` (the world's own ``compositional/`` and ``zeroshot/`` layouts, so ``vlp-eval
compositional --benchmark shapes --data OUT/compositional`` and ``vlp-eval zeroshot --dataset
OUT/zeroshot`` read it as they read a world's)::

    shapes_probes.json                manifest: drawing (name and parameters), arguments, counts
    compositional/{swap_att,...}.json SugarCrepe format, images in compositional/images/
    compositional/heldout/...         every example contains a held-out combination
    zeroshot/classnames.txt, zeroshot_classification_templates.txt
    zeroshot/test/{0..N-1}.tar, nshards.txt      seen combinations
    zeroshot/heldout/{0..N-1}.tar, nshards.txt   held-out combinations, classified among all classes

The scenes come from seed streams of their own (splits ``probes_*``, see ``scene._SPLIT_CODES``): no scene
is a training sample's or one of the world's own probes. What a probe means does not depend on the
drawing (objects are placed from a stream of their own), so the same ``--seed`` with ``--drawing default``
gives the same probes (captions, negatives, objects and relations) drawn the world's way: a paired control
for the alt drawing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vlp.common.atomic import staged, write_json_atomic

from .captions import classname
from .drawing import get_drawing
from .scene import DEFAULT_HELDOUT, PROBE_SPLIT_PREFIX, all_combos
from .world import FORMAT_VERSION, WorldConfig, WorldSummary, _write_compositional, _write_zeroshot

MANIFEST = "shapes_probes.json"
PROBES_FORMAT_VERSION = 1
SPLITS = ("compositional", "compositional_heldout", "zeroshot", "heldout")  # the world's, prefixed


@dataclass(frozen=True)
class ProbesConfig:
    drawing: str = "alt"
    image_size: int = 64
    seed: int = 0
    heldout: tuple[tuple[str, str], ...] = DEFAULT_HELDOUT
    compositional_per_type: int = 300
    zeroshot_per_class: int = 20

    def world_config(self) -> WorldConfig:
        """The world configuration whose writers draw these probes (no training samples are written)."""
        return WorldConfig(
            train_samples=1,
            image_size=self.image_size,
            seed=self.seed,
            heldout=self.heldout,
            zeroshot_per_class=self.zeroshot_per_class,
            compositional_per_type=self.compositional_per_type,
            twins=False,  # no training samples, so no twins to check the held-out set against
        )

    def validate(self) -> None:
        drawing = get_drawing(self.drawing)
        self.world_config().validate()
        drawing.check(self.image_size)
        if self.compositional_per_type < 1:
            raise ValueError(f"--per-type must be positive, got {self.compositional_per_type}")
        if self.zeroshot_per_class < 1:
            raise ValueError(f"--zeroshot-per-class must be positive, got {self.zeroshot_per_class}")

    def to_json(self) -> dict:
        return {
            "drawing": self.drawing,
            "image_size": self.image_size,
            "seed": self.seed,
            "heldout": [list(p) for p in self.heldout],
            "compositional_per_type": self.compositional_per_type,
            "zeroshot_per_class": self.zeroshot_per_class,
        }


def _wanted(cfg: ProbesConfig) -> dict:
    # The drawing's parameters and the world's format are part of what makes the bytes: a change in
    # either makes an existing output stale, not reusable.
    return {
        "kind": "shapes_probes",
        "format_version": PROBES_FORMAT_VERSION,
        "world_format_version": FORMAT_VERSION,
        "config": cfg.to_json(),
        "drawing": get_drawing(cfg.drawing).to_json(),
    }


def generate_probes(
    out: str | os.PathLike,
    cfg: ProbesConfig = ProbesConfig(),
    workers: int | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> WorldSummary:
    """Write the compositional probes and zero-shot sets of ``cfg`` into ``out`` (built beside it, then
    renamed into place).

    An existing output made with the same arguments is reused; one made with the same arguments by an
    older generator (or an older version of the drawing) is regenerated; any other existing, non-empty
    ``out`` is refused unless ``overwrite`` is set.
    """
    cfg.validate()
    out = Path(out)
    wanted = _wanted(cfg)
    if out.exists() and any(out.iterdir()):
        existing = _read_manifest(out)
        if existing is not None and {k: existing.get(k) for k in wanted} == wanted:
            log(f"shapes probes already present at {out} (same arguments); reusing them")
            return WorldSummary(str(out), existing.get("counts", {}), 0.0, reused=True)
        stale = existing is not None and existing.get("kind") == "shapes_probes"
        if stale and existing.get("config") == wanted["config"]:
            log(f"{out} was made with these arguments by another version of the generator or drawing; regenerating it")
        elif not overwrite:
            raise FileExistsError(
                f"{out} exists and is not shapes probes made with these arguments; "
                "choose another --out or pass --overwrite"
            )
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    drawing, world = get_drawing(cfg.drawing), cfg.world_config()
    start = time.perf_counter()
    with staged(out) as tmp:
        log(f"drawing shapes probes in the {drawing.name!r} drawing into {out} ({cfg.image_size} px)")
        written = _write_compositional(tmp, world, workers, drawing, PROBE_SPLIT_PREFIX)
        counts = {f"compositional_{k}": v for k, v in written.items()}
        log(f"  compositional: {sum(counts.values())} examples")
        written = _write_zeroshot(tmp, world, workers, drawing, PROBE_SPLIT_PREFIX)
        counts.update({f"zeroshot_{k}": v for k, v in written.items()})
        log(f"  zero-shot: {counts['zeroshot_test']} seen-combination and {counts['zeroshot_heldout']} held-out images")
        seconds = time.perf_counter() - start
        manifest = {
            **wanted,
            "counts": counts,
            "classnames": [classname(c, s) for c, s in all_combos()],
            "heldout": [classname(c, s) for c, s in cfg.heldout],
            "seed_streams": [PROBE_SPLIT_PREFIX + s for s in SPLITS],
        }
        write_json_atomic(tmp / MANIFEST, manifest, sort_keys=True)
    log(f"shapes probes written to {out} in {seconds:.1f} s")
    return WorldSummary(str(out), counts, seconds)


def _read_manifest(out: Path) -> dict | None:
    try:
        return json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None

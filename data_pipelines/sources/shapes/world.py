"""Write the shapes world to disk: train shards, zero-shot sets and compositional probes.

Layout of ``OUT``::

    shapes_world.json                 manifest: arguments, counts, class names, held-out pairs
    train/train-000000.tar ...        {key}.png, {key}.txt, {key}.json (scene + exact negatives) and,
                                      with twins, {key}.neighbour.png (its twin; JSON "neighbour")
    train/sizes.json
    zeroshot/classnames.txt           CLIP_benchmark's local ``wds`` layout (--dataset wds/shapes)
    zeroshot/zeroshot_classification_templates.txt
    zeroshot/test/{0..N-1}.tar, nshards.txt      seen (colour, shape) combinations
    zeroshot/heldout/{0..N-1}.tar, nshards.txt   held-out combinations, classified among all classes
    compositional/{swap_att,...}.json            SugarCrepe format, images in compositional/images/
    compositional/heldout/{swap_att,...}.json    every example contains a held-out combination
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vlp.common.atomic import staged, write_json_atomic

from ...shards.writer import ShardSink
from ...workers import map_in_pool
from .captions import NEGATIVE_TYPES, SUGARCREPE_TYPES, ZEROSHOT_TEMPLATES, classname
from .drawing import DEFAULT_DRAWING, Drawing
from .samples import compositional_example, train_key, train_sample, zeroshot_sample
from .scene import COLOURS, DEFAULT_HELDOUT, SHAPES, all_combos

MANIFEST = "shapes_world.json"
# 4: replace_relation only where the two objects read differently (negatives and probes exactly
# false), negatives in a per-sample seeded order, twins (neighbour.png).
FORMAT_VERSION = 4


@dataclass(frozen=True)
class WorldConfig:
    train_samples: int = 20_000
    image_size: int = 64
    seed: int = 0
    heldout: tuple[tuple[str, str], ...] = DEFAULT_HELDOUT
    p_single: float = 0.3
    zeroshot_per_class: int = 20
    compositional_per_type: int = 300
    shard_size: int = 1000
    twins: bool = True  # every training sample carries its twin (see .twins) as its neighbour

    def validate(self) -> None:
        if self.train_samples < 1:
            raise ValueError(f"--train-samples must be positive, got {self.train_samples}")
        if not 16 <= self.image_size <= 1024:
            raise ValueError(f"--image-size must be between 16 and 1024, got {self.image_size}")
        DEFAULT_DRAWING.check(self.image_size)  # 17 and 19 px: two large objects do not fit side by side
        if len(set(self.heldout)) == len(all_combos()):
            raise ValueError("every (colour, shape) combination is held out; nothing is left to train on")
        if not 0.0 <= self.p_single <= 1.0:
            raise ValueError(f"p_single must be within [0, 1], got {self.p_single}")
        if self.twins:
            heldout = set(self.heldout)
            lone = [s for s in SHAPES if sum((c, s) not in heldout for c in COLOURS) == 1]
            if lone:
                raise ValueError(
                    f"--heldout leaves {', '.join(lone)} a single colour, so a one-{lone[0]} scene has no twin "
                    "(another colour); hold out fewer combinations or pass --no-twins"
                )


@dataclass
class WorldSummary:
    out: str
    counts: dict = field(default_factory=dict)
    seconds: float = 0.0
    reused: bool = False


def _map(fn: Callable, items: Sequence, workers: int) -> Iterator:
    """Ordered map, in a process pool when it pays (samples are small: in chunks); results never
    depend on ``workers``."""
    return map_in_pool(fn, items, workers, chunksize=64, min_items=256)


def _write_train(out: Path, cfg: WorldConfig, workers: int, log: Callable[[str], None]) -> int:
    combos = [c for c in all_combos() if c not in set(cfg.heldout)]
    fn = functools.partial(
        train_sample, cfg.seed, image_size=cfg.image_size, combos=combos, p_single=cfg.p_single, twins=cfg.twins
    )
    step = max(1, cfg.train_samples // 10)
    with ShardSink(out / "train", pattern="train-{:06d}.tar", shard_size=cfg.shard_size) as sink:
        for i, members in enumerate(_map(fn, range(cfg.train_samples), workers)):
            sink.write(train_key(i), members)
            if (i + 1) % step == 0 or i + 1 == cfg.train_samples:
                log(f"  train: {i + 1}/{cfg.train_samples} samples")
    return cfg.train_samples


def _zeroshot_item(
    seed: int, split: str, image_size: int, item: tuple[int, tuple[str, str], int], drawing: Drawing = DEFAULT_DRAWING
) -> dict:
    index, combo, label = item
    return zeroshot_sample(seed, split, index, image_size, combo, label, drawing)


def _write_zeroshot(
    out: Path, cfg: WorldConfig, workers: int, drawing: Drawing = DEFAULT_DRAWING, split_prefix: str = ""
) -> dict[str, int]:
    """``zeroshot/`` drawn in ``drawing``, from the seed streams of splits ``split_prefix + "zeroshot"``
    and ``split_prefix + "heldout"`` (the world's own: no prefix; vlp-data shapes-probes: "probes_")."""
    classes = all_combos()
    root = out / "zeroshot"
    root.mkdir(parents=True)
    (root / "classnames.txt").write_text("".join(classname(c, s) + "\n" for c, s in classes))
    (root / "zeroshot_classification_templates.txt").write_text("".join(t + "\n" for t in ZEROSHOT_TEMPLATES))
    heldout = set(cfg.heldout)
    counts = {}
    for split, wanted in (("test", lambda c: c not in heldout), ("heldout", lambda c: c in heldout)):
        items = []
        for label, combo in enumerate(classes):
            if wanted(combo):
                items.extend((len(items) + k, combo, label) for k in range(cfg.zeroshot_per_class))
        split_code = split_prefix + ("zeroshot" if split == "test" else "heldout")
        fn = functools.partial(_zeroshot_item, cfg.seed, split_code, cfg.image_size, drawing=drawing)
        # CLIP_benchmark names shards 0.tar .. N-1.tar and reads their number from nshards.txt; its
        # loader needs at least as many shards as workers (4 by default), so there are 8 of them.
        with ShardSink(root / split, pattern="{}.tar", shard_size=max(1, -(-len(items) // 8))) as sink:
            for index, members in enumerate(_map(fn, items, workers)):
                sink.write(f"{split}_{index:06d}", members)
        (root / split / "nshards.txt").write_text(f"{len(sink.sizes)}\n")
        counts[split] = len(items)
    return counts


def _compositional_item(
    seed: int, split: str, image_size: int, combos, second, item: tuple[int, str], drawing: Drawing = DEFAULT_DRAWING
):
    index, kind = item
    return compositional_example(seed, split, index, kind, image_size, combos, second, drawing)


def _write_compositional(
    out: Path, cfg: WorldConfig, workers: int, drawing: Drawing = DEFAULT_DRAWING, split_prefix: str = ""
) -> dict[str, int]:
    """``compositional/`` drawn in ``drawing``, from the seed streams of splits ``split_prefix +
    "compositional"`` and ``split_prefix + "compositional_heldout"`` (as :func:`_write_zeroshot`)."""
    root = out / "compositional"
    images = root / "images"
    images.mkdir(parents=True)
    seen = [c for c in all_combos() if c not in set(cfg.heldout)]
    splits = [(split_prefix + "compositional", root, "", seen, None)]
    if cfg.heldout:
        # Pair a held-out combination with any object; the pair's order is randomised.
        splits.append(
            (split_prefix + "compositional_heldout", root / "heldout", "heldout_", all_combos(), list(cfg.heldout))
        )
    counts = {}
    for split, folder, prefix, combos, second in splits:
        folder.mkdir(parents=True, exist_ok=True)
        items = [
            (t * cfg.compositional_per_type + k, kind)
            for t, kind in enumerate(SUGARCREPE_TYPES.values())
            for k in range(cfg.compositional_per_type)
        ]
        fn = functools.partial(_compositional_item, cfg.seed, split, cfg.image_size, combos, second, drawing=drawing)
        files: dict[str, dict] = {name: {} for name in SUGARCREPE_TYPES}
        names = {kind: name for name, kind in SUGARCREPE_TYPES.items()}
        for (_, kind), (record, png) in zip(items, _map(fn, items, workers), strict=True):
            name = names[kind]
            filename = f"{prefix}{name}_{len(files[name]):05d}.png"
            (images / filename).write_bytes(png)
            files[name][str(len(files[name]))] = {"filename": filename, **record}
        for name, data in files.items():
            (folder / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
            counts[f"{prefix}{name}"] = len(data)
    return counts


def generate_world(
    out: str | os.PathLike,
    cfg: WorldConfig = WorldConfig(),
    workers: int | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> WorldSummary:
    """Generate the shapes world into ``out`` (built beside it, then renamed into place).

    An existing world made with the same configuration is reused; any other existing, non-empty
    ``out`` is refused unless ``overwrite`` is set, so nothing is lost by accident.
    """
    cfg.validate()
    out = Path(out)
    wanted = {"format_version": FORMAT_VERSION, "config": _config_json(cfg)}
    if out.exists() and any(out.iterdir()):
        existing = _read_manifest(out)
        if existing is not None and {k: existing.get(k) for k in wanted} == wanted:
            log(f"shapes world already present at {out} (same configuration); reusing it")
            return WorldSummary(str(out), existing.get("counts", {}), 0.0, reused=True)
        if existing is not None and _older_with_same_arguments(existing, wanted["config"]):
            log(f"{out} was made by an older generator (format {existing.get('format_version')}); regenerating it")
        elif not overwrite:
            raise FileExistsError(
                f"{out} exists and is not a shapes world made with these arguments; "
                "choose another --out or pass --overwrite"
            )
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    start = time.perf_counter()
    with staged(out) as tmp:
        log(f"generating the shapes world in {out} ({cfg.train_samples} train samples, {cfg.image_size} px)")
        counts = {"train": _write_train(tmp, cfg, workers, log)}
        counts.update({f"zeroshot_{k}": v for k, v in _write_zeroshot(tmp, cfg, workers).items()})
        log(f"  zero-shot: {counts['zeroshot_test']} seen-combination and {counts['zeroshot_heldout']} held-out images")
        counts.update({f"compositional_{k}": v for k, v in _write_compositional(tmp, cfg, workers).items()})
        log(f"  compositional: {sum(v for k, v in counts.items() if k.startswith('compositional'))} examples")
        seconds = time.perf_counter() - start
        manifest = {
            **wanted,
            "counts": counts,
            "classnames": [classname(c, s) for c, s in all_combos()],
            "heldout": [classname(c, s) for c, s in cfg.heldout],
            "negative_types": list(NEGATIVE_TYPES),
        }
        write_json_atomic(tmp / MANIFEST, manifest, sort_keys=True)
    log(f"shapes world written to {out} in {seconds:.1f} s")
    return WorldSummary(str(out), counts, seconds)


def _config_json(cfg: WorldConfig) -> dict:
    d = asdict(cfg)
    d["heldout"] = [list(p) for p in cfg.heldout]
    return d


def _older_with_same_arguments(existing: dict, config: dict) -> bool:
    """A world of an older format made with these arguments: options added since (absent from its
    config) could not have been given, so they do not count as a difference."""
    version, old = existing.get("format_version"), existing.get("config")
    if not isinstance(version, int) or version >= FORMAT_VERSION or not isinstance(old, dict):
        return False
    return set(old) <= set(config) and all(config[k] == v for k, v in old.items())


def _read_manifest(out: Path) -> dict | None:
    try:
        return json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None

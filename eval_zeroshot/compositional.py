"""Compositional benchmarks exactly as their official scripts score them.

* SugarCrepe (``main_eval.py``): per pair, correct iff ⟨g+, f⟩ > ⟨g−, f⟩ — strictly, a tie is wrong;
  accuracy per file; REPLACE / SWAP / ADD pooled (weighted by size). fp32.
* ARO VG-Relation / VG-Attribution: the image cropped to the bbox; options ``[false, true]``;
  prediction = first argmax, so a tie picks the false caption; VG-R macro accuracy over relations not
  in the exclusion list, VG-A macro accuracy over attribute pairs with at least 25 cases.
* ARO COCO-Order / Flickr30k-Order: see :mod:`eval_zeroshot.word_order`.
* shapes: the shapes world's compositional files with SugarCrepe's scoring, held-out split included.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from data_pipelines.images import ImageError, open_rgb

from .datasets import DatasetError

SUGARCREPE_FILES = ("replace_obj", "replace_att", "replace_rel", "swap_obj", "swap_att", "add_obj", "add_att")
SUGARCREPE_GROUPS = {
    "REPLACE": ("replace_obj", "replace_att", "replace_rel"),
    "SWAP": ("swap_obj", "swap_att"),
    "ADD": ("add_obj", "add_att"),
}
ARO_MIN_PAIR_CASES = 25

# Published reference rows (EVAL_PROTOCOLS.md), accuracies in percent.
REFERENCES: dict[str, dict[str, dict[str, float]]] = {
    "sugarcrepe": {
        "CLIP ViT-B/32": dict(zip(SUGARCREPE_FILES, (90.92, 80.08, 69.20, 61.38, 63.96, 77.21, 68.79), strict=True)),
        "NegCLIP": dict(zip(SUGARCREPE_FILES, (92.7, 85.9, 76.5, 75.2, 75.4, 88.8, 82.8), strict=True)),
        "DeGLA": dict(zip(SUGARCREPE_FILES, (94.5, 92.6, 84.2, 81.6, 82.1, 93.8, 95.7), strict=True)),
    },
    "aro": {
        "CLIP ViT-B/32": {"vg_relation": 59.2, "vg_attribution": 62.9, "coco_order": 48.4, "flickr_order": 59.1},
        "NegCLIP": {"vg_relation": 80.4, "vg_attribution": 70.5, "coco_order": 86.9, "flickr_order": 90.5},
        "DeGLA": {"vg_relation": 81.6, "vg_attribution": 74.3, "coco_order": 93.8, "flickr_order": 94.7},
    },
}


@dataclass
class Scorer:
    """Normalised image and text features of one model, images cached by path and crop."""

    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable
    device: torch.device
    batch_size: int = 64

    def __post_init__(self):
        self._images: dict = {}

    @torch.no_grad()
    def images(self, keys: Sequence[tuple], loader: Callable[[tuple], Image.Image]) -> torch.Tensor:
        todo = [k for k in dict.fromkeys(keys) if k not in self._images]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            batch = torch.stack([self.preprocess(loader(k)) for k in chunk]).to(self.device)
            feats = F.normalize(self.model.encode_image(batch), dim=-1).float().cpu()
            self._images.update(zip(chunk, feats, strict=True))
        return torch.stack([self._images[k] for k in keys])

    @torch.no_grad()
    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[start : start + self.batch_size])).to(self.device)
            out.append(F.normalize(self.model.encode_text(tokens), dim=-1).float().cpu())
        return torch.cat(out)


def load_rgb(path: Path) -> Image.Image:
    """The image file as RGB; a DatasetError naming it when it cannot be read."""
    try:
        return open_rgb(path)
    except ImageError as exn:
        raise DatasetError(str(exn)) from None


def check_images(paths: Sequence[Path], where: str) -> None:
    missing = sorted({str(p) for p in paths if not p.is_file()})
    if missing:
        shown = ", ".join(missing[:5])
        raise DatasetError(
            f"{len(missing)} images of {where} are missing: {shown}{', ...' if len(missing) > 5 else ''}"
        )


# ---------------------------------------------------------------- SugarCrepe (and the shapes world)


def strict_pair_correct(image: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """SugarCrepe's rule: correct iff ⟨g+, f⟩ > ⟨g−, f⟩ (a tie is wrong)."""
    return (image * positive).sum(-1) > (image * negative).sum(-1)


def read_sugarcrepe(folder: Path, images: Path) -> dict[str, list[dict]]:
    files = sorted(folder.glob("*.json"))
    if not files:
        raise DatasetError(f"{folder} holds no SugarCrepe *.json files")
    subsets = {}
    for path in files:
        try:
            data = json.loads(path.read_text())
        except ValueError as exn:
            raise DatasetError(f"{path}: not valid JSON ({exn})") from None
        items = []
        for key, item in data.items():
            if not {"filename", "caption", "negative_caption"} <= set(item):
                raise DatasetError(f"{path}: item {key} lacks filename/caption/negative_caption")
            items.append({"image": images / item["filename"], "pos": item["caption"], "neg": item["negative_caption"]})
        subsets[path.stem] = items
    check_images([i["image"] for items in subsets.values() for i in items], f"{folder} (looked in {images})")
    return subsets


def pair_items_correct(scorer: Scorer, subsets: dict[str, list[dict]]) -> dict[str, torch.Tensor]:
    """Per subset, whether each pair is scored correctly (bool, in file order): what paired tests use."""
    out = {}
    for name, items in subsets.items():
        keys = [(i["image"],) for i in items]
        f = scorer.images(keys, lambda k: load_rgb(k[0]))
        out[name] = strict_pair_correct(
            f, scorer.texts([i["pos"] for i in items]), scorer.texts([i["neg"] for i in items])
        )
    return out


def counted(correct: int, n: int) -> dict:
    """An accuracy as the exact fraction of its counts, with the counts beside it (153/300 is 0.51, where
    a float32 mean gives 0.5099999904632568)."""
    return {"accuracy": correct / n if n else float("nan"), "correct": correct, "n": n}


def score_pairs(scorer: Scorer, subsets: dict[str, list[dict]]) -> dict[str, dict]:
    return {
        name: counted(int(correct.sum()), len(correct)) for name, correct in pair_items_correct(scorer, subsets).items()
    }


def pooled(results: dict[str, dict], groups: dict[str, Sequence[str]]) -> dict[str, dict]:
    out = {}
    for group, names in groups.items():
        present = [results[n] for n in names if n in results]
        if present:
            out[group] = counted(sum(r["correct"] for r in present), sum(r["n"] for r in present))
    return out


# ---------------------------------------------------------------- ARO: VG-Relation, VG-Attribution


def first_argmax_correct(scores: torch.Tensor, correct_option: int) -> torch.Tensor:
    """Per row, whether the first maximal option is the correct one (ties go to the earliest)."""
    return scores.argmax(dim=1) == correct_option


def read_aro_vg(path: Path, images: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exn:
        raise DatasetError(f"{path}: cannot read ARO annotations ({exn})") from None
    for i, rec in enumerate(data):
        missing = {"image_path", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "true_caption", "false_caption"} - set(rec)
        if missing:
            raise DatasetError(f"{path}: item {i} lacks {sorted(missing)}")
    check_images([images / r["image_path"] for r in data], f"{path} (looked in {images})")
    return data


def crop_box(rec: dict) -> tuple[int, int, int, int]:
    x, y, w, h = (rec["bbox_x"], rec["bbox_y"], rec["bbox_w"], rec["bbox_h"])
    return (x, y, x + w, y + h)


def score_aro_vg(scorer: Scorer, data: list[dict], images: Path) -> torch.Tensor:
    keys = [(images / r["image_path"], crop_box(r)) for r in data]
    f = scorer.images(keys, lambda k: load_rgb(k[0]).crop(k[1]))
    false = scorer.texts([r["false_caption"] for r in data])
    true = scorer.texts([r["true_caption"] for r in data])
    scores = torch.stack([(f * false).sum(-1), (f * true).sum(-1)], dim=1)  # options [false, true]
    return first_argmax_correct(scores, 1)


def macro_accuracy(
    correct: torch.Tensor, groups: Sequence[str], exclude: set[str] = frozenset(), min_cases: int = 0
) -> tuple[float, dict[str, dict]]:
    """Unweighted mean of per-group accuracy over groups not excluded and with enough cases."""
    by_group: dict[str, list[bool]] = defaultdict(list)
    for ok, g in zip(correct.tolist(), groups, strict=True):
        by_group[g].append(ok)
    kept = {g: counted(sum(v), len(v)) for g, v in by_group.items() if g not in exclude and len(v) >= min_cases}
    if not kept:
        raise DatasetError("no group is left to average (all excluded or too small)")
    return sum(r["accuracy"] for r in kept.values()) / len(kept), kept


def vg_relation_groups(data: list[dict]) -> list[str]:
    return [r["relation_name"] for r in data]


def vg_attribution_groups(data: list[dict]) -> list[str]:
    return [f"{r['attributes'][0]}_{r['attributes'][1]}" for r in data]

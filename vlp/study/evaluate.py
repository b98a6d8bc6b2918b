"""Score one export for a study: zero-shot sets and compositional probes, item by item, and optionally
the diagnostics (which tower is blind). Items are stored as '0'/'1' strings in file order, so any two
cells can be compared pair by pair later without re-running anything."""

from __future__ import annotations

from pathlib import Path

import torch

from eval_zeroshot import compositional as C
from eval_zeroshot.dataset_specs import read_dataset, split_spec
from eval_zeroshot.models import load_model
from eval_zeroshot.zeroshot import classify, image_features

from .spec import Evaluation


def bits(correct: torch.Tensor) -> str:
    return "".join("1" if c else "0" for c in correct.tolist())


def metric(correct: torch.Tensor) -> dict:
    return {**C.counted(int(correct.sum()), len(correct)), "items": bits(correct)}


def probe_subsets(folder: Path) -> dict[str, list[dict]]:
    """A SugarCrepe-format folder (images in ``images/``) and its ``heldout/`` part, as vlp-eval reads it."""
    images = folder / "images"
    subsets = C.read_sugarcrepe(folder, images)
    if (folder / "heldout").is_dir():
        subsets.update({f"heldout/{k}": v for k, v in C.read_sugarcrepe(folder / "heldout", images).items()})
    return subsets


@torch.no_grad()
def evaluate_export(model_spec: str, evaluation: Evaluation, batch_size: int = 128) -> dict:
    """``{"metrics": {name: {accuracy, correct, n, items}}, "diagnostics": ...}``; metric names are
    ``zeroshot/<set>`` and ``<probes>/<subset>`` (e.g. ``shapes/heldout/replace_rel``)."""
    loaded = load_model(model_spec)
    metrics: dict[str, dict] = {}
    for name, spec in evaluation.zeroshot.items():
        path, split = split_spec(spec)
        dataset = read_dataset(path, split)
        feats = image_features(loaded.model, loaded.preprocess, dataset.items, "cpu", batch_size)
        logits, target = classify(loaded.model, loaded.tokenizer, dataset, feats)
        metrics[f"zeroshot/{name}"] = metric(logits.argmax(dim=1) == target)
    text_cosines = {}
    for name, folder in evaluation.probes.items():
        scorer = C.Scorer(loaded.model, loaded.preprocess, loaded.tokenizer, torch.device("cpu"), batch_size)
        subsets = probe_subsets(Path(folder))
        for subset, correct in C.pair_items_correct(scorer, subsets).items():
            metrics[f"{name}/{subset}"] = metric(correct)
        if evaluation.diagnostics is not None:
            from eval_zeroshot.diagnostics import text_cosines as cosines

            text_cosines[name] = cosines(loaded.model, loaded.tokenizer, subsets, batch_size=batch_size)
    record: dict = {"metrics": metrics}
    if evaluation.diagnostics is not None:
        from eval_zeroshot.diagnostics import relation_probe

        image_size = _image_size(loaded.model)
        d = evaluation.diagnostics
        record["diagnostics"] = {
            "text_cosines": text_cosines,
            "relation_probe": relation_probe(
                loaded.model,
                loaded.preprocess,
                image_size,
                n_train=d.get("probe_train", 1000),
                n_test=d.get("probe_test", 500),
                seed=0,
            ),
        }
    return record


def _image_size(model: torch.nn.Module) -> int:
    size = getattr(model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, tuple | list) else size)

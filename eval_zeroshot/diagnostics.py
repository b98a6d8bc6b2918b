"""Which tower is blind: when a model is at chance on a compositional probe (the shapes world's
``replace_rel``: "a red circle left of a blue square" vs "... right of ..."), is it the text encoder,
the image encoder, or the alignment between them?

* :func:`text_cosines`: per SugarCrepe-format subset, the cosine between the text embeddings of each
  caption and its negative. Near 1.0, the text tower hardly tells them apart.
* :func:`relation_probe`: fresh two-object scenes of the shapes world, encoded by the frozen image
  tower; a linear (multinomial logistic) probe on the pooled embedding and on the features just before
  the pooling says whether the image features carry the relation at all.
* :func:`diagnose`: both, on one model spec, with the compositional accuracies and a verdict.

The verdict rule (:func:`verdict`), on the ``replace_rel`` subset and the relation probe:

* the text tower is *blind* when the mean caption/negative cosine exceeds ``TEXT_BLIND_COSINE`` (0.99);
* an image feature *carries* the relation when its probe accuracy's lower 95% Wilson bound exceeds
  chance + ``IMAGE_MARGIN`` (0.05); the image tower is blind when neither the pre-pooling (spatial) nor
  the pooled features carry it;
* text blind, image carries: the text tower is at fault; text blind, image blind: both are;
  text not blind, image blind: the image tower is; text not blind, only the spatial features carry it:
  the image tower's pooling drops it; text not blind and the pooled embedding carries it: both towers
  separate the relation, so the alignment (how the two are matched) is at fault.

The cosine threshold is a heuristic: a score difference can still have a consistent sign when the
two embeddings are very close, so the compositional accuracy is printed beside it.

The parts, one module each: the text cosines (:mod:`eval_zeroshot.diagnostics_text`), the probe's
scenes and labels (:mod:`eval_zeroshot.diagnostics_scenes`, which also says why the label names the
objects in colour order), the image features (:mod:`eval_zeroshot.diagnostics_images`), the linear probe
(:mod:`eval_zeroshot.diagnostics_probe`), the verdict (:mod:`eval_zeroshot.diagnostics_verdict`) and the
printed report (:mod:`eval_zeroshot.diagnostics_report`). Their public names are importable from here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

# Re-exported: the CLI, vlp.study and the tests import these from eval_zeroshot.diagnostics.
from .diagnostics_images import encode_probe_images, model_image_size, spatial_hook_point
from .diagnostics_probe import (
    LBFGS_MAX_ITER,
    VALIDATION_SHARE,
    WEIGHT_DECAYS,
    fit_and_score,
    linear_probe,
    probe_features,
)
from .diagnostics_report import report
from .diagnostics_scenes import PROBE_STREAM, TARGETS, probe_labels, probe_scenes
from .diagnostics_text import text_cosines
from .diagnostics_verdict import IMAGE_MARGIN, RELATION_SUBSET, TEXT_BLIND_COSINE, relation_subset, verdict

__all__ = [
    "IMAGE_MARGIN",
    "LBFGS_MAX_ITER",
    "PROBE_STREAM",
    "RELATION_SUBSET",
    "TARGETS",
    "TEXT_BLIND_COSINE",
    "VALIDATION_SHARE",
    "WEIGHT_DECAYS",
    "diagnose",
    "encode_probe_images",
    "linear_probe",
    "model_image_size",
    "probe_features",
    "probe_labels",
    "probe_scenes",
    "relation_probe",
    "relation_subset",
    "report",
    "spatial_hook_point",
    "text_cosines",
    "verdict",
]


def relation_probe(
    model: torch.nn.Module,
    preprocess: Callable,
    image_size: int,
    n_train: int = 2000,
    n_test: int = 1000,
    seed: int = 0,
    drawing: object | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> dict:
    """Linear probes of the frozen image tower on fresh shapes-world scenes (see the module's docstring).

    Returns ``{"n_train", "n_test", "seed", "image_size", "drawing", "spatial_kind", "spatial_available",
    "targets": {target: {"classes", "chance", "ceiling", "spatial": probe or {"unavailable": reason},
    "pooled": probe}}, "seconds": {"scenes", "encode", "fit"}}``; a probe is :func:`linear_probe`'s
    record. ``chance`` is the test part's majority-class share; ``ceiling`` the best accuracy any
    image feature can reach (0.5 for ``relation_as_sampled``, see :mod:`eval_zeroshot.diagnostics_scenes`).
    """
    start = time.perf_counter()
    scenes = probe_scenes(n_train + n_test, image_size, seed, drawing)
    made = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        pooled, spatial, kind = encode_probe_images(model, preprocess, [im for _, _, im in scenes], device, batch_size)
    finally:
        model.train(was_training)
    encoded = time.perf_counter()
    features = {
        name: None if x is None else (int(x.shape[1]), *probe_features(x[:n_train], x[n_train:]))
        for name, x in (("spatial", spatial), ("pooled", pooled))
    }
    targets = {}
    for target, labels in probe_labels(scenes).items():
        n_classes, ceiling = TARGETS[target]
        y_train, y_test = labels[:n_train], labels[n_train:]
        record: dict = {
            "classes": n_classes,
            "chance": torch.bincount(y_test, minlength=n_classes).max().item() / len(y_test),
            "ceiling": ceiling,
        }
        for name, prepared in features.items():
            if prepared is None:
                record[name] = {"unavailable": kind}
            else:
                dims, z_train, z_test = prepared
                record[name] = {"dims": dims, **fit_and_score(z_train, y_train, z_test, y_test, seed, WEIGHT_DECAYS)}
        targets[target] = record
    return {
        "n_train": n_train,
        "n_test": n_test,
        "seed": seed,
        "image_size": image_size,
        "drawing": None if drawing is None else getattr(drawing, "name", str(drawing)),
        "spatial_kind": kind if spatial is not None else None,
        "spatial_available": spatial is not None,
        "targets": targets,
        "seconds": {
            "scenes": round(made - start, 2),
            "encode": round(encoded - made, 2),
            "fit": round(time.perf_counter() - encoded, 2),
        },
    }


def diagnose(
    model_spec: str,
    compositional_dir: str | Path,
    pretrained: str = "",
    images: str | Path | None = None,
    probe_train: int = 2000,
    probe_test: int = 1000,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 64,
    drawing: object | None = None,
) -> dict:
    """Text cosines and compositional accuracy on every subset of ``compositional_dir`` (and its
    ``heldout/``), the relation probe, and the verdict. Raises ``ModelError`` / ``DatasetError``."""
    from . import compositional as C
    from .datasets import DatasetError
    from .models import load_model

    folder = Path(compositional_dir)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder of SugarCrepe-format *.json files")
    images = Path(images) if images else folder / "images"
    subsets = C.read_sugarcrepe(folder, images)  # checked before the model loads: a bad folder fails at once
    if (folder / "heldout").is_dir():
        subsets.update({f"heldout/{k}": v for k, v in C.read_sugarcrepe(folder / "heldout", images).items()})
    loaded = load_model(model_spec, pretrained, device)
    start = time.perf_counter()
    text = text_cosines(loaded.model, loaded.tokenizer, subsets, device, batch_size)
    scorer = C.Scorer(loaded.model, loaded.preprocess, loaded.tokenizer, torch.device(device), batch_size)
    compositional = {k: {"accuracy": v["accuracy"], "n": v["n"]} for k, v in C.score_pairs(scorer, subsets).items()}
    text_seconds = time.perf_counter() - start
    image_size = model_image_size(loaded.model, loaded.preprocess)
    probe = relation_probe(
        loaded.model,
        loaded.preprocess,
        image_size,
        n_train=probe_train,
        n_test=probe_test,
        seed=seed,
        drawing=drawing,
        device=device,
        batch_size=batch_size,
    )
    return {
        "model": model_spec,
        "pretrained": pretrained,
        "data": str(folder),
        "text": text,
        "compositional": compositional,
        "probe": probe,
        "verdict": verdict(text, probe, compositional),
        "seconds": {"text_and_compositional": round(text_seconds, 2), "probe": sum(probe["seconds"].values())},
    }

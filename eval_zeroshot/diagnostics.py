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

The probe's label. With ``sample_scene`` the first-named object (``objects[0]``) is drawn exactly like
the second, so nothing in the image says which of the two is named first: "relation of objects[0] to
objects[1]" can only be guessed up to its axis from pixels (best possible accuracy 0.5, chance 0.25).
The probe therefore keeps scenes whose two objects differ in colour and names the one whose colour
comes first in ``COLOURS`` first (the scene re-expressed, relation inverted when swapped): the target
``relation`` is then the relation of objects[0] to objects[1] *and* visible, as in a ``replace_rel``
probe where the caption names the objects. The label as sampled is reported too
(``relation_as_sampled``, ceiling 0.5), and ``colour`` (the colour of objects[0]) is a sanity
reference that needs no relation.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vlp.common.intervals import wilson

from .compositional import Scorer

TEXT_BLIND_COSINE = 0.99
IMAGE_MARGIN = 0.05
WEIGHT_DECAYS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
VALIDATION_SHARE = 0.2
LBFGS_MAX_ITER = 200
# The world's generators are default_rng([seed, split code (1..9), index, (stream)]): with 99 in the
# split code's place, no probe scene is one of the world's samples or probes.
PROBE_STREAM = 99
RELATION_SUBSET = "replace_rel"

# target -> (number of classes, best possible accuracy from the image alone)
TARGETS: dict[str, tuple[int, float]] = {"relation": (4, 1.0), "relation_as_sampled": (4, 0.5), "colour": (6, 1.0)}


# ---------------------------------------------------------------- text tower


def _cosine_near_one(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of unit vectors as 1 - |a - b|^2 / 2 in float64: the regime that matters here is close to 1,
    where a plain dot product loses digits to rounding; identical vectors give exactly 1.0."""
    a = F.normalize(a.double(), dim=-1)
    b = F.normalize(b.double(), dim=-1)
    return 1.0 - (a - b).pow(2).sum(-1) / 2.0


def text_cosines(
    model: torch.nn.Module,
    tokenizer: Callable,
    subsets: dict[str, list[dict]],
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> dict[str, dict]:
    """Per subset (``name -> [{"image", "pos", "neg"}]``, as ``read_sugarcrepe`` returns), the cosine
    between the normalised text embeddings of each caption and its negative: ``{mean, std, min, max, n}``.
    """
    scorer = Scorer(model, None, tokenizer, torch.device(device), batch_size)
    # Each distinct text is embedded once: identical texts get the very same vector (cosine exactly 1),
    # and the shapes world's captions recur across subsets.
    texts = list(dict.fromkeys(t for items in subsets.values() for i in items for t in (i["pos"], i["neg"])))
    index = {t: k for k, t in enumerate(texts)}
    emb = scorer.texts(texts) if texts else torch.zeros(0, 1)
    out = {}
    for name, items in subsets.items():
        if not items:
            out[name] = {"mean": None, "std": None, "min": None, "max": None, "n": 0}
            continue
        pos = emb[[index[i["pos"]] for i in items]]
        neg = emb[[index[i["neg"]] for i in items]]
        cos = _cosine_near_one(pos, neg)
        out[name] = {
            "mean": cos.mean().item(),
            "std": cos.std(unbiased=False).item(),
            "min": cos.min().item(),
            "max": cos.max().item(),
            "n": len(items),
        }
    return out


# ---------------------------------------------------------------- probe scenes


def _drawing_kw(drawing: object | None) -> dict:
    # Only passed when given: sample_scene / render without a ``drawing`` keyword still work.
    return {} if drawing is None else {"drawing": drawing}


def probe_scenes(n: int, image_size: int, seed: int, drawing: object | None = None) -> list[tuple]:
    """``n`` fresh two-object scenes: ``(scene, sampled, image)`` with ``scene`` in colour order (see the
    module's docstring), ``sampled`` as ``sample_scene`` drew it, ``image`` the PIL rendering.

    Scene ``i`` draws from ``default_rng([seed, PROBE_STREAM, i])``; scenes whose objects share a colour
    are skipped (their order would not be visible), so the result depends only on ``seed`` and ``n``.
    """
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


# ---------------------------------------------------------------- image features


def spatial_hook_point(visual: torch.nn.Module) -> tuple[torch.nn.Module | None, str]:
    """Where the features before pooling are taken: ``(module, kind)``; ``(None, reason)`` when unknown.

    kind ``"attnpool_input"``: open_clip's ModifiedResNet, the (B, C, H, W) input of ``attnpool``.
    kind ``"transformer_output"``: open_clip's VisionTransformer, the token sequence out of
    ``transformer`` (class token included), before ``ln_post`` and the pooling.
    """
    pool = getattr(visual, "attnpool", None)
    if isinstance(pool, torch.nn.Module):
        return pool, "attnpool_input"
    from open_clip.transformer import VisionTransformer

    if isinstance(visual, VisionTransformer):
        return visual.transformer, "transformer_output"
    return None, f"no known pooling in {type(visual).__name__} (open_clip ModifiedResNet / VisionTransformer only)"


@torch.no_grad()
def encode_probe_images(
    model: torch.nn.Module,
    preprocess: Callable,
    images: Sequence,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """``(pooled, spatial, kind)``: the normalised ``encode_image`` output and the flattened features
    before the pooling (``None`` and the reason in ``kind`` when the tower is not one we know)."""
    module, kind = spatial_hook_point(model.visual)
    captured: list[torch.Tensor] = []

    def pre_hook(_module, args):
        captured.append(args[0])

    def post_hook(_module, _args, output):
        captured.append(output)

    handle = None
    if kind == "attnpool_input":
        handle = module.register_forward_pre_hook(pre_hook)
    elif kind == "transformer_output":
        handle = module.register_forward_hook(post_hook)
    pooled, spatial = [], []
    try:
        for start in range(0, len(images), batch_size):
            batch = torch.stack([preprocess(im) for im in images[start : start + batch_size]]).to(device)
            captured.clear()
            pooled.append(F.normalize(model.encode_image(batch).float(), dim=-1).cpu())
            if handle is not None:
                feats = captured[-1]
                # open_clip's Transformer returns batch-first tokens (it transposes back itself when it
                # runs sequence-first inside); older versions returned (L, B, D).
                if kind == "transformer_output" and feats.shape[0] != len(batch) and feats.shape[1] == len(batch):
                    feats = feats.transpose(0, 1)
                spatial.append(feats.float().reshape(len(batch), -1).cpu())
    finally:
        if handle is not None:
            handle.remove()
    return torch.cat(pooled), (torch.cat(spatial) if spatial else None), kind


# ---------------------------------------------------------------- the linear probe


def _standardiser(x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # a constant feature becomes 0, not inf
    return lambda v: (v - mean) / std


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, weight_decay: float) -> Callable:
    """Multinomial logistic regression, full batch LBFGS from zero (hence deterministic);
    loss = mean cross-entropy + weight_decay / 2 * |W|^2 (the bias is not penalised)."""
    w = torch.zeros(x.shape[1], n_classes, dtype=x.dtype, requires_grad=True)
    b = torch.zeros(n_classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=LBFGS_MAX_ITER,
        history_size=20,
        line_search_fn="strong_wolfe",
        tolerance_grad=1e-6,
        tolerance_change=1e-9,
    )

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + weight_decay / 2 * w.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    w, b = w.detach(), b.detach()
    return lambda v: (v @ w + b).argmax(1)


def _fit_present(x: torch.Tensor, y: torch.Tensor, weight_decay: float) -> Callable:
    """:func:`_fit_logistic` over the classes present in ``y`` only: a class never seen cannot be
    predicted anyway, and its logit, pushed towards minus infinity, keeps LBFGS from converging (on the
    colour target, where orange is never first: 213 evaluations instead of 98 at weight decay 1)."""
    classes = torch.unique(y)
    predict = _fit_logistic(x, torch.searchsorted(classes, y), len(classes), weight_decay)
    return lambda v: classes[predict(v)]


def _row_space(x_train: torch.Tensor, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The features in coordinates of the train rows' span, when there are more features than rows.

    An L2-penalised linear model's optimal weights lie in the span of its training rows (representer
    theorem), for the whole train part and for any subset of it, and the penalty is the same in
    orthonormal coordinates: fitting on ``Z = X Q`` (Q an orthonormal basis of the span, from the QR
    decomposition X^T = Q R, so Z = R^T) gives the same predictions as fitting on ``X``, with N instead of
    D columns (4096 or 12480 -> 2000: several times fewer flops per LBFGS step). A direction the rows do
    not span (a constant feature map spans none) gives a zero column, which carries nothing.
    """
    if x_train.shape[1] <= x_train.shape[0]:
        return x_train, x_test
    q, r = torch.linalg.qr(x_train.T)
    return r.T.contiguous(), x_test @ q


def probe_features(x_train: torch.Tensor, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the probe is fitted on: standardised with the train part's statistics, then in the train
    rows' span (:func:`_row_space`). Shared by every target and weight decay of one feature set.

    The statistics include the rows held out for choosing the decay: they are unsupervised (no label
    is seen), and sharing them lets every fit use one reduction."""
    scale = _standardiser(x_train)
    return _row_space(scale(x_train), scale(x_test))


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run the LBFGS fits on one thread: each step is a few small ops (at most 2000 x 2000 x classes),
    and on a busy CPU every op split over two threads waits for the other (measured on 2 shared cores:
    20 ms instead of 0.08 ms per loss-and-gradient of a 30-row probe)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@_one_thread()  # a fresh context per call: the fits run on one thread whoever calls
def _fit_and_score(
    z_train: torch.Tensor,
    y_train: torch.Tensor,
    z_test: torch.Tensor,
    y_test: torch.Tensor,
    seed: int,
    weight_decays: Sequence[float],
) -> dict:
    perm = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(len(y_train) * VALIDATION_SHARE)))
    fit, val = perm[n_val:], perm[:n_val]
    val_accuracy = {}
    for wd in weight_decays:
        predict = _fit_present(z_train[fit], y_train[fit], wd)
        val_accuracy[wd] = (predict(z_train[val]) == y_train[val]).float().mean().item()
    best = max(weight_decays, key=lambda wd: (val_accuracy[wd], wd))
    predict = _fit_present(z_train, y_train, best)
    correct = int((predict(z_test) == y_test).sum())
    lo, hi = wilson(correct, len(y_test))
    return {
        "accuracy": correct / len(y_test),
        "correct": correct,
        "n": len(y_test),
        "ci95": [lo, hi],
        "weight_decay": best,
        "val_accuracy": {str(wd): acc for wd, acc in val_accuracy.items()},
    }


def linear_probe(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    seed: int = 0,
    weight_decays: Sequence[float] = WEIGHT_DECAYS,
) -> dict:
    """A multinomial logistic probe: features prepared by :func:`probe_features`; fitted with each weight
    decay on the train part less a seeded ``VALIDATION_SHARE`` held out; the decay with the best held-out
    accuracy kept (a tie goes to the stronger decay); refitted on the whole train part; scored on the
    test part. ``{accuracy, correct, n, ci95 (Wilson), dims, weight_decay, val_accuracy}``."""
    z_train, z_test = probe_features(x_train, x_test)
    return {"dims": int(x_train.shape[1]), **_fit_and_score(z_train, y_train, z_test, y_test, seed, weight_decays)}


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
    image feature can reach (0.5 for ``relation_as_sampled``, see the module's docstring).
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
                record[name] = {"dims": dims, **_fit_and_score(z_train, y_train, z_test, y_test, seed, WEIGHT_DECAYS)}
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


# ---------------------------------------------------------------- verdict and report


def _carries(probe: dict, chance: float) -> bool | None:
    if "ci95" not in probe:
        return None
    return probe["ci95"][0] > chance + IMAGE_MARGIN


def relation_subset(text: dict[str, dict]) -> str | None:
    """The subset the verdict reads: ``replace_rel`` if present, else the first ``*/replace_rel``."""
    if RELATION_SUBSET in text:
        return RELATION_SUBSET
    return next((k for k in text if k.endswith("/" + RELATION_SUBSET)), None)


def verdict(text: dict[str, dict], probe: dict, compositional: dict[str, dict] | None = None) -> dict:
    """Apply the module's rule; returns the flags, the fault and a one-paragraph sentence."""
    rel = probe["targets"]["relation"]
    chance = rel["chance"]
    spatial = _carries(rel["spatial"], chance)
    pooled = _carries(rel["pooled"], chance)
    image_carries = bool(spatial) or bool(pooled)
    subset = relation_subset(text)
    cos = text[subset]["mean"] if subset else None
    text_blind = None if cos is None else cos > TEXT_BLIND_COSINE

    def acc(p: dict) -> str:
        return f"{p['accuracy']:.2f}" if "accuracy" in p else "unavailable"

    image_part = (
        f"image features {'carry' if image_carries else 'do not carry'} the relation "
        f"(spatial probe {acc(rel['spatial'])}, pooled {acc(rel['pooled'])}, chance {chance:.2f})"
    )
    if text_blind is None:
        text_part = "no replace_rel subset to test the text tower on"
        fault = "image" if not image_carries else "unknown"
    else:
        score = ""
        if compositional and subset in compositional:
            score = f", accuracy {100 * compositional[subset]['accuracy']:.1f}%"
        text_part = f"text tower {'blind' if text_blind else 'not blind'} to {subset} (cosine {cos:.4f}{score})"
        if text_blind:
            fault = "text" if image_carries else "both"
        elif not image_carries:
            fault = "image"
        elif not pooled:
            fault = "image pooling"
        else:
            fault = "alignment"
    conclusion = {
        "text": "the text tower is at fault",
        "both": "both towers are blind to it",
        "image": "the image tower is at fault",
        "image pooling": "the image tower's pooling drops it (it is there before pooling, not in the embedding)",
        "alignment": "both towers separate it: the alignment is at fault",
        "unknown": "the text side is untested",
    }[fault]
    sentence = f"{text_part}; {image_part}: {conclusion}."
    others = [k for k, v in text.items() if k != subset and v["mean"] is not None and v["mean"] > TEXT_BLIND_COSINE]
    if others:
        sentence += f" The text tower is also blind (cosine > {TEXT_BLIND_COSINE}) to: {', '.join(others)}."
    colour = probe["targets"]["colour"]
    best = max((colour[k]["accuracy"] for k in ("spatial", "pooled") if "accuracy" in colour[k]), default=None)
    if best is not None and not any(_carries(colour[k], colour["chance"]) for k in ("spatial", "pooled")):
        sentence += f" Caution: not even the sanity target (colour, best probe {best:.2f}) is probe-able."
    return {
        "subset": subset,
        "text_cosine": cos,
        "text_blind": text_blind,
        "spatial_carries": spatial,
        "pooled_carries": pooled,
        "image_carries": image_carries,
        "fault": fault,
        "sentence": sentence,
        "rule": {"text_blind_cosine": TEXT_BLIND_COSINE, "image_margin": IMAGE_MARGIN},
    }


def model_image_size(model: torch.nn.Module, preprocess: Callable | None = None, default: int = 224) -> int:
    """The image tower's input side: ``model.visual.image_size``, else the eval transform's resize."""
    size = getattr(getattr(model, "visual", None), "image_size", None)
    if size is None and preprocess is not None:
        for t in getattr(preprocess, "transforms", ()):
            size = getattr(t, "size", None) or getattr(t, "max_size", None)
            if size is not None:
                break
    if size is None:
        return default
    return int(size[0] if isinstance(size, tuple | list) else size)


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


def _f(value: float | None, digits: int = 4) -> str | None:
    return None if value is None else f"{value:.{digits}f}"


def report(result: dict) -> str:
    """Markdown tables (text tower, relation probe) and the verdict, as the CLI prints them."""
    from vlp.common.tables import markdown_table

    scores = result["compositional"]
    rows = [
        {
            "subset": name,
            "accuracy": _f(100 * scores[name]["accuracy"], 1) if name in scores else None,
            "cosine mean": _f(t["mean"]),
            "std": _f(t["std"]),
            "min": _f(t["min"]),
            "max": _f(t["max"]),
            "n": t["n"],
        }
        for name, t in result["text"].items()
    ]
    text = markdown_table(rows, ["subset", "accuracy", "cosine mean", "std", "min", "max", "n"])
    probe_rows = []
    for target, rec in result["probe"]["targets"].items():
        for kind in ("spatial", "pooled"):
            p = rec[kind]
            probe_rows.append(
                {
                    "target": target,
                    "features": kind,
                    "dims": p.get("dims"),
                    "accuracy": _f(p.get("accuracy"), 3) if "accuracy" in p else "unavailable",
                    "95% CI": f"{p['ci95'][0]:.3f}–{p['ci95'][1]:.3f}" if "ci95" in p else None,
                    "chance": _f(rec["chance"], 3),
                    "ceiling": rec["ceiling"],
                    "weight decay": p.get("weight_decay"),
                }
            )
    cols = ["target", "features", "dims", "accuracy", "95% CI", "chance", "ceiling", "weight decay"]
    probe = markdown_table(probe_rows, cols)
    return f"{text}\n\n{probe}\n\n{result['verdict']['sentence']}"

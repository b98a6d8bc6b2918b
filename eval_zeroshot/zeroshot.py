"""Zero-shot classification and retrieval, computed as CLIP_benchmark computes them.

Classification: each class's text embedding is the renormalised mean of its normalised template
embeddings; logits are 100·normalise(image)·W; ``acc1``/``acc5`` by top-k (``acc5`` is NaN with fewer
than 5 classes), ``mean_per_class_recall`` is the mean recall over the classes present (scikit-learn's
balanced accuracy). Retrieval: S = captions·imagesᵀ; ``image_retrieval_recall@k`` is the share of
captions whose image is in the top k of its row, ``text_retrieval_recall@k`` the share of images with
any of their captions in the top k of their column.

The same functions serve the command line (one process) and the trainer (images split across ranks,
results gathered): the numbers do not depend on how many processes computed them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .datasets import EvalSet, Item

RECALL_KS = (1, 5, 10)


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, enabled=True) if amp else contextlib.nullcontext()


@torch.no_grad()
def class_embeddings(
    model, tokenizer, classnames: Sequence[str], templates: Sequence[str], device, amp=False, batch_size: int = 512
):
    """D×C classifier: per class, mean of the normalised template embeddings, renormalised. Prompts are
    encoded in batches across classes (ImageNet's 1,000 × 80 are 80,000 prompts: one forward per class
    would take minutes on a CPU); each prompt's embedding does not depend on its batch-mates."""
    prompts = [t.format(c=name) for name in classnames for t in templates]
    owner = torch.arange(len(classnames), device=device).repeat_interleave(len(templates))
    total = None  # per-class sums, C×D: memory does not grow with the number of templates
    for start in range(0, len(prompts), batch_size):
        tokens = tokenizer(prompts[start : start + batch_size]).to(device)
        with _autocast(device, amp):
            rows = F.normalize(model.encode_text(tokens), dim=-1)
        if total is None:
            total = torch.zeros(len(classnames), rows.shape[1], dtype=rows.dtype, device=rows.device)
        total.index_add_(0, owner[start : start + len(rows)], rows)
    emb = total / len(templates)
    return (emb / emb.norm(dim=-1, keepdim=True)).T


@torch.no_grad()
def image_features(
    model,
    preprocess,
    items: Sequence[Item],
    device,
    batch_size: int,
    amp=False,
    dtype=None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Normalised image features of ``items`` (in order), batch by batch."""
    out = []
    for start in range(0, len(items), batch_size):
        batch = torch.stack([preprocess(item.load()) for item in items[start : start + batch_size]]).to(device)
        if dtype is not None:
            batch = batch.to(dtype)
        with _autocast(device, amp):
            out.append(F.normalize(model.encode_image(batch), dim=-1).float().cpu())
        if progress:
            progress(min(start + batch_size, len(items)))
    return torch.cat(out) if out else torch.zeros(0, 0)


def classification_counts(logits: torch.Tensor, target: torch.Tensor, n_classes: int) -> dict[str, int | None]:
    """Images right at top-1 and top-5 (None with fewer than 5 classes), and how many were scored."""
    pred_top = logits.topk(min(5, n_classes), dim=1)[1]
    top5 = int((pred_top == target[:, None]).any(dim=1).sum()) if n_classes >= 5 else None
    return {"n": len(target), "acc1": int((pred_top[:, 0] == target).sum()), "acc5": top5}


def classification_metrics(
    logits: torch.Tensor, target: torch.Tensor, n_classes: int, counts: dict[str, int | None] | None = None
) -> dict[str, float]:
    """Accuracies as exact fractions of the counts (153/300 is 0.51, not float32's 0.50999999);
    ``counts``: :func:`classification_counts` of the same logits, when the caller has them already."""
    counts = counts or classification_counts(logits, target, n_classes)
    n = counts["n"]
    pred = logits.argmax(dim=1)
    recalls = [
        ((pred == c) & (target == c)).sum().item() / (target == c).sum().item() for c in target.unique().tolist()
    ]
    return {
        "acc1": counts["acc1"] / n,
        "acc5": counts["acc5"] / n if counts["acc5"] is not None else float("nan"),
        "mean_per_class_recall": sum(recalls) / len(recalls),
    }


def retrieval_counts(
    image_emb: torch.Tensor, text_emb: torch.Tensor, text_image: torch.Tensor, ks: Sequence[int] = RECALL_KS
) -> dict[str, int]:
    """Captions whose image is in their top k (of ``n_captions``), images with a caption in their top k
    (of ``n_images``). ``text_image[t]``: the index of caption t's image."""
    scores = text_emb @ image_emb.T
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(scores)), text_image] = True
    counts = {"n_captions": scores.shape[0], "n_images": scores.shape[1]}
    for k in ks:
        top_images = scores.topk(min(k, scores.shape[1]), dim=1)[1]
        counts[f"image_retrieval_recall@{k}"] = int(positive.gather(1, top_images).any(1).sum())
        top_texts = scores.T.topk(min(k, scores.shape[0]), dim=1)[1]
        counts[f"text_retrieval_recall@{k}"] = int(positive.T.gather(1, top_texts).any(1).sum())
    return counts


def retrieval_metrics(
    image_emb: torch.Tensor, text_emb: torch.Tensor, text_image: torch.Tensor, ks: Sequence[int] = RECALL_KS
) -> dict[str, float]:
    """Recalls as exact fractions of :func:`retrieval_counts`."""
    counts = retrieval_counts(image_emb, text_emb, text_image, ks)
    return {
        key: value / counts["n_captions" if key.startswith("image_") else "n_images"]
        for key, value in counts.items()
        if "@" in key
    }


def _gather_rows(x: torch.Tensor, index: torch.Tensor, n: int, rank: int, world: int) -> torch.Tensor:
    """Reassemble rows computed round-robin across ranks into the full, ordered matrix."""
    if world == 1:
        return x
    parts: list = [None] * world
    dist.all_gather_object(parts, (index, x))
    full = torch.zeros(n, *x.shape[1:], dtype=x.dtype)
    for idx, rows in parts:
        full[idx] = rows
    return full


@torch.no_grad()
def classify(
    model,
    tokenizer,
    dataset: EvalSet,
    feats: torch.Tensor,
    device: torch.device | str = "cpu",
    amp: bool = False,
    templates: Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-shot logits (N×C) of the images' normalised features ``feats`` and their labels (N)."""
    templates = list(templates or dataset.templates or [])
    if not templates:
        raise ValueError(f"{dataset.name}: no templates (give --templates FILE or the dataset's templates file)")
    device = torch.device(device)
    classifier = class_embeddings(model, tokenizer, dataset.classnames, templates, device, amp).float().cpu()
    target = torch.tensor([item.label for item in dataset.items])
    if int(target.max()) >= len(dataset.classnames):
        raise ValueError(f"{dataset.name}: label {int(target.max())} but only {len(dataset.classnames)} class names")
    return 100.0 * feats @ classifier, target


@torch.no_grad()
def evaluate_counts(
    model,
    preprocess,
    tokenizer,
    dataset: EvalSet,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    amp: bool = False,
    templates: Sequence[str] | None = None,
    rank: int = 0,
    world_size: int = 1,
    dtype: torch.dtype | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[str, float], dict[str, int | None]]:
    """Metrics of one dataset and the counts they are fractions of. With ``world_size`` > 1 every rank
    encodes its share of the images (round-robin) and the results are gathered: a collective, every rank
    gets the metrics."""
    device = torch.device(device)
    mine = list(range(rank, len(dataset.items), world_size))
    feats = image_features(
        model, preprocess, [dataset.items[i] for i in mine], device, batch_size, amp, dtype, progress
    )
    feats = _gather_rows(feats, torch.tensor(mine, dtype=torch.long), len(dataset.items), rank, world_size)
    if dataset.task == "classification":
        logits, target = classify(model, tokenizer, dataset, feats, device, amp, templates)
        n_classes = len(dataset.classnames)
        counts = classification_counts(logits, target, n_classes)
        return classification_metrics(logits, target, n_classes, counts), counts
    captions = [c for item in dataset.items for c in item.captions]
    owner = torch.tensor([i for i, item in enumerate(dataset.items) for _ in item.captions])
    text_rows = []
    for start in range(0, len(captions), batch_size):
        tokens = tokenizer(captions[start : start + batch_size]).to(device)
        with _autocast(device, amp):
            text_rows.append(F.normalize(model.encode_text(tokens), dim=-1).float().cpu())
    text = torch.cat(text_rows)
    return retrieval_metrics(feats, text, owner), retrieval_counts(feats, text, owner)


def evaluate(*args, **kwargs) -> dict[str, float]:
    """The metrics of :func:`evaluate_counts` alone."""
    return evaluate_counts(*args, **kwargs)[0]


def count_fields(counts: dict[str, int | None]) -> dict:
    """A result record's ``correct`` (per metric) and ``n`` (images; for retrieval, captions and images)
    beside its ``metrics``, so that every accuracy reads as the fraction it is."""
    if "n" in counts:
        return {"correct": {k: v for k, v in counts.items() if k != "n"}, "n": counts["n"]}
    n = {"captions": counts["n_captions"], "images": counts["n_images"]}
    return {"correct": {k: v for k, v in counts.items() if "@" in k}, "n": n}

"""The text tower's half of the diagnosis: per SugarCrepe-format subset, how close the text embeddings of
each caption and its hard negative are. A mean cosine near 1.0 says the text tower hardly tells the two
apart, whatever the image side does; :mod:`eval_zeroshot.diagnostics_verdict` reads it against
``TEXT_BLIND_COSINE``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .compositional import Scorer


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

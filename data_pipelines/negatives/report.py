"""How the rule-based negatives compare with SugarCrepe's official (LLM-written, human-checked) ones.

For each SugarCrepe file: the share of positives that get any negative, the share that get one of the
matching type, how often our first (and any) negative of that type equals the official negative
exactly (ignoring case and punctuation), and the token edit distance between them. This says what
the rules cover and what an LLM adds (the ``add_*`` categories have no rule-based counterpart).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vlp.common.tables import markdown_table

from .rules import candidates, generate, normalise
from .types import SUGARCREPE_TYPES

CHECKOUT = Path(__file__).resolve().parents[2]  # the folder that holds data_pipelines/


def default_sugarcrepe_dir() -> Path | None:
    """$VLP_SUGARCREPE, else ``benchmarks/sugarcrepe`` in $VLP_SHARED or in ``shared/`` beside this checkout."""
    env = os.environ.get("VLP_SUGARCREPE")
    if env:
        return Path(env)
    shared = os.environ.get("VLP_SHARED")
    path = (Path(shared) if shared else CHECKOUT.parent / "shared") / "benchmarks" / "sugarcrepe"
    return path if path.is_dir() else None


def token_edit_distance(a: str, b: str) -> int:
    """Levenshtein distance over normalised words."""
    x, y = normalise(a).split(), normalise(b).split()
    prev = list(range(len(y) + 1))
    for i, wx in enumerate(x, 1):
        cur = [i]
        for j, wy in enumerate(y, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (wx != wy)))
        prev = cur
    return prev[-1]


def report(sugarcrepe_dir: str | os.PathLike, k: int = 4, seed: int = 0) -> list[dict]:
    rows = []
    files = sorted(Path(sugarcrepe_dir).glob("*.json"))
    if not files:
        raise FileNotFoundError(f"{sugarcrepe_dir} holds no SugarCrepe *.json files")
    for path in files:
        data = json.loads(path.read_text())
        types = SUGARCREPE_TYPES.get(path.stem, ())
        n = len(data)
        any_neg = typed = exact_first = exact_any = 0
        dist_first: list[int] = []
        dist_best: list[int] = []
        for item in data.values():
            caption, official = item["caption"], item["negative_caption"]
            if generate(caption, k=k, seed=seed, tagger=None):
                any_neg += 1
            pool = candidates(caption, seed)
            ours = [text for t in types for text in pool[t] if normalise(text) != normalise(caption)]
            if not ours:
                continue
            typed += 1
            target = normalise(official)
            exact_first += normalise(ours[0]) == target
            exact_any += any(normalise(o) == target for o in ours)
            dists = [token_edit_distance(o, official) for o in ours]
            dist_first.append(dists[0])
            dist_best.append(min(dists))
        rows.append(
            {
                "file": path.stem,
                "our_types": "+".join(types) or "-",
                "n": n,
                "any_negative": round(any_neg / n, 4),
                "matching_type": round(typed / n, 4) if types else None,
                "exact_first": round(exact_first / typed, 4) if typed else None,
                "exact_any": round(exact_any / typed, 4) if typed else None,
                "edit_distance_first": round(sum(dist_first) / len(dist_first), 2) if dist_first else None,
                "edit_distance_best": round(sum(dist_best) / len(dist_best), 2) if dist_best else None,
            }
        )
    return rows


COLUMNS = (
    "file",
    "our_types",
    "n",
    "any_negative",
    "matching_type",
    "exact_first",
    "exact_any",
    "edit_distance_first",
    "edit_distance_best",
)


def markdown(rows: list[dict]) -> str:
    return markdown_table(rows, list(COLUMNS))

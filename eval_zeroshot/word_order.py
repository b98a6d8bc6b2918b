"""ARO's COCO-Order and Flickr30k-Order, as the official code builds and scores them.

One case per caption with options ``[original, shuffled nouns and adjectives, shuffled all but nouns
and adjectives, shuffled within trigrams, shuffled trigrams]``, each through ``pre_caption(·, 30)``;
correct iff the argmax is the original (a tie counts as correct); seeded shuffles. Nouns and
adjectives come from spaCy's tagger (as the official code) or, offline, from data_pipelines' lexicon.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from data_pipelines.negatives.lexicon import pos_tag

from .compositional import Scorer, check_images, first_argmax_correct, load_rgb
from .datasets import DatasetError


def pre_caption(caption: str, max_words: int = 30) -> str:
    """BLIP's caption cleaning, as ARO applies it."""
    caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption).rstrip("\n").strip(" ")
    return " ".join(caption.split(" ")[:max_words])


def _shuffle_where(words: list[str], chosen: Sequence[bool], rng: random.Random) -> list[str]:
    idx = [i for i, c in enumerate(chosen) if c]
    picked = [words[i] for i in idx]
    rng.shuffle(picked)
    out = list(words)
    for i, w in zip(idx, picked, strict=True):
        out[i] = w
    return out


def shuffle_nouns_and_adjectives(words: list[str], tags: Sequence[str], rng: random.Random) -> list[str]:
    return _shuffle_where(words, [t in ("NOUN", "ADJ") for t in tags], rng)


def shuffle_all_but_nouns_and_adjectives(words: list[str], tags: Sequence[str], rng: random.Random) -> list[str]:
    return _shuffle_where(words, [t not in ("NOUN", "ADJ") for t in tags], rng)


def _trigrams(words: list[str]) -> list[list[str]]:
    return [words[i : i + 3] for i in range(0, len(words), 3)]


def shuffle_within_trigrams(words: list[str], rng: random.Random) -> list[str]:
    out = []
    for tri in _trigrams(words):
        tri = list(tri)
        rng.shuffle(tri)
        out += tri
    return out


def shuffle_trigrams(words: list[str], rng: random.Random) -> list[str]:
    tris = _trigrams(words)
    rng.shuffle(tris)
    return [w for tri in tris for w in tri]


def order_options(caption: str, tagger: Callable[[list[str]], list[str]], rng: random.Random) -> list[str]:
    """[original, nouns+adjectives shuffled, the rest shuffled, within trigrams, trigrams], cleaned."""
    words = pre_caption(caption).split()
    tags = tagger(words)
    variants = [
        words,
        shuffle_nouns_and_adjectives(words, tags, rng),
        shuffle_all_but_nouns_and_adjectives(words, tags, rng),
        shuffle_within_trigrams(words, rng),
        shuffle_trigrams(words, rng),
    ]
    return [pre_caption(" ".join(v)) for v in variants]


def spacy_pos_tagger() -> Callable[[list[str]], list[str]]:
    try:
        import spacy

        nlp = spacy.load("en_core_web_sm")
    except Exception:  # noqa: BLE001
        raise DatasetError(
            "COCO-Order and Flickr30k-Order shuffle nouns and adjectives, which needs spaCy's English tagger "
            "(as the official code): pip install spacy, then install the en_core_web_sm model package. "
            "Or pass --tagger lexicon to use vlp's own lexicon (numbers then differ from the official ones)."
        ) from None
    from spacy.tokens import Doc

    return lambda words: [t.pos_ for t in nlp(Doc(nlp.vocab, words=words))]


def lexicon_pos_tagger() -> Callable[[list[str]], list[str]]:
    """NOUN/ADJ from data_pipelines' lexicon (single words), everything else X."""
    return pos_tag


def read_karpathy(path: Path, images: Path) -> list[dict]:
    """Karpathy-split test JSON: a list of {"image": relative path, "caption": [captions]}."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exn:
        raise DatasetError(f"{path}: cannot read the Karpathy test file ({exn})") from None
    cases = []
    for i, rec in enumerate(data):
        if "image" not in rec or "caption" not in rec:
            raise DatasetError(f"{path}: item {i} lacks image/caption")
        captions = rec["caption"] if isinstance(rec["caption"], list) else [rec["caption"]]
        cases += [{"image": images / rec["image"], "caption": c} for c in captions]
    check_images([c["image"] for c in cases], f"{path} (looked in {images})")
    return cases


def score_order(scorer: Scorer, cases: list[dict], tagger, seed: int) -> torch.Tensor:
    rng = random.Random(seed)
    options = [order_options(c["caption"], tagger, rng) for c in cases]
    f = scorer.images([(c["image"],) for c in cases], lambda k: load_rgb(k[0]))
    flat = scorer.texts([o for opts in options for o in opts]).reshape(len(cases), 5, -1)
    scores = torch.einsum("nd,nkd->nk", f, flat)
    return first_argmax_correct(scores, 0)  # a tie with the original goes to the original: correct

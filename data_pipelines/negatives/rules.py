"""Rule-based hard-negative captions: DeGLA's five types plus relation replacement, offline.

``generate(caption, k=4, seed=0)`` returns up to ``k`` captions that differ from ``caption`` in one
structural way, each ``{"text", "type"}`` with a type of :mod:`.types`, which also says what each type
changes.

Words are recognised through :mod:`.lexicon` (which doubles as the part-of-speech step, see
:mod:`.spans`); when spaCy and an English model are installed, its tagger also resolves words the
lexicon finds ambiguous. Nothing is downloaded. Results are deterministic per (caption, seed); a
negative never equals the caption (ignoring case and punctuation), swaps keep the caption's bag of
words, and a caption with nothing to perturb yields fewer negatives, never a copy.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Callable, Sequence

from . import lexicon as lx
from .spans import Caption, Span, spacy_tagger
from .types import (
    REPLACE_ADJECTIVES,
    REPLACE_NOUNS,
    REPLACE_RELATION,
    RESHUFFLE_ORDER,
    SWAP_ADJECTIVES,
    SWAP_NOUNS,
    TYPES,
)

_DETERMINERS = {"a", "an", "the", "this", "that", "these", "those", "some", "his", "her", "its", "their", "my"}


def _match_case(old: str, new: str) -> str:
    if old.isupper() and len(old) > 1:
        return new.upper()
    if old[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


def _replace(cap: Caption, span: Span, new: str) -> dict[int, str | None]:
    """Edits (token index -> text, None drops it) that put ``new`` in place of the span."""
    first, last = cap.word_at[span.start], cap.word_at[span.end - 1]
    edits: dict[int, str | None] = {first: _match_case(cap.tokens[first], new)}
    edits.update({t: None for t in range(first + 1, last + 1)})
    if span.start > 0 and cap.words[span.start - 1] in ("a", "an"):  # a/an follows the new word
        article_at = cap.word_at[span.start - 1]
        article = "an" if new[:1].lower() in "aeiou" else "a"
        edits[article_at] = _match_case(cap.tokens[article_at], article)
    return edits


def _apply(cap: Caption, edits: dict[int, str | None]) -> str:
    tokens: list[str | None] = list(cap.tokens)
    for index, text in edits.items():
        tokens[index] = text
    return "".join(t for t in tokens if t is not None)


def normalise(text: str) -> str:
    """Lower case, no punctuation, single spaces: the sense in which a negative must differ."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


# ---------------------------------------------------------------- candidates per type


def _swap(cap: Caption, a: Span, b: Span) -> str:
    """Exchange the surface text of two spans (their whole token ranges)."""
    tokens = list(cap.tokens)
    (a, b) = (a, b) if a.start < b.start else (b, a)
    a0, a1 = cap.word_at[a.start], cap.word_at[a.end - 1] + 1
    b0, b1 = cap.word_at[b.start], cap.word_at[b.end - 1] + 1
    sa, sb = tokens[a0:a1], tokens[b0:b1]
    if a0 == 0 and sa[0][:1].isupper() and not (len(sa[0]) > 1 and sa[0].isupper()):  # sentence case stays
        sb = [sb[0][:1].upper() + sb[0][1:], *sb[1:]]
        sa = [sa[0][:1].lower() + sa[0][1:], *sa[1:]]
    return "".join(tokens[:a0] + sb + tokens[a1:b0] + sa + tokens[b1:])


def _pairs(items: Sequence[Span]) -> list[tuple[Span, Span]]:
    return [(items[i], items[j]) for i in range(len(items)) for j in range(i + 1, len(items))]


def _article_clash(cap: Caption, a: Span, b: Span) -> bool:
    """Whether swapping the spans leaves "a"/"an" before a word of the other sound."""

    def needs_an(span: Span) -> bool:
        return cap.words[span.start][:1] in "aeiou"

    def article(span: Span) -> str:
        return cap.words[span.start - 1] if span.start > 0 else ""

    return any(article(x) in ("a", "an") and needs_an(y) != needs_an(x) for x, y in ((a, b), (b, a)))


def _swap_nouns(cap: Caption) -> list[str]:
    nouns = [s for s in cap.spans if s.role == "noun"]
    pairs = [(a, b) for a, b in _pairs(nouns) if a.lemma != b.lemma]
    # Grammatical swaps first: the same number, and no "an cat" (a swap keeps every word, articles too).
    pairs.sort(key=lambda p: (p[0].plural != p[1].plural, _article_clash(cap, *p)))
    return [_swap(cap, a, b) for a, b in pairs]


def _swap_adjectives(cap: Caption) -> list[str]:
    adjs = [s for s in cap.spans if s.role == "adj" and s.group != "count"]
    nouns = [s.start for s in cap.spans if s.role == "noun"]
    pairs = []
    for a, b in _pairs(adjs):
        if a.lemma == b.lemma:
            continue
        if not any(a.start < n < b.start for n in nouns):  # must describe different things
            continue
        pairs.append((a.group != b.group, a, b))  # same kind first (colour <-> colour)
    pairs.sort(key=lambda p: p[0])
    return [_swap(cap, a, b) for _, a, b in pairs]


def _noun_phrases(cap: Caption) -> list[Span]:
    """[determiner/count] [attributes] noun: the chunk that moves as a whole."""
    by_start = {s.start: s for s in cap.spans}
    phrases = []
    for noun in (s for s in cap.spans if s.role == "noun"):
        start = noun.start
        while start > 0:
            prev = by_start.get(start - 1)
            prev_word = cap.words[start - 1]
            if prev is not None and prev.role == "adj":
                start -= 1
            elif prev_word in _DETERMINERS:
                start -= 1
                break
            else:
                # multi-word spans ending right before
                cand = [s for s in cap.spans if s.end == start and s.role == "adj"]
                if cand:
                    start = cand[0].start
                    continue
                break
        phrases.append(Span(start, noun.end, "np", noun.lemma, noun.group, noun.plural))
    return phrases


def _reshuffle_order(cap: Caption) -> list[str]:
    phrases = _noun_phrases(cap)
    out = []
    for a, b in _pairs(phrases):
        if a.end > b.start or a.lemma == b.lemma:
            continue
        out.append((a.plural != b.plural, _swap(cap, a, b)))
    out.sort(key=lambda p: p[0])
    return [text for _, text in out]


def _replace_adjectives(cap: Caption, rng: random.Random) -> list[str]:
    present = set(cap.words)
    out = []
    for span in (s for s in cap.spans if s.role == "adj"):
        if span.group == "count":
            if span.lemma == "one":
                continue  # "one" -> "two" would break agreement with a singular noun
            choices = [c for c in lx.ATTRIBUTE_GROUPS["count"] if c not in present and c != "one"]
        elif span.lemma in lx.ATTRIBUTE_OPPOSITES and lx.ATTRIBUTE_OPPOSITES[span.lemma] not in present:
            choices = [lx.ATTRIBUTE_OPPOSITES[span.lemma]]
        else:
            choices = [c for c in lx.ATTRIBUTE_GROUPS[span.group] if c not in present]
        if not choices:
            continue
        out.append(_apply(cap, _replace(cap, span, rng.choice(choices))))
    return out


def _replace_nouns(cap: Caption, rng: random.Random) -> list[str]:
    present = {s.lemma for s in cap.spans if s.role == "noun"}
    out = []
    for span in (s for s in cap.spans if s.role == "noun"):
        choices = sorted({n for n in lx.NOUN_GROUPS[span.group] if n not in present})
        if not choices:
            continue
        new = rng.choice(choices)
        out.append(_apply(cap, _replace(cap, span, lx.plural(new) if span.plural else new)))
    return out


def _replace_relation(cap: Caption, rng: random.Random) -> list[str]:
    out = []
    present = set(cap.words)
    for span in cap.spans:
        if span.role == "rel":
            new = lx.SPATIAL_OPPOSITES[span.lemma]
        elif span.role == "verb":
            forms = lx.verb_forms(span.lemma)
            choices = [
                lx.verb_forms(v)[span.form]
                for v in lx.VERB_GROUPS[span.group]
                if v != span.lemma and span.form in lx.verb_forms(v) and lx.verb_forms(v)[span.form] not in present
            ]
            if not choices or span.form not in forms:
                continue
            new = rng.choice(choices)
        else:
            continue
        out.append(_apply(cap, _replace(cap, span, new)))
    return out


def candidates(caption: str, seed: int = 0, tagger: Callable | None = None) -> dict[str, list[str]]:
    """Every negative the rules can make, by type, in a deterministic order."""
    cap = Caption(caption, tagger)
    rng = random.Random(zlib.crc32(f"{seed}\x1f{caption}".encode()))
    # The three replacements draw from one generator, in this order.
    return {
        RESHUFFLE_ORDER: _reshuffle_order(cap),
        SWAP_NOUNS: _swap_nouns(cap),
        SWAP_ADJECTIVES: _swap_adjectives(cap),
        REPLACE_ADJECTIVES: _replace_adjectives(cap, rng),
        REPLACE_NOUNS: _replace_nouns(cap, rng),
        REPLACE_RELATION: _replace_relation(cap, rng),
    }


_AUTO = object()


def generate(
    caption: str,
    k: int = 4,
    seed: int = 0,
    types: Sequence[str] | None = None,
    tagger: Callable | None | object = _AUTO,
) -> list[dict]:
    """Up to ``k`` hard negatives of ``caption``, each ``{"text", "type"}``.

    One negative per applicable type first (types in a seeded order), then further ones round-robin;
    never the caption itself, never twice the same text. ``tagger``: spaCy's when installed (the
    default), None for the lexicon alone, or any callable text -> [(start, end, coarse_tag)].
    """
    if types is not None:
        unknown = set(types) - set(TYPES)
        if unknown:
            raise ValueError(f"unknown negative types {sorted(unknown)}; known: {', '.join(TYPES)}")
    tagger = spacy_tagger() if tagger is _AUTO else tagger
    pools = candidates(caption, seed, tagger)
    wanted = [t for t in TYPES if types is None or t in types]
    rng = random.Random(zlib.crc32(f"order\x1f{seed}\x1f{caption}".encode()))
    rng.shuffle(wanted)
    seen = {normalise(caption)}
    out: list[dict] = []
    depth = 0
    while len(out) < k and any(depth < len(pools[t]) for t in wanted):
        for kind in wanted:
            if depth < len(pools[kind]) and len(out) < k:
                text = pools[kind][depth]
                key = normalise(text)
                if key not in seen and key:
                    seen.add(key)
                    out.append({"text": text, "type": kind})
        depth += 1
    return out

"""Finding the words a rule may change: a caption's tokens and its spans (nouns, attributes, relations, verbs).

A span is a run of words the lexicon lists (multi-word entries first, e.g. "on top of"); a word with
several readings ("orange": colour or fruit) is resolved by a tagger when one is given, else by the
next word.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from . import lexicon as lx

_TOKEN = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+|\s+|[^\sA-Za-z\d]")
_MAX_PHRASE = 4


@dataclass(frozen=True)
class Span:
    """Words ``start:end`` (indices into the word list) playing one role."""

    start: int
    end: int
    role: str  # noun | adj | rel | verb
    lemma: str
    group: str = ""
    plural: bool = False
    form: str = ""  # verb form: ing | base | s


@lru_cache(maxsize=1)
def _vocabulary() -> dict[tuple[str, ...], list[Span]]:
    """Word sequence -> the readings it can have (role, lemma, group, number, form)."""
    vocab: dict[tuple[str, ...], list[Span]] = {}

    def add(phrase: str, span: Span) -> None:
        vocab.setdefault(tuple(phrase.split(" ")), []).append(span)

    for group, nouns in lx.NOUN_GROUPS.items():
        for noun in nouns:
            add(noun, Span(0, 0, "noun", noun, group, False))
            if lx.plural(noun) != noun:
                add(lx.plural(noun), Span(0, 0, "noun", noun, group, True))
    for group, adjectives in lx.ATTRIBUTE_GROUPS.items():
        for adj in adjectives:
            add(adj, Span(0, 0, "adj", adj, group))
    for rel in lx.SPATIAL_OPPOSITES:
        add(rel, Span(0, 0, "rel", rel, "spatial"))
    for group, verbs in lx.VERB_GROUPS.items():
        for ing in verbs:
            for form, surface in lx.verb_forms(ing).items():
                add(surface, Span(0, 0, "verb", ing, group, form=form))
    return vocab


@lru_cache(maxsize=1)
def _spacy():
    """spaCy's English tagger when a model is installed; never downloads."""
    try:
        import spacy

        return spacy.load("en_core_web_sm")
    except Exception:  # noqa: BLE001 - spaCy or its model absent: the lexicon alone decides
        return None


def spacy_tagger() -> Callable[[str], list[tuple[int, int, str]]] | None:
    nlp = _spacy()
    if nlp is None:
        return None
    return lambda text: [(t.idx, t.idx + len(t.text), t.pos_) for t in nlp(text)]


class Caption:
    """A tokenised caption: words with their positions among all tokens, and the spans found."""

    def __init__(self, text: str, tagger: Callable | None = None):
        self.text = text
        self.tokens = _TOKEN.findall(text)
        self.word_at = [i for i, t in enumerate(self.tokens) if t[0].isalpha()]
        self.words = [self.tokens[i].lower() for i in self.word_at]
        pos = self._pos(tagger) if tagger is not None else None
        self.spans = self._find_spans(pos)

    def _pos(self, tagger) -> list[str | None]:
        """The tagger's coarse tag for each word (by character offset)."""
        starts, offset = [], 0
        for tok in self.tokens:
            starts.append(offset)
            offset += len(tok)
        tags = {start: tag for start, _end, tag in tagger(self.text)}
        return [tags.get(starts[i]) for i in self.word_at]

    def _find_spans(self, pos: list[str | None] | None) -> list[Span]:
        vocab = _vocabulary()
        spans: list[Span] = []
        i = 0
        while i < len(self.words):
            for n in range(min(_MAX_PHRASE, len(self.words) - i), 0, -1):
                readings = vocab.get(tuple(self.words[i : i + n]))
                if readings:
                    span = self._disambiguate(readings, i, n, pos)
                    if span is not None:
                        spans.append(Span(i, i + n, span.role, span.lemma, span.group, span.plural, span.form))
                        i += n
                        break
            else:
                i += 1
        return spans

    def _disambiguate(self, readings: list[Span], i: int, n: int, pos) -> Span | None:
        roles = {r.role for r in readings}
        if len(roles) == 1:
            return readings[0]
        if pos is not None and pos[i] is not None:  # a tagger knows
            wanted = {"NOUN": "noun", "PROPN": "noun", "ADJ": "adj", "VERB": "verb", "ADP": "rel"}.get(pos[i])
            for r in readings:
                if r.role == wanted:
                    return r
        nxt = self.words[i + n] if i + n < len(self.words) else ""
        next_readings = _vocabulary().get((nxt,), [])
        before_noun = any(r.role in ("noun", "adj") for r in next_readings)
        prefer = "adj" if before_noun else "noun"  # "an orange cat" vs "an orange"
        for r in readings:
            if r.role == prefer:
                return r
        return readings[0]

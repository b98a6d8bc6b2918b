"""The English lexicon behind the rule-based hard-negative generator: word lists in ``lexicon.json``.

It is also the part-of-speech step: a word is a noun, an attribute or a relation because it is
listed there (no tagger model is installable offline). Words are grouped so that replacements stay
plausible: a colour is replaced by a colour, an animal by an animal, "on" by "under".

A word appears in at most one group of a table (attributes, nouns, verbs), so that its reading and
its substitutes are unambiguous; the loader refuses a file where it does not. A word may still be
both a noun and an attribute ("glass", "orange"): the caption's context decides.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

DATA_FILE = Path(__file__).with_name("lexicon.json")
_GROUPED = ("attributes", "nouns", "verbs")  # tables of groups of words
_MAPPINGS = ("attribute_opposites", "irregular_plurals", "relations", "verb_base_forms")  # word -> word


class LexiconError(ValueError):
    """A lexicon file that is not usable; the message names the file and the entry."""


@dataclass(frozen=True)
class Lexicon:
    attributes: dict[str, list[str]]
    attribute_opposites: dict[str, str]
    nouns: dict[str, list[str]]
    irregular_plurals: dict[str, str]
    relations: dict[str, str]
    verbs: dict[str, list[str]]
    verb_base_forms: dict[str, str]


def load_lexicon(path: str | os.PathLike = DATA_FILE) -> Lexicon:
    """Read and check a lexicon file: every table present, no word twice in one table, no key twice."""
    path = Path(path)

    def no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
        keys = [k for k, _ in pairs]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise LexiconError(f"{path}: key {twice[0]!r} is given twice in one table")
        return dict(pairs)

    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=no_duplicate_keys)
    except (OSError, json.JSONDecodeError) as exn:
        raise LexiconError(f"{path}: cannot read the lexicon ({exn})") from None
    missing = [t for t in (*_GROUPED, *_MAPPINGS) if not isinstance(data.get(t), dict)]
    if missing:
        raise LexiconError(f"{path}: missing or not an object: {', '.join(missing)}")
    for table in _GROUPED:
        where: dict[str, str] = {}
        for group, words in data[table].items():
            if not isinstance(words, list) or not all(isinstance(w, str) and w for w in words):
                raise LexiconError(f"{path}: {table} group {group!r} must be a list of words")
            for word in words:
                if word in where:
                    groups = f"group {group!r}" if where[word] == group else f"groups {where[word]!r} and {group!r}"
                    raise LexiconError(f"{path}: {word!r} is listed twice in {table}, in {groups}")
                where[word] = group
    for table in _MAPPINGS:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in data[table].items()):
            raise LexiconError(f"{path}: {table} must map words to words")
    return Lexicon(**{t: data[t] for t in (*_GROUPED, *_MAPPINGS)})


_LEXICON = load_lexicon()
ATTRIBUTE_GROUPS: dict[str, list[str]] = _LEXICON.attributes
# Replacing these by their opposite makes the hardest negative.
ATTRIBUTE_OPPOSITES: dict[str, str] = _LEXICON.attribute_opposites
NOUN_GROUPS: dict[str, list[str]] = _LEXICON.nouns
IRREGULAR_PLURALS: dict[str, str] = _LEXICON.irregular_plurals
# Spatial relations and the relation that contradicts them.
SPATIAL_OPPOSITES: dict[str, str] = _LEXICON.relations
# Action verbs in groups of plausible substitutes; the -ing form is the key, other forms are derived.
VERB_GROUPS: dict[str, list[str]] = _LEXICON.verbs


def plural(noun: str) -> str:
    """English plural of a (possibly multi-word) noun: the last word inflects."""
    *head, last = noun.split(" ")
    if last in IRREGULAR_PLURALS:
        out = IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        out = last + "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        out = last[:-1] + "ies"
    elif last.endswith("fe"):
        out = last[:-2] + "ves"
    else:
        out = last + "s"
    return " ".join([*head, out])


def verb_forms(ing: str) -> dict[str, str]:
    """Surface forms of a verb given its -ing form: {"ing", "base", "s"} (participles
    have only themselves)."""
    base = _LEXICON.verb_base_forms.get(ing)
    if base is None:
        return {"ing": ing}
    third = base + ("es" if base.endswith(("s", "sh", "ch", "x")) else "s")
    if base.endswith("y") and base[-2:-1] not in "aeiou":
        third = base[:-1] + "ies"
    return {"ing": ing, "base": base, "s": third}


@lru_cache(maxsize=1)
def _single_word_tags() -> tuple[frozenset[str], frozenset[str]]:
    nouns = {n for g in NOUN_GROUPS.values() for n in g if " " not in n}
    nouns |= {plural(n) for n in nouns}
    adjectives = {a for g in ATTRIBUTE_GROUPS.values() for a in g}
    return frozenset(nouns), frozenset(adjectives)


def pos_tag(words: list[str]) -> list[str]:
    """A coarse part-of-speech tag per (lower-case) word from the lexicon alone: ``NOUN`` for a listed
    noun or its plural (single words; a noun first), ``ADJ`` for a listed attribute, else ``X``."""
    nouns, adjectives = _single_word_tags()
    return ["NOUN" if w in nouns else "ADJ" if w in adjectives else "X" for w in words]

"""Hard-negative captions: the types (:mod:`.types`), the lexicon, the rule-based generator
(:mod:`.rules`), rewriting shards with them or importing an LLM's (:mod:`.rewrite`), and a report
against SugarCrepe's official negatives (:mod:`.report`)."""

from .rules import candidates, generate
from .types import TYPES

__all__ = ["TYPES", "candidates", "generate"]

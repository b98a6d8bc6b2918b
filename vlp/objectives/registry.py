"""The registry of objective terms: each term is one function plus one registration.

A term declares what it needs beyond this rank's image and caption features (hard negatives, the EMA
teacher, ProtoCLIP's heads and episodes, the external sentence teacher), whether feature-cached
accumulation is exact for it, and its scope:

* ``global``: it compares across the batch, so it gets :class:`TermInputs`, whose ``*_all`` features
  are gathered from every rank (lazily, once, with gradient), and averages over ``rows``: all rows,
  or this rank's own with ``train.local_loss``;
* ``local``: it is a mean over this rank's own samples and gets :class:`LocalInputs`, which has no
  gathered features at all.

Config validation, the trainer and the objective ask this registry what a term needs instead of
deciding it again from term names. Terms register when their module is imported: vlp's own in
``vlp/objectives/terms.py`` and ``vlp/protoclip/loss.py`` (both imported by ``vlp.objectives``); a
term in a module of your own must be imported before the configuration is read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ..collectives import gather_with_grad, gather_without_grad

if TYPE_CHECKING:
    from .features import Features

NEGATIVES = "negatives"  # hard-negative captions (data.negatives)
TEACHER = "teacher"  # the EMA teacher's caption features
TEACHER_ALL = "teacher_all"  # ... and its image and negative-caption features
HEADS = "heads"  # ProtoCLIP's projection heads and clustered episodes
EXTERNAL = "external"  # ProtoCLIP's external sentence teacher
NEEDS = (NEGATIVES, TEACHER, TEACHER_ALL, HEADS, EXTERNAL)
SCOPES = ("global", "local")


@dataclass(frozen=True)
class TermOptions:
    """The objective's hyper-parameters a term may read (objective.* in the config)."""

    dcl_sigma: float | None = None
    tgc_temperature: float = 0.1
    proto_target_temperature: float = 0.01


class LocalInputs:
    """What a local term sees: this rank's features, the options, and its rank in the world."""

    def __init__(self, f: Features, options: TermOptions, rank: int, world_size: int):
        self.f, self.options, self.rank, self.world_size = f, options, rank, world_size


class TermInputs(LocalInputs):
    """What a global term sees: also the batch gathered from all ranks (on first use) and this rank's
    query rows. Every rank evaluates the same terms in the same order, so the lazy gathers are
    matched collectives."""

    def __init__(self, f: Features, options: TermOptions, rank: int, world_size: int, local_loss: bool):
        super().__init__(f, options, rank, world_size)
        self.local_loss = local_loss and world_size > 1
        b = f.image.shape[0]
        # Query rows of the gathered batch: all of them, or this rank's own (local rows x global columns).
        self.rows = slice(rank * b, (rank + 1) * b) if self.local_loss else slice(None)
        self._gathered: dict[str, torch.Tensor | None] = {}

    def _gather(self, name: str, fn: Callable[[], torch.Tensor | None]) -> torch.Tensor | None:
        if name not in self._gathered:
            self._gathered[name] = fn()
        return self._gathered[name]

    @property
    def image_all(self) -> torch.Tensor:
        return self._gather("image", lambda: gather_with_grad(self.f.image))

    @property
    def text_all(self) -> torch.Tensor:
        return self._gather("text", lambda: gather_with_grad(self.f.text))

    @property
    def neg_text_all(self) -> torch.Tensor:
        """Negatives gathered apart from the positives, so that negative (b, k) keeps place B + b·K + k."""

        def gather() -> torch.Tensor:
            b, k, d = self.f.neg_text.shape
            return gather_with_grad(self.f.neg_text.reshape(b * k, d)).reshape(-1, k, d)

        return self._gather("neg_text", gather)

    @property
    def neg_mask_all(self) -> torch.Tensor | None:
        return self._gather(
            "neg_mask", lambda: None if self.f.neg_mask is None else gather_without_grad(self.f.neg_mask)
        )


TermFn = Callable[[LocalInputs], torch.Tensor]


@dataclass(frozen=True)
class Term:
    name: str
    fn: TermFn
    needs: frozenset[str]
    scope: str  # "global" or "local"
    accumulates: bool  # feature-cached accumulation gives its exact large-batch gradient
    doc: str


TERMS: dict[str, Term] = {}


def register_term(
    name: str, needs: tuple[str, ...] = (), scope: str = "global", accumulates: bool = True
) -> Callable[[TermFn], TermFn]:
    """Decorator: ``@register_term("igc", needs=(NEGATIVES,), scope="local")`` over ``fn(x)``, where
    x is a :class:`TermInputs` for a global term and a :class:`LocalInputs` for a local one."""
    unknown = set(needs) - set(NEEDS)
    if unknown or scope not in SCOPES:
        raise ValueError(f"term {name}: unknown needs {sorted(unknown)} or scope {scope!r}")

    def add(fn: TermFn) -> TermFn:
        if name in TERMS:
            raise ValueError(f"objective term {name!r} is registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        TERMS[name] = Term(name, fn, frozenset(needs), scope, accumulates, doc)
        return fn

    return add


def needs_of(names) -> frozenset[str]:
    """Everything the given terms need together."""
    return frozenset().union(*(TERMS[n].needs for n in names))


def terms_needing(names, need: str) -> list[str]:
    """Those of ``names`` that need ``need`` (in the given order)."""
    return [n for n in names if need in TERMS[n].needs]


def teacher_terms(names) -> list[str]:
    """Those of ``names`` that need the EMA teacher."""
    return [n for n in names if TERMS[n].needs & {TEACHER, TEACHER_ALL}]


def needs_teacher(names) -> bool:
    return bool(teacher_terms(names))


def not_accumulating(names) -> list[str]:
    """Those of ``names`` for which feature-cached accumulation would not be exact."""
    return [n for n in names if not TERMS[n].accumulates]

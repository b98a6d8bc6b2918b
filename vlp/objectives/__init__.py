"""Training objectives: pure loss functions of normalised features, a registry of named terms, and
their weighted sum.

Every loss follows open_clip's loss contract: L2-normalised features in, an exponentiated scale,
named losses out. A term (:mod:`.registry`) adapts one loss to the distributed batch and declares
what it needs; :class:`Objective` sums the active terms. Terms of ``global`` scope see the batch
gathered from all ranks with gradient (positives and negatives separately, so that negative (b, k)
keeps its place ``B + b·K + k``; with ``local_loss`` each rank takes only its own query rows); terms
of ``local`` scope are means over this rank's rows. Either way the loss averaged over ranks, and its
gradient averaged over ranks (as DDP and DeepSpeed do), equal those of one process holding the whole
batch.

Terms register themselves when their module is imported: this package's own (:mod:`.terms`) here,
ProtoCLIP's with :mod:`vlp.protoclip`, which imports this registry (never the other way round).
"""

from __future__ import annotations

import torch

from . import terms as _terms  # noqa: F401 - registers clip, dcl, negclip, igc, tgc, distill
from .contrastive import clip_loss, dcl_loss
from .distill import distill_loss
from .features import Features, concat_features
from .hard_negatives import igc_loss, negclip_loss, tgc_loss
from .registry import NEGATIVES, TERMS, LocalInputs, TermInputs, TermOptions, needs_of, needs_teacher

__all__ = [
    "TERMS",
    "Features",
    "Objective",
    "TermOptions",
    "clip_loss",
    "concat_features",
    "dcl_loss",
    "distill_loss",
    "igc_loss",
    "negclip_loss",
    "tgc_loss",
]


class Objective:
    """Weighted sum of named terms over the global batch; returns each term and ``"loss"``."""

    def __init__(
        self,
        terms: dict[str, float],
        rank: int = 0,
        world_size: int = 1,
        local_loss: bool = False,
        options: TermOptions | None = None,
    ):
        unknown = set(terms) - set(TERMS)
        if unknown:
            raise ValueError(
                f"unknown objective terms: {sorted(unknown)} (registered: {', '.join(TERMS)}; a package registers "
                "its own terms when imported, e.g. `import vlp.protoclip` for proto and proto_external)"
            )
        self.terms = {name: float(w) for name, w in terms.items()}
        self.rank, self.world_size, self.local_loss = rank, world_size, local_loss
        self.options = options or TermOptions()
        self.needs = needs_of(self.terms)

    @property
    def needs_negatives(self) -> bool:
        return NEGATIVES in self.needs

    @property
    def needs_teacher(self) -> bool:
        return needs_teacher(self.terms)

    def __call__(self, f: Features) -> dict[str, torch.Tensor]:
        shared = TermInputs(f, self.options, self.rank, self.world_size, self.local_loss)
        local = LocalInputs(f, self.options, self.rank, self.world_size)
        out = {name: TERMS[name].fn(shared if TERMS[name].scope == "global" else local) for name in self.terms}
        out["loss"] = sum(weight * out[name] for name, weight in self.terms.items())
        return out

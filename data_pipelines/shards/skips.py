"""Why a sample or a shard is skipped, and how many were: the reasons (the keys of the ``skipped``
counts), :class:`SkipSample` (raised by whatever meets bad input) and :class:`SkipCounter` (counts them,
and warns once per reason, so that bad input never kills a worker nor floods the log).
"""

from __future__ import annotations

import logging
from collections import Counter

log = logging.getLogger("data_pipelines")

# Reasons a sample or a shard is skipped (the keys of the ``skipped`` counts).
MISSING_IMAGE = "missing_image"
CORRUPT_IMAGE = "corrupt_image"
MISSING_CAPTION = "missing_caption"
MISSING_NEIGHBOUR = "missing_neighbour"  # asked for a neighbour: no neighbour.<ext> member or JSON field
OTHER_NEIGHBOUR_KIND = "other_neighbour_kind"  # filtered out: its neighbour is not of the kinds asked for
BAD_JSON = "bad_json"
BAD_NEGATIVES = "bad_negatives"
UNREADABLE_SHARD = "unreadable_shard"
TRUNCATED_SHARD = "truncated_shard"
# Not a skip: a shard read tried again after a transient failure (see iter_shard).
SHARD_READ_RETRIES = "shard_read_retries"


class SkipSample(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class SkipCounter:
    """Counts skipped samples and shards by reason; warns once for each reason."""

    def __init__(self, where: str = ""):
        self.counts: Counter[str] = Counter()
        self.where = where

    def add(self, reason: str, detail: str = "") -> None:
        if reason not in self.counts:
            log.warning("skipping %s%s: %s (further ones are counted, not logged)", reason, self.where, detail)
        self.counts[reason] += 1

    def count(self, reason: str) -> None:
        """Count without the warning (for events logged by their caller)."""
        self.counts[reason] += 1

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))

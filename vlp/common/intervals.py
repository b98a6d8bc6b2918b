"""Confidence intervals of one accuracy: the Wilson score interval of a binomial proportion.

One home for it, below every user: the diagnostics' linear probes, the report's whiskers and the study
draw it from here (the lowest layer, tests/test_layers.py).
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``correct`` successes in ``n`` trials (95% for the default z);
    (0, 1) when there are no trials."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))

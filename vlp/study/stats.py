"""Intervals and paired tests for a study: small pure functions over per-item correctness.

A metric of one cell is a 0/1 vector over the same items for every cell (the probes and zero-shot sets do
not change between cells), so two recipes can be compared item by item, seed by seed.

* ``bootstrap_ci``: mean accuracy over seeds with a 95% interval from a two-level bootstrap: resample the
  seeds, then the items within each drawn seed. Both sources of noise (training randomness and the
  finite probe set) widen the interval; with one seed it is the items' interval alone.
* ``paired_bootstrap``: the same resampling applied to the *difference* recipe − control, pairing
  seeds by their number and items by their index (the same draws for both), so shared item difficulty
  cancels out.
* ``mcnemar``: the exact two-sided McNemar test on discordant pairs pooled over paired seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BOOTSTRAP_SAMPLES = 2000
LEVEL = 0.95


def _as_matrix(per_seed: Sequence[Sequence[int] | np.ndarray]) -> np.ndarray:
    """Seeds × items (0/1) as float; every seed must score the same items."""
    rows = [np.asarray(r, dtype=np.float64) for r in per_seed]
    if not rows or len({len(r) for r in rows}) != 1 or len(rows[0]) == 0:
        raise ValueError(f"need ≥1 seed with the same, non-zero number of items; got lengths {[len(r) for r in rows]}")
    return np.stack(rows)


def _two_level_means(x: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of the grand mean of ``x`` (seeds × items): seeds, then items, resampled.

    Every seed scores the *same* items, so one draw of items is shared by all seeds of a replicate
    (a crossed design); drawing items afresh per seed would treat them as new items and narrow the
    interval by up to sqrt(seeds)."""
    s, n = x.shape
    out = np.empty(samples)
    chunk = max(1, 2_000_000 // (s * n))  # bounded memory for pooled metrics of thousands of items
    for start in range(0, samples, chunk):
        m = min(chunk, samples - start)
        seeds = rng.integers(0, s, size=(m, s))
        items = rng.integers(0, n, size=(m, 1, n))
        out[start : start + m] = x[seeds[:, :, None], items].mean(axis=(1, 2))
    return out


def bootstrap_ci(
    per_seed: Sequence[Sequence[int] | np.ndarray], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> dict[str, float]:
    """``{"mean", "lo", "hi", "seeds", "n"}``: mean accuracy over seeds and its 95% percentile interval."""
    x = _as_matrix(per_seed)
    reps = _two_level_means(x, samples, np.random.default_rng(seed))
    lo, hi = np.quantile(reps, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return {"mean": float(x.mean()), "lo": float(lo), "hi": float(hi), "seeds": x.shape[0], "n": x.shape[1]}


def paired_bootstrap(
    treated: Sequence[Sequence[int] | np.ndarray],
    control: Sequence[Sequence[int] | np.ndarray],
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> dict[str, float]:
    """``{"delta", "lo", "hi", "p_boot"}`` for mean(treated) − mean(control); rows paired by position
    (the same seed), columns by item. ``p_boot``: two-sided share of replicates on the other side of 0."""
    t, c = _as_matrix(treated), _as_matrix(control)
    if t.shape != c.shape:
        raise ValueError(f"paired comparison needs equal seeds × items, got {t.shape} and {c.shape}")
    reps = _two_level_means(t - c, samples, np.random.default_rng(seed))
    lo, hi = np.quantile(reps, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    p = 2 * min((reps <= 0).mean(), (reps >= 0).mean())
    return {"delta": float((t - c).mean()), "lo": float(lo), "hi": float(hi), "p_boot": float(min(1.0, p))}


def mcnemar(treated: Sequence[Sequence[int]], control: Sequence[Sequence[int]]) -> dict[str, float]:
    """Exact McNemar: ``b`` items right only under treatment, ``c`` right only under control (summed over
    paired seeds); p = two-sided binomial tail of min(b, c) under Binomial(b + c, 1/2)."""
    t, c = _as_matrix(treated).astype(bool), _as_matrix(control).astype(bool)
    if t.shape != c.shape:
        raise ValueError(f"paired comparison needs equal seeds × items, got {t.shape} and {c.shape}")
    b, cc = int((t & ~c).sum()), int((~t & c).sum())
    return {"b": b, "c": cc, "p": binomial_two_sided(min(b, cc), b + cc)}


def binomial_two_sided(k: int, n: int) -> float:
    """P(X ≤ k or X ≥ n − k) for X ~ Binomial(n, 1/2), k ≤ n/2 (1.0 when n = 0)."""
    if n == 0:
        return 1.0
    # Exact in integers: 2.0**n overflows a float beyond n = 1023 discordant items.
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)

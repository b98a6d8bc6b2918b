"""K-means and prototypical back translation over all ranks.

Written in torch with ``all_reduce`` rather than taken from faiss: every rank keeps only its own
features, each Lloyd iteration sums per-cluster coordinates and counts across ranks, and the seeded
initial centroids are assembled the same way, so all ranks hold identical centroids without gathering
the episode and without another dependency.
"""

from __future__ import annotations

import torch

from ..distributed import all_reduce_sum, gather_without_grad


def _points(x: torch.Tensor, chosen: torch.Tensor, counts: list[int], rank: int) -> torch.Tensor:
    """Rows ``chosen`` (indices into all ranks' rows, in rank order) on every rank: each comes from the
    one rank that holds it and is summed into place."""
    lo = sum(counts[:rank])
    out = torch.zeros(len(chosen), x.shape[1], dtype=torch.float64, device=x.device)
    mine = (chosen >= lo) & (chosen < lo + counts[rank])
    out[mine] = x[chosen[mine] - lo].double()
    return all_reduce_sum(out)


def _farthest(xd: torch.Tensor, assigned: torch.Tensor, m: int) -> torch.Tensor:
    """The ``m`` points farthest from their assigned centroids over all ranks (scikit-learn relocates
    empty clusters the same way); identical on every rank."""
    distance = (xd - assigned).pow(2).sum(1)
    top = distance.topk(min(m, len(distance)))
    values = torch.full((m,), -1.0, dtype=xd.dtype, device=xd.device)  # padding never wins: distances >= 0
    points = torch.zeros(m, xd.shape[1], dtype=xd.dtype, device=xd.device)
    values[: len(top.values)], points[: len(top.values)] = top.values, xd[top.indices]
    everyone = gather_without_grad(values)
    return gather_without_grad(points)[everyone.topk(m).indices]


def _lloyd(
    x: torch.Tensor, k: int, iters: int, seed: int, counts: list[int], rank: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One K-means run from ``k`` seeded points; returns (centroids, this rank's labels, inertia)."""
    total = sum(counts)
    g = torch.Generator().manual_seed(seed)
    centroids = _points(x, torch.randperm(total, generator=g)[:k].to(x.device), counts, rank)
    xd = x.double()
    for _ in range(iters):
        labels = torch.cdist(xd, centroids).argmin(1)
        sums = all_reduce_sum(torch.zeros_like(centroids).index_add_(0, labels, xd))
        sizes = all_reduce_sum(torch.bincount(labels, minlength=k).to(sums.dtype))
        filled = sizes > 0
        centroids[filled] = sums[filled] / sizes[filled, None]
        empty = (~filled).nonzero().flatten()
        if len(empty):  # the same on every rank: re-seed instead of keeping a stale centre
            centroids[empty] = _farthest(xd, centroids[labels], len(empty))
    distances, labels = torch.cdist(xd, centroids).min(1)
    inertia = all_reduce_sum(distances.pow(2).sum().reshape(1)).item()
    return centroids, labels, inertia


def kmeans(
    x: torch.Tensor, k: int, iters: int, seed: int, rank: int = 0, restarts: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean K-means over the rows of ``x`` on all ranks together; returns (K×P centroids, labels
    of this rank's rows). ``restarts`` runs from different seeded starts keep the one with the lowest
    inertia (faiss's ``nredo``); a cluster that empties is re-seeded with the point farthest from its
    centroid."""
    counts = gather_without_grad(torch.tensor([x.shape[0]], device=x.device)).tolist()
    if sum(counts) < k:
        raise ValueError(f"{sum(counts)} points cannot make {k} clusters; lower objective.proto.clusters")
    best = None
    for r in range(restarts):
        run = _lloyd(x, k, iters, seed + 7919 * r, counts, rank)  # restart 0 is the single run of seed
        if best is None or run[2] < best[2]:
            best = run
    centroids, labels, _ = best
    return centroids.to(x.dtype), labels


def back_translated(features: torch.Tensor, other_labels: torch.Tensor, k: int) -> torch.Tensor:
    """Prototypical back translation: centroid k is the mean of ``features`` whose *other-modality*
    label is k, over all ranks (an empty cluster gives 0)."""
    sums = torch.zeros(k, features.shape[1], dtype=torch.float64, device=features.device)
    sums.index_add_(0, other_labels, features.double())
    sizes = torch.bincount(other_labels, minlength=k).to(sums.dtype)
    all_reduce_sum(sums)
    all_reduce_sum(sizes)
    return (sums / sizes.clamp(min=1)[:, None]).to(features.dtype)

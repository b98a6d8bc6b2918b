"""K-means and prototypical back translation over all ranks.

Written in torch with ``all_reduce`` rather than taken from faiss: every rank keeps only its own
features, each Lloyd iteration sums per-cluster coordinates and counts across ranks, and the seeded
initial centroids are assembled the same way, so all ranks hold identical centroids without gathering
the episode and without another dependency.
"""

from __future__ import annotations

import torch

from ..distributed import all_reduce_sum, gather_without_grad


def _owned_rows(counts: list[int], rank: int) -> tuple[int, int]:
    start = sum(counts[:rank])
    return start, start + counts[rank]


def kmeans(x: torch.Tensor, k: int, iters: int, seed: int, rank: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean K-means over the rows of ``x`` on all ranks together; returns (K×P centroids, labels
    of this rank's rows). Empty clusters keep their previous centroid."""
    counts = gather_without_grad(torch.tensor([x.shape[0]], device=x.device)).tolist()
    total = sum(counts)
    if total < k:
        raise ValueError(f"{total} points cannot make {k} clusters; lower objective.proto.clusters")
    g = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(total, generator=g)[:k].to(x.device)
    lo, hi = _owned_rows(counts, rank)
    centroids = torch.zeros(k, x.shape[1], dtype=torch.float64, device=x.device)
    mine = (chosen >= lo) & (chosen < hi)
    centroids[mine] = x[chosen[mine] - lo].double()
    all_reduce_sum(centroids)  # each chosen point comes from the one rank that holds it
    xd = x.double()
    for _ in range(iters):
        labels = torch.cdist(xd, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, labels, xd)
        sizes = torch.bincount(labels, minlength=k).to(sums.dtype)
        all_reduce_sum(sums)
        all_reduce_sum(sizes)
        filled = sizes > 0
        centroids[filled] = sums[filled] / sizes[filled, None]
    labels = torch.cdist(xd, centroids).argmin(1)
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

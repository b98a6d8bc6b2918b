"""K-means and prototypical back translation over all ranks.

Written in torch with ``all_reduce`` rather than taken from faiss: every rank keeps only its own
features, each Lloyd iteration sums per-cluster coordinates and counts across ranks, and the seeded
initial centroids are assembled the same way, so all ranks hold identical centroids without gathering
the episode and without another dependency.

Memory is bounded: the assignment never builds the N×K distance matrix (at the CC3M recipe's ~25k
points per rank and 20k clusters a float64 one is 4 GB per iteration). It scores rows in chunks, in
the compute dtype (fp32 for fp32/bf16/fp16 features), with ``x·c − ½‖c‖²``: the nearest centroid is
the one with the largest score, since ``‖x − c‖² = ‖x‖² − 2(x·c − ½‖c‖²)`` and ``‖x‖²`` is the same
for every centroid. A chunk's score matrix stays under ``CHUNK_BYTES``. The distance of a point to its
own centroid (inertia, re-seeding of empty clusters) is taken directly from the assignment, row by
row, never from the score, whose subtraction would cancel for points near their centroid.

Every collective runs on tensors on ``x.device``, the device the process group serves (under NCCL a
CPU tensor in a collective raises).
"""

from __future__ import annotations

import torch

from ..collectives import all_reduce_sum, gather_without_grad

CHUNK_BYTES = 64 * 2**20  # the most a chunk's rows × K score matrix may take


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """fp32 for half-precision and fp32 features, float64 for float64 ones: the GEMM's dtype."""
    return torch.promote_types(x.dtype, torch.float32)


def _rows(width: int, dtype: torch.dtype, chunk_bytes: int | None) -> int:
    """Rows per chunk so that a chunk's rows × ``width`` matrix fits in ``chunk_bytes`` (read at call
    time, so that the module's constant can be changed)."""
    limit = CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    return max(1, limit // (width * torch.empty((), dtype=dtype).element_size()))


def assign(x: torch.Tensor, centroids: torch.Tensor, chunk_bytes: int | None = None) -> torch.Tensor:
    """Index of the nearest centroid (Euclidean) for every row of ``x``, in chunks of rows whose
    score matrix fits in ``chunk_bytes``; ties go to the lowest index, as ``argmin`` of distances."""
    labels, _ = _assign_and_sum(x, centroids, chunk_bytes, None)
    return labels


def _assign_and_sum(
    x: torch.Tensor, centroids: torch.Tensor, chunk_bytes: int | None, sums: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Labels of ``x``'s rows and, when ``sums`` (K×D) is given, each row added to its cluster's sum
    there (one pass over the chunks)."""
    dtype = compute_dtype(x)
    c = centroids.to(dtype)
    # ½‖c‖² from the float64 centroids, then rounded once: the bias term as exact as the dtype allows.
    bias = centroids.double().pow(2).sum(1).mul(-0.5).to(dtype)
    labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    rows = _rows(len(c), dtype, chunk_bytes)
    # One score buffer for every chunk: a fresh rows × K allocation each chunk is mapped and faulted in
    # anew (large blocks bypass the allocator's cache on CPU), which costs more than the argmax.
    scores = torch.empty(min(rows, x.shape[0]), len(c), dtype=dtype, device=x.device)
    for lo in range(0, x.shape[0], rows):
        chunk = x[lo : lo + rows].to(dtype)
        labels[lo : lo + rows] = torch.addmm(bias, chunk, c.T, out=scores[: len(chunk)]).argmax(1)
        if sums is not None:
            sums.index_add_(0, labels[lo : lo + rows], chunk.to(sums.dtype))
    return labels, sums


def _sq_distances(
    x: torch.Tensor, centroids: torch.Tensor, labels: torch.Tensor, chunk_bytes: int | None
) -> torch.Tensor:
    """‖x_i − c_{labels_i}‖² for every row, in the compute dtype (N values, chunks of N×D at most)."""
    dtype = compute_dtype(x)
    c = centroids.to(dtype)
    out = torch.empty(x.shape[0], dtype=dtype, device=x.device)
    rows = _rows(x.shape[1], dtype, chunk_bytes)
    for lo in range(0, x.shape[0], rows):
        out[lo : lo + rows] = (x[lo : lo + rows].to(dtype) - c[labels[lo : lo + rows]]).pow(2).sum(1)
    return out


def _points(x: torch.Tensor, chosen: torch.Tensor, counts: list[int], rank: int) -> torch.Tensor:
    """Rows ``chosen`` (indices into all ranks' rows, in rank order) on every rank: each comes from the
    one rank that holds it and is summed into place (exact in any dtype: every other rank adds 0)."""
    lo = sum(counts[:rank])
    out = torch.zeros(len(chosen), x.shape[1], dtype=compute_dtype(x), device=x.device)
    mine = (chosen >= lo) & (chosen < lo + counts[rank])
    out[mine] = x[chosen[mine] - lo].to(out.dtype)
    return all_reduce_sum(out)


def _farthest(x: torch.Tensor, distance: torch.Tensor, m: int) -> torch.Tensor:
    """The ``m`` points farthest from their assigned centroids (``distance``, squared) over all ranks
    (scikit-learn relocates empty clusters the same way); identical on every rank. The candidates
    travel in the compute dtype: they are rows of ``x``, which that dtype holds exactly."""
    top = distance.topk(min(m, len(distance)))
    values = torch.full((m,), -1.0, dtype=distance.dtype, device=x.device)  # padding never wins: distances >= 0
    points = torch.zeros(m, x.shape[1], dtype=distance.dtype, device=x.device)
    values[: len(top.values)], points[: len(top.values)] = top.values, x[top.indices].to(points.dtype)
    everyone = gather_without_grad(values)
    return gather_without_grad(points)[everyone.topk(m).indices]


def _lloyd(
    x: torch.Tensor, k: int, iters: int, seed: int, counts: list[int], rank: int, chunk_bytes: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """One K-means run from ``k`` seeded points; returns (float64 centroids, this rank's labels, inertia)."""
    total = sum(counts)
    g = torch.Generator().manual_seed(seed)
    # The centroids, the per-cluster sums and the counts are float64: they are K×D (20 MB at the
    # recipe's sizes), and a cluster's mean sums thousands of fp32 rows across ranks, where fp32
    # accumulation would drift with the number and order of its terms.
    centroids = _points(x, torch.randperm(total, generator=g)[:k].to(x.device), counts, rank).double()
    for _ in range(iters):
        labels, sums = _assign_and_sum(x, centroids, chunk_bytes, torch.zeros_like(centroids))
        all_reduce_sum(sums)
        sizes = all_reduce_sum(torch.bincount(labels, minlength=k).to(sums.dtype))
        filled = sizes > 0
        centroids[filled] = sums[filled] / sizes[filled, None]
        empty = (~filled).nonzero().flatten()
        if len(empty):  # the same on every rank: re-seed instead of keeping a stale centre
            # distances to the *updated* centres of the points' clusters (none of them empty)
            distance = _sq_distances(x, centroids, labels, chunk_bytes)
            centroids[empty] = _farthest(x, distance, len(empty)).to(centroids.dtype)
    labels = assign(x, centroids, chunk_bytes)
    inertia = all_reduce_sum(_sq_distances(x, centroids, labels, chunk_bytes).double().sum().reshape(1)).item()
    return centroids, labels, inertia


def kmeans(
    x: torch.Tensor, k: int, iters: int, seed: int, rank: int = 0, restarts: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean K-means over the rows of ``x`` on all ranks together; returns (K×P centroids, labels
    of this rank's rows). ``restarts`` runs from different seeded starts keep the one with the lowest
    inertia (faiss's ``nredo``); a cluster that empties is re-seeded with the point farthest from its
    centroid."""
    # On x.device: the process group's device (NCCL refuses CPU tensors).
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
    label is k, over all ranks (an empty cluster gives 0). The sums are float64 for the same reason
    as K-means' (K×D, summed over many rows and ranks), on ``features.device`` for the collective."""
    sums = torch.zeros(k, features.shape[1], dtype=torch.float64, device=features.device)
    sums.index_add_(0, other_labels, features.double())
    sizes = torch.bincount(other_labels, minlength=k).to(sums.dtype)
    all_reduce_sum(sums)
    all_reduce_sum(sizes)
    return (sums / sizes.clamp(min=1)[:, None]).to(features.dtype)

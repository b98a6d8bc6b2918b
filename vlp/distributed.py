"""Rank helpers and gathering with gradient, the same on gloo (CPU) and NCCL."""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0, rank order, keeping the autograd graph.

    The backward of the gather sums each rank's gradient for its own rows, so a loss computed on the
    gathered batch by every rank, with gradients averaged across ranks, gives the global gradient.
    """
    if not is_distributed() or world_size() == 1:
        return x
    with warnings.catch_warnings():
        # Deprecated in favour of a private API; it is what open_clip's ClipLoss uses too.
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(dist_fn.all_gather(x.contiguous()), dim=0)


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True when ``flag`` is true on any rank (a collective: every rank must call it)."""
    if not is_distributed():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_without_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0 (masks, labels: nothing to differentiate)."""
    if not is_distributed() or world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over ranks, in place, returned (a collective)."""
    if is_distributed() and world_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def max_over_ranks(value: float) -> float:
    """The largest ``value`` over ranks (a collective)."""
    if not is_distributed() or world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())

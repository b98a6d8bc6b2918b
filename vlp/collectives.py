"""Rank helpers and collectives, on the device each process group serves.

NCCL has no CPU backend: a CPU tensor handed to a collective of a ``nccl`` group raises "No backend type
associated with device type cpu". Tensors that live on the device (features, losses, buffers) go to the
default group as they are. Values that live on the host (a flag, a peak memory, a count) go through
:func:`host_group`: the default group itself when it has a CPU backend (gloo, and ``cpu:gloo,cuda:nccl``),
otherwise a gloo group created once for CPU objects, as torch does for its own object collectives.
The trainer calls the host helpers only at setup and on steps that log, evaluate or save.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn

_HOST_GROUP: dict[int, object] = {}


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank_of_process() -> int:
    return dist.get_rank() if is_distributed() else 0


def serves_cpu(group=None) -> bool:
    """Whether ``group`` (the default group when None) has a backend for CPU tensors."""
    return "cpu" in dist.get_backend_config(group)


def host_group():
    """The group for collectives of CPU tensors: the default group when it has a CPU backend, else a
    gloo group over the same ranks, created on first use (a collective: every rank calls it, as every
    helper below is called by every rank)."""
    if serves_cpu():
        return None
    key = id(dist.distributed_c10d._get_default_group())
    if key not in _HOST_GROUP:
        _HOST_GROUP[key] = dist.new_group(backend="gloo")
    return _HOST_GROUP[key]


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


def gather_without_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0 (masks, labels: nothing to differentiate). ``x``
    lives where the default group serves (the model's device), or on the CPU (through host_group)."""
    if not is_distributed() or world_size() == 1:
        return x
    group = host_group() if x.device.type == "cpu" else None
    out = torch.empty((world_size() * x.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
    # torch 2.14 renamed all_gather_into_tensor (deprecated: a warning per call) to all_gather_single;
    # looked up at each call, so that wrappers of torch.distributed (tests/sync_audit.py) see it.
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(out, x.contiguous(), group=group)
    return out


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over ranks, in place, returned (a collective)."""
    if is_distributed() and world_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM, group=host_group() if x.device.type == "cpu" else None)
    return x


def host_max(values: list[float]) -> list[float]:
    """The elementwise largest of ``values`` over ranks (a collective of host numbers)."""
    if not is_distributed() or world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=host_group())
    return t.tolist()


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank ``src``'s picklable ``obj`` on every rank (a collective of host objects)."""
    if not is_distributed() or world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=host_group())
    return box[0]


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is true on any rank (a collective: every rank must call it)."""
    return bool(host_max([1.0 if flag else 0.0])[0])


def max_over_ranks(value: float) -> float:
    """The largest ``value`` over ranks (a collective)."""
    return host_max([value])[0]


@torch.no_grad()
def broadcast_coalesced(tensors: list[torch.Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` (on one device, any dtypes) with rank ``src``'s, in one broadcast: they
    travel as one float64 vector, which holds float32/bf16/fp16 values and counts below 2**53 exactly."""
    if not tensors or not is_distributed() or world_size() == 1:
        return
    flat = torch.cat([t.reshape(-1).to(torch.float64) for t in tensors])
    dist.broadcast(flat, src=src, group=host_group() if flat.device.type == "cpu" else None)
    for t, part in zip(tensors, flat.split([t.numel() for t in tensors]), strict=True):
        t.copy_(part.view_as(t))

"""Split mode's shard plan: which shards each (rank, worker) reads in an epoch, as a pure function.

The plan depends only on the shard URLs, the seed, the epoch, the world size and the worker count, so
it can be evaluated for any job shape (e.g. 64 ranks x 8 workers) without launching anything:

* the URLs (all sources joined, in spec order) are shuffled with a generator seeded from
  ``(seed, epoch)``, then dealt round-robin to ranks (``order[rank::world_size]``) and, within a rank,
  round-robin to its workers (``[worker::workers]``). Every shard is in exactly one reader's list in
  every epoch, so every sample is *read* exactly once per epoch across the job.
* A job has ``world_size x max(1, workers)`` readers (``workers = 0`` is the in-process loader: one
  reader per rank). Every reader gets at least one shard exactly when there are at least that many
  shards; :func:`split_shortfall` says so, with the numbers, when there are not, and
  :class:`~data_pipelines.loader.StreamingLoader` refuses to start then.

What "once per epoch" holds for. Each reader reads all of its shards, whatever their sizes, and stops
(split mode has no per-worker batch cap), so no sample is left unread and no reader runs dry before its
shards end. But:

* with ``drop_last`` (the trainer's setting) each reader drops its last partial batch, so up to
  ``batch_size - 1`` samples per reader per epoch are read but not delivered (up to
  ``readers x (batch_size - 1)`` in the job; which ones changes with the epoch's shuffle). Delivery is
  exactly once only when every reader's sample count is a multiple of ``batch_size``;
* an epoch is each rank's own: ranks whose shards hold fewer samples (``shards % world_size != 0``,
  or shards of unequal size) finish their epoch earlier and begin the next one while the others are
  still in theirs. Ranks (and a rank's workers) see equal amounts of data only when the shard count
  is a multiple of the reader count and all shards are the same size.

The plan is a function of the world size: the same shards, seed and epoch dealt to another world size
give another data order.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from .decode import stable_seed

Plan = list[list[list[str]]]  # rank -> worker -> shard URLs, in reading order


def readers(world_size: int, workers: int) -> int:
    """How many shard readers a job has: ``world_size`` ranks x ``workers`` DataLoader workers each
    (``workers = 0``: the in-process loader, one reader per rank)."""
    return world_size * max(1, workers)


def _check_shape(world_size: int, workers: int) -> None:
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if workers < 0:
        raise ValueError(f"workers must not be negative, got {workers}")


def shuffled_shards(urls: Sequence[str], *, seed: int, epoch: int) -> list[str]:
    """All shard URLs in the epoch's order (shuffled with ``(seed, epoch)``), before dealing."""
    order = list(urls)
    random.Random(stable_seed("shards", seed, epoch)).shuffle(order)
    return order


def shard_plan(urls: Sequence[str], *, seed: int, epoch: int, world_size: int, workers: int) -> Plan:
    """Split mode's plan for one epoch: ``plan[rank][worker]`` is the list of shard URLs that worker
    of that rank reads, in order (``workers = 0``: one in-process reader per rank, ``plan[rank][0]``).

    Pure and deterministic: the same arguments give the same plan; every URL (by position, so a URL
    listed twice is read twice) is in exactly one list. A reader's list is empty when there are fewer
    shards than :func:`readers`; :func:`split_shortfall` explains that case.
    """
    _check_shape(world_size, workers)
    order = shuffled_shards(urls, seed=seed, epoch=epoch)
    per_rank = max(1, workers)
    return [[order[rank::world_size][worker::per_rank] for worker in range(per_rank)] for rank in range(world_size)]


def rank_shards(
    urls: Sequence[str], *, seed: int, epoch: int, world_size: int, workers: int, rank: int, worker: int
) -> list[str]:
    """``shard_plan(...)[rank][worker]`` without building the other readers' lists."""
    _check_shape(world_size, workers)
    if not (0 <= rank < world_size and 0 <= worker < max(1, workers)):
        raise ValueError(f"no reader (rank {rank}, worker {worker}) in {world_size} ranks x {workers} workers")
    return shuffled_shards(urls, seed=seed, epoch=epoch)[rank::world_size][worker :: max(1, workers)]


def idle_readers(plan: Plan) -> list[tuple[int, int]]:
    """The (rank, worker) pairs of a plan that get no shard."""
    return [(rank, worker) for rank, workers in enumerate(plan) for worker, urls in enumerate(workers) if not urls]


def split_shortfall(n_shards: int, *, world_size: int, workers: int) -> str | None:
    """Why ``n_shards`` cannot feed every reader of ``world_size`` ranks x ``workers`` workers in split
    mode (a message with the numbers and the ways out), or None when they can.

    Dealt as in :func:`shard_plan`, every reader gets a shard in every epoch exactly when
    ``n_shards >= world_size x max(1, workers)``, whatever the seed and epoch.
    """
    _check_shape(world_size, workers)
    need = readers(world_size, workers)
    if n_shards >= need:
        return None
    shape = (
        f"{world_size} ranks x {workers} workers = {need} readers"
        if workers
        else f"{world_size} ranks x 1 in-process reader (workers=0) = {need} readers"
    )
    fixes = [f"write at least {need} shards (vlp-data shards --shard-size <samples / {need}>)"]
    if workers > 1 and n_shards >= world_size:
        fixes.append(f"use at most {n_shards // world_size} workers per rank (data.workers)")
    fixes.append("set mode='resampled' (data.mode: resampled; every worker then draws shards with replacement)")
    return (
        f"{n_shards} shards cannot feed {shape} in split mode, where every reader needs at least one shard "
        f"per epoch (split mode needs world_size x workers shards): " + ", or ".join(fixes)
    )

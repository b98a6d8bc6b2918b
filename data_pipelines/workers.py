"""Mapping a function over items in a pool of worker processes, in order."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_in_pool(
    fn: Callable[[T], R], items: Sequence[T], workers: int, *, chunksize: int = 1, min_items: int = 2
) -> Iterator[R]:
    """``map(fn, items)``, in ``workers`` forked processes when there are at least ``min_items``.

    Results come in the order of ``items`` whatever the number of workers, so output never depends
    on it. The pool is closed when the iterator is exhausted, closed, or dropped (an exception in
    the caller's loop); run in-process, nothing is started.
    """
    if workers <= 1 or len(items) < min_items:
        yield from map(fn, items)
        return
    # fork: workers start with the parent's modules already imported, so they start fast
    pool = multiprocessing.get_context("fork").Pool(workers)
    try:
        yield from pool.imap(fn, items, chunksize=chunksize)
    finally:
        pool.terminate()
        pool.join()

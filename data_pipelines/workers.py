"""Mapping a function over items in a pool of worker processes, in order."""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def _end_on_sigterm() -> None:
    """A worker ends on SIGTERM (what ``Pool.terminate`` sends) whatever handler it inherited: under the
    trainer's StopSignal (SIGTERM = "save at the next step"), which the trainer installs before it
    generates a missing shapes world, a worker would outlive terminate() and the pool's join() would wait
    for it forever. Workers are forked with SIGTERM blocked (one sent before this runs stays pending)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


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
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # until each worker's handler is reset
    try:
        pool = multiprocessing.get_context("fork").Pool(workers, initializer=_end_on_sigterm)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # a SIGTERM meanwhile reaches this process now
    try:
        yield from pool.imap(fn, items, chunksize=chunksize)
    finally:
        pool.terminate()
        pool.join()

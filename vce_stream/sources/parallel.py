"""Ordered parallel map: per-frame work (image decode, the swscale resize) on a thread pool, results in order.

Why threads: FFmpeg's decoders and swscale, called through PyAV, run without the GIL, so N threads use N
cores on the heavy part while Python only hands out work. Why this shape: frame order, frame indices and
damage handling must not depend on the number of workers, so results (and errors) come out exactly in
input order, and at most `ahead` items are in flight, so memory stays flat however long the exam.

Contract: `ordered_map(fn, items, workers, ahead)` yields fn(item) for each item in order. An exception
raised by fn for item k is raised when k's turn comes, after the results of items 0..k-1; one raised by
the `items` iterator is raised after the results of every item it produced before. workers == 1 runs
fn inline, in the caller's thread (the single-thread path, with no pool at all). Closing the generator
cancels work not started and waits for work running.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

X = TypeVar("X")
Y = TypeVar("Y")


def in_flight_bound(workers: int) -> int:
    """Items in flight for `workers` threads: two each, so a worker never waits for the next item."""
    return 2 * workers


def ordered_map(fn: Callable[[X], Y], items: Iterable[X], workers: int, ahead: int | None = None) -> Iterator[Y]:
    """fn over items on `workers` threads, results in input order, at most `ahead` in flight (module docstring)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        for item in items:
            yield fn(item)
        return
    limit = max(1, ahead if ahead is not None else in_flight_bound(workers))
    source = iter(items)
    pending: deque[Future[Y]] = deque()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="vce-work")
    try:
        while True:
            try:
                item = next(source)
            except StopIteration:
                break
            except BaseException:  # the items broke: what came before it is still delivered first
                while pending:
                    yield pending.popleft().result()
                raise
            pending.append(pool.submit(fn, item))
            while len(pending) >= limit:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)

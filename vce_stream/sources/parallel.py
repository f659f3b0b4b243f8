"""Ordered parallel map: per-frame work (image decode, the swscale resize) on a thread pool, results in order.

Why threads: FFmpeg's decoders and swscale, called through PyAV, run without the GIL, so N threads use N
cores on the heavy part while Python only hands out work. Why this shape: frame order, frame indices and
damage handling must not depend on the number of workers, so results (and errors) come out exactly in
input order, and at most `ahead` items are in flight, so memory stays flat however long the exam.

Why not always: handing an item to a pool thread and taking its result back costs about 25 µs of the
caller's time (measured: `ordered_map(lambda x: x, ...)`, 2 workers, 2 cores), and pool threads compete
for the GIL with the caller. Work that releases the GIL only pays for that above roughly 100 µs an item
(measured with sha256 items of set length: 50 µs 0.98x, 100 µs 1.01x, 200 µs 1.52x on 2 workers). A
64x64 frame resized to 32 takes 14 µs, a 480x480 one resized to 224 about 630 µs, a 480x480 PNG decoded
and prepared about 5.4 ms. So items run in the caller's thread first, timed: as soon as `COSTLY_ITEMS`
of them took `INLINE_BELOW_SECONDS` or more, the rest go to the pool (after 3 items on a PNG folder:
about 18 ms without parallelism); if `PROBE_ITEMS` pass without that, the rest stay in the caller's thread.

Contract: `ordered_map(fn, items, workers, ahead)` yields fn(item) for each item in order. An exception
raised by fn for item k is raised when k's turn comes, after the results of items 0..k-1; one raised by
the `items` iterator is raised after the results of every item it produced before. workers == 1 runs
fn inline, in the caller's thread (the single-thread path, with no pool at all), and so does cheap work
(above). Closing the generator cancels work not started and waits for work running.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

X = TypeVar("X")
Y = TypeVar("Y")

PROBE_ITEMS = 8  # items timed in the caller's thread at most, before the pool is started (or not)
COSTLY_ITEMS = 3  # probed items at or above INLINE_BELOW_SECONDS that start the pool at once
INLINE_BELOW_SECONDS = 150e-6  # item time under which the pool costs more than it gains (docstring)


def in_flight_bound(workers: int) -> int:
    """Items in flight for `workers` threads: two each, so a worker never waits for the next item."""
    return 2 * workers


def ordered_map(
    fn: Callable[[X], Y],
    items: Iterable[X],
    workers: int,
    ahead: int | None = None,
    *,
    inline_below: float | None = None,
) -> Iterator[Y]:
    """fn over items on `workers` threads, results in input order, at most `ahead` in flight (module docstring).

    inline_below: seconds an item must take to count as costly (None: INLINE_BELOW_SECONDS, read at call
    time; 0: always the pool once more than one worker is asked for).
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    source = iter(items)
    threshold = INLINE_BELOW_SECONDS if inline_below is None else inline_below
    if workers > 1 and threshold > 0:
        costly = probed = 0
        for item in source:
            start = time.perf_counter()
            result = fn(item)
            costly += time.perf_counter() - start >= threshold
            probed += 1
            yield result
            if costly >= COSTLY_ITEMS or probed >= PROBE_ITEMS:
                break
        else:
            return  # the items ended within the probe
        if costly < COSTLY_ITEMS:
            workers = 1
    if workers == 1:
        for item in source:
            yield fn(item)
        return
    limit = max(1, ahead if ahead is not None else in_flight_bound(workers))
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

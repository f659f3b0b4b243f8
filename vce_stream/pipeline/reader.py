"""The decode thread: source -> prepared frames in pool batches -> a queue the scoring loop reads.

Decoding and preparing run in their own thread (PyAV and swscale release the GIL), so they overlap with
scoring; within it, the source spreads image decoding (frame folders) and `prepare_frame` (all sources)
over `SourceConfig.workers` threads, results in frame order, at most 2 x workers frames in flight
(sources/parallel.py), so the batches hold the same frames in the same order for any number of workers. The queue holds at most the pool's batches, so a slow scorer stops the decoder instead of
growing memory. An error in the source reaches the reader after every batch decoded before it, so the
scoring loop scores all it can and then learns why the stream stopped.

Live streams: when no batch has been completed for `flush_after` seconds (a capsule recording arrives
at a few frames per second), the scoring loop takes the partly filled batch as it is, so events are
decided within about that delay instead of waiting for a whole batch. The decode thread fills the
current batch under a lock, so a batch is taken only between two frames, and only when no older batch
is still queued (frame order is kept).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from vce_stream.sources.preprocess import PreprocessConfig
from vce_stream.pipeline.batches import Batch, BatchPool
from vce_stream.sources.base import FrameSource
from vce_stream.sources.preprocess import prepare_frame


@dataclass(frozen=True)
class _End:
    """Queue marker: the source is exhausted, or failed with `error`."""

    error: BaseException | None = None


class BatchReader:
    """Iterate over filled batches of `source`, decoded ahead in a background thread.

    Release each batch to `pool` when done with it. Iteration re-raises the source's error (after the
    batches before it). `close()` stops the thread; the thread closes the source.
    """

    def __init__(
        self,
        source: FrameSource,
        pool: BatchPool,
        preprocess: PreprocessConfig,
        *,
        scale_threads: int = 1,
        flush_after: float = 0.0,
    ) -> None:
        self.source = source
        self.pool = pool
        self.preprocess = preprocess
        self.scale_threads = scale_threads
        self.flush_after = flush_after  # seconds; 0: only whole batches (and the last one)
        self.partial_batches = 0  # batches taken part-filled because the stream paused
        self._ready: queue.Queue[Batch | _End] = queue.Queue()
        self._filling: Batch | None = None  # the batch the decode thread is writing, guarded by _lock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._decode, name="vce-decode", daemon=True)
        self._started = False

    def __iter__(self) -> Iterator[Batch]:
        if not self._started:
            self._started = True
            self._thread.start()
        while True:
            try:
                item = self._ready.get(timeout=self.flush_after or None)
            except queue.Empty:
                taken = self._take_partial()
                if taken is not None:
                    yield taken
                continue
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item

    def _take_partial(self) -> Batch | None:
        """The part-filled batch, if the stream paused with frames in it and nothing older is queued."""
        with self._lock:
            batch = self._filling
            if batch is None or batch.count == 0 or not self._ready.empty():
                return None
            self._filling = None
            self.partial_batches += 1
            return batch

    def _prepare(self, frame: av.VideoFrame) -> np.ndarray:
        """The one frame preparation, run by the source's workers (the same function training uses)."""
        return prepare_frame(frame, self.preprocess, threads=self.scale_threads)

    def _decode(self) -> None:
        try:
            for index, prepared in self.source.frames(self._prepare):
                if not self._add(index, prepared):  # stopped
                    return
                if self._stop.is_set():
                    return
            self._hand_over_last()
            self._ready.put(_End())
        except BaseException as exc:  # handed to the consumer, which decides what it means
            self._hand_over_last()
            self._ready.put(_End(exc))
        finally:
            self.source.close()

    def _add(self, index: int, prepared: np.ndarray) -> bool:
        """Put a prepared frame into the current batch (a new one from the pool when there is none); False if stopped."""
        while True:
            with self._lock:
                batch = self._filling
                if batch is not None:
                    slot = batch.add(index)
                    try:
                        np.copyto(slot, prepared)
                    except BaseException:
                        batch.count -= 1  # never hand over a slot that holds no frame
                        raise
                    if batch.full:
                        self._ready.put(batch)
                        self._filling = None
                    return True
            fresh = self.pool.acquire(self._stop)  # outside the lock: may wait for the scorer
            if fresh is None:
                return False
            with self._lock:
                self._filling = fresh  # empty, so never taken before its first frame

    def _hand_over_last(self) -> None:
        with self._lock:
            if self._filling is not None and self._filling.count:
                self._ready.put(self._filling)
            self._filling = None

    def close(self, timeout: float = 10.0) -> None:
        """Stop decoding and wait for the thread (a read blocked on a silent pipe is left to die with the process)."""
        self._stop.set()
        while True:  # hand back batches the consumer will never read, so the thread cannot stay blocked
            try:
                item = self._ready.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Batch):
                self.pool.release(item)
        if self._started:
            self._thread.join(timeout)
        else:
            self.source.close()

    def __enter__(self) -> BatchReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

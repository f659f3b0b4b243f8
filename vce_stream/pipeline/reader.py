"""The decode thread: source -> prepared frames in pool batches -> a queue the scoring loop reads.

Decoding and preparing run in their own thread (PyAV and swscale release the GIL), so they overlap with
scoring. The queue holds at most the pool's batches, so a slow scorer stops the decoder instead of
growing memory. An error in the source reaches the reader after every batch decoded before it, so the
scoring loop scores all it can and then learns why the stream stopped.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from vce_stream.config import PreprocessConfig
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

    def __init__(self, source: FrameSource, pool: BatchPool, preprocess: PreprocessConfig, *, scale_threads: int = 1) -> None:
        self.source = source
        self.pool = pool
        self.preprocess = preprocess
        self.scale_threads = scale_threads
        self._ready: queue.Queue[Batch | _End] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._decode, name="vce-decode", daemon=True)
        self._started = False

    def __iter__(self) -> Iterator[Batch]:
        if not self._started:
            self._started = True
            self._thread.start()
        while True:
            item = self._ready.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item

    def _decode(self) -> None:
        batch: Batch | None = None
        try:
            for index, frame in self.source.frames():
                if batch is None:
                    batch = self.pool.acquire(self._stop)
                    if batch is None:  # stopped
                        return
                prepare_frame(frame, self.preprocess, batch.add(index), threads=self.scale_threads)
                if batch.full:
                    self._ready.put(batch)
                    batch = None
                if self._stop.is_set():
                    return
            if batch is not None:
                self._ready.put(batch)
                batch = None
            self._ready.put(_End())
        except BaseException as exc:  # handed to the consumer, which decides what it means
            if batch is not None and batch.count:
                self._ready.put(batch)
            self._ready.put(_End(exc))
        finally:
            self.source.close()

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

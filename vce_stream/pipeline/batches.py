"""Preallocated batch buffers: frames are prepared straight into them, and they are reused forever.

A fixed pool of `Batch`es is allocated once (pinned host memory when a CUDA device scores them, so the
engine's host-to-device copy can be non-blocking); memory therefore stays flat whatever the exam's
length. The pool is also the back-pressure: the decoder waits for a free batch when scoring lags.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class Batch:
    """One reusable buffer: `frames` (capacity, S, S, 3) uint8 and their frame `indices`; `count` are filled."""

    frames: torch.Tensor
    indices: np.ndarray
    count: int = 0
    slots: np.ndarray = field(init=False, repr=False)  # numpy view of `frames` for writing
    capacity: int = field(init=False)

    def __post_init__(self) -> None:
        self.slots = self.frames.numpy()
        self.capacity = self.slots.shape[0]  # a plain int: asked once a frame, under the decode thread's lock

    @property
    def full(self) -> bool:
        return self.count == self.capacity

    def add(self, index: int) -> np.ndarray:
        """Reserve the next slot for frame `index`; returns the (S, S, 3) array to write the frame into."""
        slot = self.slots[self.count]
        self.indices[self.count] = index
        self.count += 1
        return slot

    def filled(self) -> tuple[torch.Tensor, np.ndarray]:
        """The filled part: frames (count, S, S, 3) (a view) and a copy of their indices."""
        return self.frames[: self.count], self.indices[: self.count].copy()


class BatchPool:
    """`size` batches of `batch_size` frames of `frame_size` pixels, handed out and taken back."""

    def __init__(self, size: int, batch_size: int, frame_size: int, *, pin_memory: bool = False) -> None:
        if size < 1 or batch_size < 1:
            raise ValueError("a pool needs at least one batch of at least one frame")
        self._free: queue.Queue[Batch] = queue.Queue()
        for _ in range(size):
            frames = torch.empty((batch_size, frame_size, frame_size, 3), dtype=torch.uint8, pin_memory=pin_memory)
            self._free.put(Batch(frames, np.zeros(batch_size, dtype=np.int64)))
        self.size = size
        self.batch_size = batch_size

    def acquire(self, stop: threading.Event, poll: float = 0.1) -> Batch | None:
        """A free, empty batch; waits while all are in use; None once `stop` is set."""
        while not stop.is_set():
            try:
                batch = self._free.get(timeout=poll)
            except queue.Empty:
                continue
            batch.count = 0
            return batch
        return None

    def release(self, batch: Batch) -> None:
        """Give a batch back once its frames are no longer needed (after scoring)."""
        self._free.put(batch)

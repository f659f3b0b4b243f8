"""Preallocated batches and the decode thread: order, reuse, back-pressure, errors after good batches."""

from __future__ import annotations

import threading
import time

import av
import numpy as np
import pytest
import torch

from vce_stream.sources.preprocess import PreprocessConfig
from vce_stream.pipeline.batches import BatchPool
from vce_stream.pipeline.reader import BatchReader
from vce_stream.sources.base import SourceStats, StreamBroken
from vce_stream.sources.preprocess import prepare_frame


class ListSource:
    """A real FrameSource over in-memory frames (what a decoder yields), optionally breaking at `fail_at`."""

    def __init__(self, n: int, *, fail_at: int | None = None, size: int = 24) -> None:
        self.name, self.video_id, self.expected_frames = "list", "list", n
        self.stats = SourceStats()
        self.n, self.fail_at, self.size = n, fail_at, size
        self.produced = 0
        self.closed = False

    def frames(self, transform=None):
        for i in range(self.n):
            if i == self.fail_at:
                raise StreamBroken(f"list: broken at frame {i}")
            image = np.full((self.size, self.size, 3), i % 256, dtype=np.uint8)
            self.produced += 1
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            yield 10 + 2 * i, frame if transform is None else transform(frame)

    def close(self) -> None:
        self.closed = True


CFG = PreprocessConfig(size=16)


def test_batches_hold_prepared_frames_and_indices_in_order():
    source = ListSource(23)
    pool = BatchPool(3, 5, 16)
    seen_frames, seen_indices = [], []
    with BatchReader(source, pool, CFG) as reader:
        for batch in reader:
            frames, indices = batch.filled()
            seen_frames.append(frames.numpy().copy())
            seen_indices.append(indices)
            pool.release(batch)
    assert [len(i) for i in seen_indices] == [5, 5, 5, 5, 3]
    assert np.concatenate(seen_indices).tolist() == [10 + 2 * i for i in range(23)]
    frames = np.concatenate(seen_frames)
    for i in (0, 7, 22):
        expected = prepare_frame(av.VideoFrame.from_ndarray(np.full((24, 24, 3), i, np.uint8), format="rgb24"), CFG)
        assert np.array_equal(frames[i], expected)
    assert source.closed


def test_the_pool_reuses_its_buffers():
    pool = BatchPool(2, 4, 16)
    ids = set()
    with BatchReader(ListSource(40), pool, CFG) as reader:
        for batch in reader:
            ids.add(batch.frames.data_ptr())
            pool.release(batch)
    assert len(ids) == 2


def test_decoding_waits_for_free_batches_instead_of_running_ahead():
    source = ListSource(200)
    pool = BatchPool(3, 4, 16)
    reader = BatchReader(source, pool, CFG)
    iterator = iter(reader)
    first = next(iterator)  # thread started; the consumer now holds one batch and does not release it
    deadline = time.monotonic() + 30
    while source.produced < 3 * 4 and time.monotonic() < deadline:  # the decoder fills the whole pool...
        time.sleep(0.01)
    time.sleep(0.3)  # ...and then has time to run ahead, if it could
    assert 3 * 4 <= source.produced <= 3 * 4 + 1  # the pool's frames (+ one decoded, waiting for a slot)
    pool.release(first)
    rest = sum(batch.count for batch in iterator if pool.release(batch) is None)
    assert first.count + rest == 200
    reader.close()


def test_a_source_error_arrives_after_the_batches_before_it():
    pool = BatchPool(3, 4, 16)
    got = []
    with pytest.raises(StreamBroken, match="broken at frame 10"):
        with BatchReader(ListSource(30, fail_at=10), pool, CFG) as reader:
            for batch in reader:
                got.extend(batch.filled()[1].tolist())
                pool.release(batch)
    assert got == [10 + 2 * i for i in range(10)]  # the partial batch (frames 8, 9) was delivered too


def test_close_stops_the_decode_thread_early():
    source = ListSource(10_000)
    pool = BatchPool(2, 4, 16)
    reader = BatchReader(source, pool, CFG)
    batch = next(iter(reader))
    pool.release(batch)
    reader.close()
    assert not any(t.name == "vce-decode" and t.is_alive() for t in threading.enumerate())
    assert source.produced < 10_000 and source.closed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_pinned_buffers_when_cuda_is_used():
    pool = BatchPool(1, 2, 16, pin_memory=True)
    batch = pool.acquire(threading.Event())
    assert batch.frames.is_pinned()


class PausingSource(ListSource):
    """A real FrameSource that stops after `pause_at` frames until `resume` is set (a live recording's pace)."""

    def __init__(self, n: int, pause_at: int) -> None:
        super().__init__(n)
        self.pause_at = pause_at
        self.resume = threading.Event()

    def frames(self, transform=None):
        for position, item in enumerate(super().frames(transform)):
            if position == self.pause_at:
                assert self.resume.wait(10), "the reader never took the partial batch"
            yield item


def test_a_paused_stream_hands_over_its_partial_batch_after_flush_after():
    source = PausingSource(12, pause_at=3)
    pool = BatchPool(3, 8, 16)
    sizes, indices = [], []
    delivered_before_resume = None
    with BatchReader(source, pool, CFG, flush_after=0.05) as reader:
        for batch in reader:
            frames, idx = batch.filled()
            sizes.append(len(idx))
            indices.extend(idx.tolist())
            pool.release(batch)
            if len(indices) >= 3 and not source.resume.is_set():
                # The stream goes on only once the frames before the pause were handed over.
                delivered_before_resume = len(indices)
                source.resume.set()
    # The 3 frames before the pause came out in part-filled batches, long before a batch of 8 filled.
    assert delivered_before_resume == 3 and reader.partial_batches >= 1
    assert sum(sizes) == 12
    assert indices == [10 + 2 * i for i in range(12)]  # order kept across taken and whole batches


def test_without_flush_after_a_paused_stream_waits_for_whole_batches():
    source = PausingSource(12, pause_at=3)
    pool = BatchPool(3, 8, 16)
    threading.Timer(0.3, source.resume.set).start()
    with BatchReader(source, pool, CFG) as reader:
        sizes = []
        for batch in reader:
            sizes.append(batch.count)
            pool.release(batch)
    assert sizes == [8, 4] and reader.partial_batches == 0


class JitterySource(ListSource):
    """A real FrameSource whose frames arrive with random pauses around the flush delay."""

    def __init__(self, n: int, seed: int) -> None:
        super().__init__(n)
        self.delays = np.random.default_rng(seed).choice([0.0, 0.0, 0.0, 0.002, 0.01], size=n)

    def frames(self, transform=None):
        for delay, item in zip(self.delays, super().frames(transform)):
            time.sleep(delay)
            yield item


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_taking_partial_batches_under_jitter_keeps_every_frame_once_and_in_order(seed):
    source = JitterySource(150, seed)
    pool = BatchPool(3, 8, 16)
    indices = []
    with BatchReader(source, pool, CFG, flush_after=0.003) as reader:
        for batch in reader:
            frames, idx = batch.filled()
            assert np.array_equal(frames.numpy()[:, 0, 0, 0], prepared_values(idx))
            indices.extend(idx.tolist())
            pool.release(batch)
    assert indices == [10 + 2 * i for i in range(150)]


def prepared_values(indices: np.ndarray) -> np.ndarray:
    """The pixel value ListSource gives frame `index` (i % 256 for index 10 + 2i), after preparation."""
    return np.array([prepare_frame(av.VideoFrame.from_ndarray(np.full((24, 24, 3), ((i - 10) // 2) % 256, np.uint8), format="rgb24"), CFG)[0, 0, 0] for i in indices])

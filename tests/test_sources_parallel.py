"""Decode and prepare on several workers: same frames, indices, pixels and errors as one, memory bounded (issue 15 item 7)."""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numbered_video import numbered_image, write_numbered_video
from vce_stream.errors import InputError
from vce_stream.pipeline.batches import BatchPool
from vce_stream.pipeline.reader import BatchReader
from vce_stream.sources import SourceConfig, StreamBroken, open_source
from vce_stream.sources import parallel
from vce_stream.sources.parallel import COSTLY_ITEMS, PROBE_ITEMS, in_flight_bound, ordered_map
from vce_stream.sources.preprocess import PreprocessConfig, prepare_frame

CFG = PreprocessConfig(size=32)


class Boom(Exception):
    pass


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(0, 40),
    workers=st.integers(1, 4),
    fail_at=st.one_of(st.none(), st.integers(0, 45)),
    break_at=st.one_of(st.none(), st.integers(0, 45)),
    delays=st.lists(st.sampled_from([0.0, 0.0, 0.001, 0.003]), min_size=46, max_size=46),
    inline_below=st.sampled_from([0.0, None, 1.0]),  # always the pool, measured, always inline after the probe
)
def test_ordered_map_gives_the_sequential_results_and_the_first_error_in_order(n, workers, fail_at, break_at, delays, inline_below):
    def items():
        for i in range(n):
            if i == break_at:
                raise Boom(f"items broke at {i}")
            yield i

    def fn(i):
        time.sleep(delays[i])
        if i == fail_at:
            raise Boom(f"fn failed at {i}")
        return i * i

    got, error = [], None
    try:
        for value in ordered_map(fn, items(), workers, inline_below=inline_below):
            got.append(value)
    except Boom as exc:
        error = str(exc)
    stops = [(p, f"fn failed at {p}") for p in [fail_at] if p is not None and p < n and (break_at is None or p < break_at)]
    stops += [(p, f"items broke at {p}") for p in [break_at] if p is not None and p < n]
    first = min(stops, default=None)
    assert got == [i * i for i in range(first[0] if first else n)]
    assert error == (first[1] if first else None)


@pytest.mark.parametrize("workers", [2, 3, 5])
def test_ordered_map_keeps_at_most_two_per_worker_in_flight(workers):
    lock = threading.Lock()
    pulled, yielded, worst = 0, 0, 0

    def items():
        nonlocal pulled, worst
        for i in range(60):
            with lock:
                pulled += 1
                worst = max(worst, pulled - yielded)
            yield i

    for _ in ordered_map(lambda i: i, items(), workers, inline_below=0.0):
        time.sleep(0.001)  # a slow consumer: the pool must wait for it, not run ahead
        with lock:
            yielded += 1
    assert worst <= in_flight_bound(workers) == 2 * workers


@pytest.fixture
def pool_always(monkeypatch):
    """Tiny test frames cost a few µs, which the measured choice keeps in the caller's thread: these tests
    are about the pool, so it is used whatever the cost."""
    monkeypatch.setattr(parallel, "INLINE_BELOW_SECONDS", 0.0)


def _threads_used(fn, items: int, workers: int) -> list[str]:
    names: list[str] = []

    def recorded(i):
        fn(i)
        names.append(threading.current_thread().name)
        return i

    assert list(ordered_map(recorded, range(items), workers)) == list(range(items))
    return names


def test_cheap_items_stay_in_the_callers_thread_after_the_probe():
    # a few µs an item, far under INLINE_BELOW_SECONDS: a pool would cost more than it gains
    names = _threads_used(lambda i: i * i, 40, workers=2)
    assert set(names) == {threading.current_thread().name}


def test_costly_items_go_to_the_pool_as_soon_as_three_were_timed():
    # 5 ms an item (the order of a PNG frame decoded and prepared), far over INLINE_BELOW_SECONDS:
    # the pool starts after COSTLY_ITEMS of them, without waiting for the whole probe
    names = _threads_used(lambda i: time.sleep(0.005), 24, workers=2)
    assert COSTLY_ITEMS < PROBE_ITEMS
    assert set(names[:COSTLY_ITEMS]) == {threading.current_thread().name}
    assert all(name.startswith("vce-work") for name in names[COSTLY_ITEMS:])


def _costly_at(indices: set[int]):
    return lambda i: time.sleep(0.005) if i in indices else None


def test_a_third_costly_item_on_the_last_probed_item_starts_the_pool():
    last = PROBE_ITEMS - 1
    names = _threads_used(_costly_at({0, 3, last}), 30, workers=2)
    assert set(names[: last + 1]) == {threading.current_thread().name}
    assert all(name.startswith("vce-work") for name in names[last + 1 :])


def test_a_third_costly_item_just_after_the_probe_does_not_start_the_pool():
    names = _threads_used(_costly_at({0, 3, PROBE_ITEMS, PROBE_ITEMS + 1}), 30, workers=2)
    assert set(names) == {threading.current_thread().name}


@pytest.mark.parametrize("items, seconds", [(COSTLY_ITEMS, 0.002), (PROBE_ITEMS, 0.0), (0, 0.002), (1, 0.002)])
def test_items_that_end_at_the_probes_edges_all_come_back_in_order(items, seconds):
    # costly ones: the probe stops after exactly COSTLY_ITEMS with nothing left for the pool; cheap
    # ones: it stops after exactly PROBE_ITEMS; or there is nothing (or one thing) to probe at all
    names = _threads_used(lambda i: time.sleep(seconds), items, workers=2)
    assert names == [threading.current_thread().name] * items


def test_a_few_costly_items_among_cheap_ones_do_not_start_the_pool():
    # 2 costly items among the 8 probed (fewer than COSTLY_ITEMS): cheap work, the caller's thread
    names = _threads_used(_costly_at({0, 4}), 30, workers=2)
    assert set(names) == {threading.current_thread().name}


def test_one_worker_never_starts_a_pool_whatever_the_cost():
    names = _threads_used(lambda i: time.sleep(0.002), 12, workers=1)
    assert set(names) == {threading.current_thread().name}


def _folder(tmp_path: Path) -> Path:
    """Frames 5..29 without 12 (a gap), frame 20 unreadable, 40x48 pixels that differ per frame."""
    folder = tmp_path / "exam"
    folder.mkdir()
    for n in range(5, 30):
        if n == 12:
            continue
        if n == 20:
            (folder / f"frame_{n:04d}.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
            continue
        image = np.random.default_rng(n).integers(0, 256, (40, 48, 3), dtype=np.uint8)
        av.VideoFrame.from_ndarray(image, format="rgb24").save(str(folder / f"frame_{n:04d}.png"))
    return folder


def _run(source, transform):
    got, error = [], None
    try:
        for index, prepared in source.frames(transform):
            got.append((index, np.array(prepared)))
    except InputError as exc:
        error = (type(exc), str(exc))
    return got, error


@pytest.mark.usefixtures("pool_always")
def test_a_folder_gives_the_same_frames_pixels_and_error_with_one_or_three_workers(tmp_path):
    folder = _folder(tmp_path)

    def transform(frame):
        return prepare_frame(frame, CFG)

    one, error_one = _run(open_source(folder, SourceConfig(allow_gaps=True, workers=1)), transform)
    three_source = open_source(folder, SourceConfig(allow_gaps=True, workers=3))
    three, error_three = _run(three_source, transform)
    assert [i for i, _ in one] == [i for i, _ in three] == [5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(one, three))
    assert error_one == error_three and error_one[0] is StreamBroken and "frame_0020.png: not a readable image" in error_one[1]
    assert three_source.stats.delivered == 14 and three_source.stats.missing == 1
    # and the same pixels as decoding each file on its own, the path training takes
    plain = prepare_frame(av.open(str(folder / "frame_0013.png")).decode(video=0).__next__(), CFG)
    assert np.array_equal(dict(three)[13], plain)


@pytest.mark.usefixtures("pool_always")
def test_a_folder_decodes_at_most_two_frames_per_worker_ahead_of_its_reader(tmp_path):
    folder = tmp_path / "long"
    folder.mkdir()
    for n in range(40):
        av.VideoFrame.from_ndarray(np.full((16, 16, 3), n, np.uint8), format="rgb24").save(str(folder / f"frame_{n}.png"))
    calls = 0
    lock = threading.Lock()

    def transform(frame):
        nonlocal calls
        with lock:
            calls += 1
        return prepare_frame(frame, CFG)

    frames = open_source(folder, SourceConfig(workers=3)).frames(transform)
    for taken in range(1, 11):
        next(frames)
        time.sleep(0.01)  # give the pool every chance to run ahead
        assert calls <= taken + 2 * 3
    frames.close()


@pytest.mark.parametrize("ext,fmt", [("mkv", None), ("ts", "mpegts")])
@pytest.mark.usefixtures("pool_always")
def test_a_video_gives_the_same_frames_and_pixels_with_one_or_three_workers(tmp_path, ext, fmt):
    path = write_numbered_video(tmp_path / f"v.{ext}", 40, pts=[i for i in range(42) if i not in (9, 30)][:40], fmt=fmt)

    def transform(frame):
        return prepare_frame(frame, CFG)

    one, _ = _run(open_source(path, SourceConfig(workers=1)), transform)
    three, _ = _run(open_source(path, SourceConfig(workers=3)), transform)
    assert [i for i, _ in one] == [i for i, _ in three] == [i for i in range(42) if i not in (9, 30)]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(one, three))


@pytest.mark.usefixtures("pool_always")
def test_batch_reader_batches_are_identical_for_one_and_three_workers(tmp_path):
    folder = tmp_path / "exam"
    folder.mkdir()
    for n in range(23):
        av.VideoFrame.from_ndarray(numbered_image(n, 64), format="rgb24").save(str(folder / f"frame_{n:03d}.png"))

    def batches(workers):
        pool = BatchPool(2, 5, CFG.size)
        out = []
        with BatchReader(open_source(folder, SourceConfig(workers=workers)), pool, CFG) as reader:
            for batch in reader:
                frames, indices = batch.filled()
                out.append((frames.numpy().copy(), indices))
                pool.release(batch)
        return out

    one, three = batches(1), batches(3)
    assert [i.tolist() for _, i in one] == [i.tolist() for _, i in three] == [list(range(k, min(k + 5, 23))) for k in range(0, 23, 5)]
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(one, three))


def _fails_from(bad_after: int):
    """A prepare step that fails with MemoryError (simulated) once `bad_after` frames were prepared."""
    lock, calls = threading.Lock(), 0

    def transform(frame):
        nonlocal calls
        with lock:
            calls += 1
            failing = calls > bad_after
        if failing:
            raise MemoryError("simulated: no memory for the frame")
        return prepare_frame(frame, CFG)

    return transform


@pytest.mark.usefixtures("pool_always")
@pytest.mark.parametrize("kind", ["folder", "video"])
def test_a_worker_that_dies_mid_exam_stops_it_at_that_frame_in_one_line_simulated(tmp_path, kind):
    if kind == "folder":
        source = open_source(_folder(tmp_path), SourceConfig(allow_gaps=True, workers=3))
    else:
        source = open_source(write_numbered_video(tmp_path / "v.mkv", 30), SourceConfig(workers=3))
    got, error = _run(source, _fails_from(bad_after=10))
    assert error is not None and error[0] is StreamBroken
    named = int(error[1].split(": frame ")[1].split(":")[0])
    assert error[1] == f"{source.name}: frame {named}: the decode worker failed (MemoryError: simulated: no memory for the frame)"
    # every frame before the failing one, in order, with the pixels one worker gives; none after it
    one_worker = dataclasses.replace(source.config, workers=1)
    whole, _ = _run(open_source(source.name, one_worker), lambda frame: prepare_frame(frame, CFG))
    before = [(i, a) for i, a in whole if i < named]
    assert len(got) == len(before) <= 10 and [i for i, _ in got] == [i for i, _ in before]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, before))
    if kind == "folder":  # (a video counts the frames its decoder delivered to the workers)
        assert source.stats.delivered == len(got)


@pytest.mark.usefixtures("pool_always")
def test_a_worker_that_dies_on_the_first_frame_names_frame_0_simulated(tmp_path):
    source = open_source(write_numbered_video(tmp_path / "v.mkv", 12), SourceConfig(workers=2))
    got, error = _run(source, _fails_from(bad_after=0))
    assert got == [] and error[0] is StreamBroken and ": frame 0: the decode worker failed (MemoryError: simulated" in error[1]


@pytest.mark.usefixtures("pool_always")
@pytest.mark.parametrize("kind", ["folder", "video"])
def test_a_bug_in_a_worker_is_not_dressed_up_as_a_broken_input(tmp_path, kind):
    if kind == "folder":
        source = open_source(_folder(tmp_path), SourceConfig(allow_gaps=True, workers=2))
    else:
        source = open_source(write_numbered_video(tmp_path / "v.mkv", 12), SourceConfig(workers=2))

    def buggy(frame):
        raise TypeError("a bug, not a fault of the input or the machine")

    with pytest.raises(TypeError, match="a bug"):
        list(source.frames(buggy))


def test_a_frame_file_that_cannot_be_read_is_named_simulated_io_error(tmp_path, monkeypatch):
    from vce_stream.sources import preprocess

    path = tmp_path / "frame_1.png"
    av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), np.uint8), format="rgb24").save(str(path))

    def unreadable(*args, **kwargs):
        raise PermissionError(13, "Permission denied")  # tests run as root, where chmod cannot cause it

    monkeypatch.setattr(preprocess, "open", unreadable, raising=False)
    with pytest.raises(InputError, match=r"frame_1.png: cannot read \(Permission denied\)$"):
        preprocess.open_image(path)

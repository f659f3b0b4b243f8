"""Video files and pipes through PyAV: indices from timestamps, damage skipped and counted, bad input named."""

from __future__ import annotations

import os
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from vce_stream.errors import EXIT_BAD_INPUT, EXIT_INCOMPLETE, InputError
from vce_stream.sources import SourceConfig, StreamBroken, VideoSource, open_source
from vce_stream.sources.video import frame_index

SIZE = 64


def _images(n: int, size: int = SIZE, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    return [np.roll(base, i, axis=1) for i in range(n)]


def encode(path: Path, images, *, codec: str = "libx264", rate: int = 25, pts: list[int] | None = None, fmt: str | None = None) -> Path:
    """Encode RGB images with PyAV; `pts` (in frames) leaves holes where frames were dropped."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = images[0].shape[1], images[0].shape[0]
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.codec_context.time_base = Fraction(1, rate)
        for i, image in enumerate(images):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i if pts is None else pts[i]
            frame.time_base = Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def indices_of(source) -> list[int]:
    return [index for index, _ in source.frames()]


@given(st.integers(0, 200_000), st.sampled_from([Fraction(1, 1000), Fraction(1, 90000), Fraction(1, 12800), Fraction(1001, 30000)]), st.sampled_from([Fraction(25), Fraction(30000, 1001), Fraction(2), Fraction(5)]), st.integers(0, 10**6))
def test_frame_index_recovers_the_frame_number_from_its_rounded_timestamp(i, time_base, rate, origin):
    """A muxer stores round(i / rate / time_base); frame_index must give i back."""
    assume(Fraction(1) / rate / time_base >= 2)  # a time base too coarse to tell frames apart is no real stream
    pts = origin + round(Fraction(i) / rate / time_base)
    assert frame_index(pts, origin, time_base, rate) == i


@pytest.mark.parametrize(
    "name,codec,fmt",
    [
        ("a.mp4", "libx264", None),
        ("a.mkv", "libx264", None),
        ("a.ts", "libx264", "mpegts"),
        ("a.avi", "mjpeg", None),
        ("a.webm", "libvpx-vp9", None),
        ("b.mkv", "hevc", None),
    ],
)
def test_containers_and_codecs_decode_with_consecutive_indices(tmp_path, name, codec, fmt):
    path = encode(tmp_path / name, _images(30), codec=codec, fmt=fmt)
    source = open_source(path)
    assert isinstance(source, VideoSource)
    assert indices_of(source) == list(range(30))
    assert source.stats.delivered == 30 and source.stats.damaged == 0 and source.stats.missing == 0
    assert source.video_id == Path(name).stem


def test_dropped_frames_leave_holes_instead_of_shifting_later_indices(tmp_path):
    kept = [i for i in range(40) if i not in (7, 8, 20)]
    path = encode(tmp_path / "dropped.mkv", _images(len(kept)), pts=kept)
    source = VideoSource(path)
    assert indices_of(source) == kept
    assert source.stats.missing == 3


def test_the_frame_offset_is_added_to_every_index(tmp_path):
    path = encode(tmp_path / "a.mkv", _images(5))
    assert indices_of(VideoSource(path, SourceConfig(frame_offset=49))) == [49, 50, 51, 52, 53]


def test_a_pipe_gives_the_same_indices_as_the_file(tmp_path):
    path = encode(tmp_path / "live.ts", _images(40), fmt="mpegts")
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with open(write_fd, "wb") as writer:
            writer.write(path.read_bytes())

    threading.Thread(target=feed, daemon=True).start()
    with open(read_fd, "rb") as reader:
        source = VideoSource("-", SourceConfig(container_format="mpegts"), stdin=reader)
        assert source.name == "<stdin>" and source.is_pipe
        assert indices_of(source) == list(range(40))


def test_an_mp4_on_a_pipe_is_refused_with_a_hint(tmp_path):
    noise = [np.random.default_rng(i).integers(0, 255, (256, 256, 3), dtype=np.uint8) for i in range(30)]
    data = encode(tmp_path / "a.mp4", noise).read_bytes()  # noise: megabytes, more than FFmpeg's buffer
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with open(write_fd, "wb") as writer:
            try:
                writer.write(data)
            except BrokenPipeError:
                pass

    threading.Thread(target=feed, daemon=True).start()
    with open(read_fd, "rb") as reader, pytest.raises(InputError, match="<stdin>: .*mkv or mpegts") as info:
        source = VideoSource("-", stdin=reader)
        indices_of(source)
    assert info.value.exit_code == EXIT_BAD_INPUT


def test_missing_file_and_non_video_are_bad_input(tmp_path):
    with pytest.raises(InputError, match="nope.mp4: file not found") as info:
        open_source(tmp_path / "nope.mp4")
    assert info.value.exit_code == EXIT_BAD_INPUT
    text = tmp_path / "notes.mp4"
    text.write_text("these are my notes, not a video\n" * 50)
    with pytest.raises(InputError, match="notes.mp4: not a readable video"):
        open_source(text)


def test_a_video_without_frames_is_bad_input(tmp_path):
    path = tmp_path / "empty.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = SIZE
        container.start_encoding()  # a header, and not one frame
    with pytest.raises(InputError, match="empty.mkv: no decodable video frames") as info:
        indices_of(open_source(path))
    assert info.value.exit_code == EXIT_BAD_INPUT


def test_a_truncated_file_breaks_part_way_with_exit_3(tmp_path):
    path = encode(tmp_path / "full.mkv", _images(120, size=128))
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.6)])
    source = open_source(cut)
    got = []
    with pytest.raises(StreamBroken, match="cut.mkv: ended at frame .* of the 120 its header announces: the file is truncated") as info:
        for index, _ in source.frames():
            got.append(index)
    assert info.value.exit_code == EXIT_INCOMPLETE
    assert 0 < len(got) < 120 and got[:50] == list(range(50)) and got == sorted(set(got))


def test_corrupt_packets_in_the_middle_are_skipped_and_counted_without_shifting(tmp_path):
    path = encode(tmp_path / "ok.ts", _images(200, size=128), fmt="mpegts")
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 3000] = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(bytes(data))
    source = open_source(damaged)
    got = indices_of(source)
    assert got == sorted(set(got)) and got[0] == 0 and got[-1] == 199  # nothing after the damage moved
    assert len(got) < 200
    assert source.stats.missing == 200 - len(got)  # every lost frame is counted as a hole


def test_a_resolution_change_mid_stream_breaks_the_exam(tmp_path):
    first = encode(tmp_path / "a.ts", _images(20, size=64), fmt="mpegts")
    second = encode(tmp_path / "b.ts", _images(20, size=96), fmt="mpegts")
    spliced = tmp_path / "spliced.ts"
    spliced.write_bytes(first.read_bytes() + second.read_bytes())
    source = open_source(spliced)
    got = []
    with pytest.raises(StreamBroken, match="spliced.ts: resolution changed from 64x64 to 96x96 at frame \\d+"):
        for index, _ in source.frames():
            got.append(index)
    # The second recording's clock restarts; its first picture meets the guard wherever its timestamp lands.
    assert got == list(range(len(got))) and 0 < len(got) <= 20


def _scramble_packets(path: Path, out: Path, first: int, last: int | None = None, seed: int = 0) -> Path:
    """Overwrite the payload of video packets first..last (keeping container structure) with noise."""
    data = bytearray(path.read_bytes())
    with av.open(str(path)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size]
    rng = np.random.default_rng(seed)
    for pos, size in packets[first:last]:
        data[pos + 16 : pos + size - 2] = rng.integers(0, 256, size - 18, dtype=np.uint8).tobytes()
    out.write_bytes(bytes(data))
    return out


def test_a_few_undecodable_packets_are_skipped_and_counted(tmp_path):
    path = encode(tmp_path / "ok.avi", _images(60), codec="mjpeg")
    source = open_source(_scramble_packets(path, tmp_path / "few.avi", 20, 23), SourceConfig(max_damaged_run=5))
    got = indices_of(source)
    assert got == [i for i in range(60) if not 20 <= i < 23]
    assert source.stats.damaged == 3 and source.stats.missing == 3


def test_too_much_damage_in_a_row_ends_the_exam(tmp_path):
    path = encode(tmp_path / "ok.avi", _images(60), codec="mjpeg")
    source = open_source(_scramble_packets(path, tmp_path / "broken.avi", 30), SourceConfig(max_damaged_run=3))
    got = []
    with pytest.raises(StreamBroken, match="broken.avi: more than 3 damaged packets in a row after frame 29") as info:
        for index, _ in source.frames():
            got.append(index)
    assert got == list(range(30)) and info.value.exit_code == EXIT_INCOMPLETE

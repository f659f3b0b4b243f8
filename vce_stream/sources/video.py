"""Video files and pipes decoded with PyAV (any container and codec FFmpeg reads), threading enabled.

Frame-index basis (SPEC §4: 0-based decode order for well-formed constant-rate video, plus the offset):

- The first delivered frame gets round((pts - start) x time_base x R), `start` being the stream's
  start time (a video that starts at 100 s still starts at frame 0).
- Every later frame gets the previous index plus max(1, floor(Δ x R + 1/4)), Δ the time since the
  previous delivered frame. On constant-rate video Δ x R is a whole number, so this is decode order, and
  a frame lost to damage (or dropped by the recorder) leaves exactly its hole: an index comes from the
  frame's own timestamp, never from how many frames came before it (SPEC §3: a one-frame shift halves
  mAP@0.95).
- R is measured, not read from the container: 1 / the usual (long) interval between the timestamps of the
  first RATE_SAMPLE packets (rate_from_timestamps; else the container's average rate, else FFmpeg's guess). The same frames
  carry the same times in every container, while the stated rates differ (for one variable-rate video:
  mkv states 25, mp4 24.5, mpegts nothing, and FFmpeg guesses 50), so this numbers a video the same in
  mkv, mp4 and mpegts. Because steps are measured between neighbours, variable-rate video is numbered
  in decode order (steps of 0.5-1.75 intervals are all 1), and only a gap of about two intervals or
  more opens a hole. On constant-rate video R is the frame rate exactly.
- A frame whose timestamp does not advance past the previous one (FFmpeg's stale frames after damage),
  or that has none in a stream that has them, is dropped and counted (`untimed`): numbering it after its
  predecessor would push every later frame 1-2 indices late. A stream with no timestamps at all (a raw
  elementary stream) is numbered in decode order, every frame counted untimed.
- After damage (a packet the demuxer flags corrupt or the decoder refuses, a frame FFmpeg flags corrupt, a stale or untimed frame) the
  decoder's references are suspect: the frames it conceals look like older pictures. Frames are dropped
  (counted `damaged`) until the next key frame, so a damaged stretch is a hole, never wrong pictures.
  Frames are delivered HOLD_FRAMES frames late (not held with an intra-only codec): FFmpeg flags a damaged frame (or emits stale frames)
  only after the B-frames decoded from it have come out, and those show the damage too, so the frames
  held when damage shows are dropped with it (key frames excepted: they depend on no other frame).
  Limit: a flipped bit that the decoder does not notice (H.264 has no checksum), or a stretch the demuxer
  skips silently in a stream without B-frames, gives frames nothing distinguishes from good ones; they
  are delivered at their own timestamp's index (never shifted), and may show a damaged picture.

Truncation is judged in time, on the chosen (first) video stream only: its own duration (stored frame
count, stream duration, or mkv's per-track DURATION tag), minus its start time. A container duration is
trusted only when the video is the container's only stream (audio or a second video may be longer).
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections import deque
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import av

from vce_stream.errors import InputError, VceError
from vce_stream.sources.base import ResolutionGuard, SourceConfig, SourceStats, StreamBroken, ffmpeg_reason, is_worker_fault, worker_failure
from vce_stream.sources.parallel import ordered_map

STDIN = "-"
# Containers whose index sits at the end of the file: unreadable from a pipe.
_NEEDS_SEEK = {"mov,mp4,m4a,3gp,3g2,mj2", "mov", "mp4"}
# Containers (and raw streams) whose duration FFmpeg estimates from the bit rate: good for a progress bar,
# not for calling a file truncated.
_ESTIMATED_DURATION = {"mpegts", "mpeg", "mpegvideo", "h264", "hevc", "mjpeg", "m4v", "rawvideo"}
# Frames held back before delivery: FFmpeg reports damage on the damaged frame, which it outputs after
# the B-frames decoded from it (reordering), so those must still be droppable when the report comes.
HOLD_FRAMES = 4
# Packets read ahead to measure the frame interval R is based on (a live stream starts that many frames late).
RATE_SAMPLE = 16
_DURATION_TAG = re.compile(r"^(\d+):(\d\d):(\d\d(?:\.\d+)?)$")


def frame_index(pts: int, origin: int, time_base: Fraction, rate: Fraction) -> int:
    """The 0-based frame number of a timestamp (round half up), for a constant frame rate."""
    return math.floor((pts - origin) * time_base * rate + Fraction(1, 2))


def frame_step(delta: int, time_base: Fraction, rate: Fraction) -> int:
    """Index step between two delivered frames `delta` ticks apart: max(1, floor(frames + 1/4)).

    Exact on constant-rate video (the step is a whole number of frames); a variable-rate step of up to
    1.75 nominal frames stays 1, so such video is numbered in decode order whatever rate a container states.
    """
    return max(1, math.floor(delta * time_base * rate + Fraction(1, 4)))


def parse_duration_tag(text: str) -> Fraction | None:
    """Seconds of an mkv DURATION tag ("HH:MM:SS.nnnnnnnnn"); None when it does not parse."""
    match = _DURATION_TAG.match(text.strip())
    if not match:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + Fraction(seconds)


def stream_seconds(stream: av.VideoStream, container: av.container.InputContainer) -> Fraction | None:
    """How long the stream lasts from its own start, as its header says; None if only guessable.

    From the stream alone (its duration, or mkv's per-track DURATION tag, which is an end time): a
    container's duration covers its longest stream from the earliest start, so it is used only when the
    video is the sole stream.
    """
    time_base = stream.time_base
    start = Fraction(stream.start_time or 0) * time_base if time_base else Fraction(0)
    if stream.duration and time_base:
        return stream.duration * time_base
    tag = parse_duration_tag(str(stream.metadata.get("DURATION", "")))
    if tag is not None and tag > start:
        return tag - start
    if container.duration and len(container.streams) == 1:
        container_start = Fraction(container.start_time or 0, av.time_base)
        return Fraction(container.duration, av.time_base) - max(Fraction(0), start - container_start)
    return None


def rate_from_timestamps(pts: list[int], time_base: Fraction) -> Fraction | None:
    """Frames per second of the timestamps `pts` (in `time_base`); None if under 2 intervals.

    The intervals between the sorted timestamps (packets come in decode order, B-frames first) within
    half and one and a half times their upper quartile (so the odd hole or damaged stamp does not count,
    and on variable-rate video the long intervals set R, so its frames are numbered in decode order) are
    averaged: on constant-rate video that is the frame rate to one tick over the whole sample, even
    where each interval is rounded (29.97 fps in milliseconds: 33 and 34 ms).
    """
    ordered = sorted(set(pts))
    steps = [b - a for a, b in zip(ordered, ordered[1:])]
    if len(steps) < 2 or not time_base:
        return None
    upper = sorted(steps)[3 * (len(steps) - 1) // 4]  # upper quartile: variable-rate video counts its long steps
    usual = [step for step in steps if upper / 2 <= step <= upper * 3 / 2]
    return len(usual) / (sum(usual) * Fraction(time_base))


def nominal_rate(stream: av.VideoStream) -> Fraction | None:
    """R of the module docstring: the container's average rate, else FFmpeg's guess."""
    rate = stream.average_rate or stream.guessed_rate
    return Fraction(rate) if rate else None


class VideoSource:
    """Frames of a video file, or of a stream on standard input when `path` is "-"."""

    def __init__(self, path: str | os.PathLike[str], config: SourceConfig = SourceConfig(), *, stdin: BinaryIO | None = None) -> None:
        self.config = config
        self.stats = SourceStats()
        self.is_pipe = str(path) == STDIN
        self.name = "<stdin>" if self.is_pipe else str(path)
        self.video_id = "stdin" if self.is_pipe else Path(path).stem
        self._container = self._open(path, stdin)
        try:
            streams = self._container.streams.video
            if not streams:
                raise InputError(f"{self.name}: contains no video stream")
            self._stream = streams[0]
            self._stream.thread_type = config.thread_type
            self._stream.thread_count = config.decode_threads
            if self._stream.codec_context is None:
                raise InputError(f"{self.name}: not a readable video (no decoder for its video stream)")
            self.width, self.height = self._stream.codec_context.width, self._stream.codec_context.height
            self.rate = nominal_rate(self._stream)
            seconds = stream_seconds(self._stream, self._container)
            self.expected_frames = round(seconds * self.rate) if seconds is not None and self.rate else (int(self._stream.frames) or None)
            formats = set(self._container.format.name.split(","))
            # The length a truncation check may trust: a stored frame count or a duration from the header.
            trusted = bool(self._stream.frames) or not formats & _ESTIMATED_DURATION
            self.announced_seconds = seconds if trusted and seconds is not None and self.rate else None
            self.announced_frames = self.expected_frames if self.announced_seconds is not None else None
        except BaseException:
            self._container.close()
            raise

    def _open(self, path: str | os.PathLike[str], stdin: BinaryIO | None) -> av.container.InputContainer:
        fmt = self.config.container_format
        if self.is_pipe:
            target: object = stdin if stdin is not None else sys.stdin.buffer
        else:
            if not Path(path).exists():
                raise InputError(f"{self.name}: file not found")
            if Path(path).is_dir():
                raise InputError(f"{self.name}: is a folder, not a video file")
            target = str(path)
        try:
            return av.open(target, mode="r", format=fmt)
        except av.error.EOFError:
            raise InputError(f"{self.name}: no decodable video frames (the input ends before its first frame)") from None
        except av.error.FFmpegError as exc:
            raise self._unreadable(exc) from None
        except ValueError as exc:  # an unknown container_format
            raise InputError(f"{self.name}: cannot open with format {fmt!r} ({exc})") from None

    def frames(self, transform: Callable[[av.VideoFrame], Any] | None = None) -> Iterator[tuple[int, Any]]:
        """Decoded frames with their indices (module docstring); damage is skipped and counted (SourceConfig).

        Decoding is one FFmpeg decoder with its own threads (`decode_threads`, `thread_type`); `transform`
        (the resize) runs on `config.workers` threads, results in decode order.
        """
        if transform is None:
            yield from self._decoded()
            return

        def apply(item: tuple[int, av.VideoFrame]) -> tuple[int, Any]:
            index, frame = item
            try:
                return index, transform(frame)
            except VceError:
                raise
            except Exception as exc:  # the worker failed, not the input: the exam stops at this frame
                if not is_worker_fault(exc):
                    raise  # a bug keeps its traceback
                raise worker_failure(self.name, index, exc) from exc

        results = ordered_map(apply, self._decoded(), self.config.workers)
        try:
            yield from results
        finally:
            results.close()

    def _decoded(self) -> Iterator[tuple[int, av.VideoFrame]]:
        """The frames and their indices, in one thread."""
        stream, config, stats = self._stream, self.config, self.stats
        rate, time_base = self.rate, stream.time_base
        start = stream.start_time
        guard = ResolutionGuard(self.name)
        timed: bool | None = None  # decided by the first frame
        last, last_pts = -1, None  # the last accepted frame (delivered, or held as a suspect), before the offset
        kept, kept_pts = -1, None  # the last delivered frame
        spliced: av.VideoFrame | None = None
        held: deque[tuple[int, av.VideoFrame]] = deque()  # accepted, not yet delivered (HOLD_FRAMES)
        resync = False  # after damage: drop frames until a key frame
        damaged_run = 0

        def release(keep: int) -> Iterator[tuple[int, av.VideoFrame]]:
            """Deliver held frames, oldest first, until `keep` remain."""
            nonlocal kept, kept_pts
            while len(held) > keep:
                index, frame = held.popleft()
                stats.missing += index - kept - 1 if kept >= 0 else index
                guard.check(frame, index + config.frame_offset)
                kept, kept_pts = index, frame.pts
                stats.delivered += 1
                yield index + config.frame_offset, frame

        def damage_seen() -> None:
            """Damage: drop what follows until a key frame, and the held frames that may show it (not key frames)."""
            nonlocal resync, last, last_pts
            resync = True
            clean = [(index, frame) for index, frame in held if frame.key_frame]
            stats.damaged += len(held) - len(clean)
            held.clear()
            held.extend(clean)
            last, last_pts = (clean[-1][0], clean[-1][1].pts) if clean else (kept, kept_pts)

        # An intra-only codec (MJPEG, ...) has no frame decoded from another: nothing to hold back for.
        hold = 0 if getattr(stream.codec_context.codec, "intra_only", False) else HOLD_FRAMES
        packets = self._peeked_packets(stream)
        if time_base:
            rate = self._measured_rate or rate
        while True:
            try:
                packet = next(packets)
            except (StopIteration, av.error.EOFError):  # a cut file ends here; the length check below judges it
                break
            except av.error.FFmpegError as exc:
                yield from release(0)
                if stats.delivered == 0:
                    raise self._unreadable(exc) from None
                raise StreamBroken(f"{self.name}: stream broken after frame {kept + config.frame_offset} ({ffmpeg_reason(exc)})") from None
            if packet.is_corrupt:  # the demuxer saw damage (e.g. an mpegts continuity error)
                stats.damaged += 1
                damage_seen()
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as exc:
                stats.damaged += 1
                damaged_run += 1
                damage_seen()
                if damaged_run > config.max_damaged_run:
                    yield from release(0)  # what was held before the damage is clean: damage_seen dropped the rest
                    raise self._too_damaged(kept, exc)
                continue
            for frame in decoded:
                if frame.is_corrupt:
                    stats.damaged += 1
                    damaged_run += 1
                    damage_seen()
                    if damaged_run > config.max_damaged_run:
                        yield from release(0)  # what was held before the damage is clean: damage_seen dropped the rest
                        raise self._too_damaged(kept, None)
                    continue
                if timed is None:
                    timed = frame.pts is not None and bool(rate) and bool(time_base)
                if not timed:
                    if resync and not frame.key_frame:
                        stats.damaged += 1
                        continue
                    index = last + 1
                    stats.untimed += 1
                elif frame.pts is None or (last_pts is not None and frame.pts <= last_pts):
                    stats.untimed += 1  # stale or untimed: placing it would shift the frames after it
                    if guard.size is not None and (frame.width, frame.height) != guard.size:
                        spliced = frame  # a second recording whose clock restarts: judged after the first ends
                    damaged_run += 1
                    damage_seen()
                    if damaged_run > config.max_damaged_run:
                        yield from release(0)  # what was held before the damage is clean: damage_seen dropped the rest
                        raise self._too_damaged(kept, None)
                    continue
                elif resync and not frame.key_frame:
                    stats.damaged += 1  # decoded from suspect references: a concealed, older picture
                    continue
                elif last_pts is None:
                    index = max(0, frame_index(frame.pts, frame.pts if start is None else start, time_base, rate))
                else:
                    index = last + frame_step(frame.pts - last_pts, time_base, rate)
                resync = False
                damaged_run = 0
                held.append((index, frame))
                last, last_pts = index, frame.pts
                yield from release(hold)
        yield from release(0)
        if spliced is not None:
            guard.check(spliced, kept + 1 + config.frame_offset)
        if stats.delivered == 0:
            raise InputError(f"{self.name}: no decodable video frames")
        self._check_length(kept, kept_pts, resync)

    def _peeked_packets(self, stream: av.VideoStream) -> Iterator[av.Packet]:
        """The stream's packets, the first RATE_SAMPLE read ahead to set `_measured_rate` (errors keep their place)."""
        packets = self._container.demux(stream)
        peeked: list[av.Packet] = []
        error: BaseException | None = None
        try:
            for packet in packets:
                peeked.append(packet)
                if len(peeked) >= RATE_SAMPLE:
                    break
        except av.error.FFmpegError as exc:  # EOFError included: raised where the loop would have met it
            error = exc
        stamps = [packet.pts for packet in peeked if packet.pts is not None and packet.size]
        if len(stamps) > HOLD_FRAMES:  # past the last packets, B-frames not yet read would leave false gaps
            cutoff = min(stamps[-HOLD_FRAMES:])
            stamps = [pts for pts in stamps if pts <= cutoff]
        self._measured_rate = rate_from_timestamps(stamps, stream.time_base) if stream.time_base else None

        def replay() -> Iterator[av.Packet]:
            yield from peeked
            if error is not None:
                raise error
            while True:
                try:
                    packet = next(packets)
                except StopIteration:  # PyAV's demuxer may raise it itself: end of the input, not an error
                    return
                yield packet

        return replay()

    def _check_length(self, last: int, last_pts: int | None, resync: bool) -> None:
        """StreamBroken when the delivered frames end before the end the stream's header announces."""
        announced, rate, time_base = self.announced_seconds, self.rate, self._stream.time_base
        if announced is None or rate is None:
            return
        if last_pts is not None and time_base:
            start = self._stream.start_time
            reached = (last_pts - (start if start is not None else 0)) * time_base + 1 / rate
        else:
            reached = (last + 1) / rate
        if reached < announced - self.config.truncation_tolerance / rate:
            why = "damage with no key frame after it" if resync else "the file is truncated"
            raise StreamBroken(
                f"{self.name}: ended at frame {last + self.config.frame_offset} of the {self.announced_frames} "
                f"its header announces: {why}"
            )

    def _unreadable(self, exc: BaseException) -> InputError:
        hint = ""
        if self.is_pipe and (self.config.container_format is None or self.config.container_format in _NEEDS_SEEK):
            hint = "; an mp4/mov keeps its index at the end and cannot be read from a pipe: stream mkv or mpegts"
        return InputError(f"{self.name}: not a readable video ({ffmpeg_reason(exc)}){hint}")

    def _too_damaged(self, last: int, exc: BaseException | None) -> StreamBroken:
        """The error that ends the exam once more than max_damaged_run damaged packets come in a row."""
        why = f" ({ffmpeg_reason(exc)})" if exc is not None else ""
        return StreamBroken(
            f"{self.name}: more than {self.config.max_damaged_run} damaged packets in a row after frame "
            f"{last + self.config.frame_offset}{why}"
        )

    @property
    def frame_rate(self) -> float | None:
        """Frames per second of the index basis (frame index = seconds x this, before the offset), for
        showing times; None when the stream states no rate."""
        return float(self.rate) if self.rate else None

    def close(self) -> None:
        self._container.close()

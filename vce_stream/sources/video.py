"""Video files and pipes decoded with PyAV (any container and codec FFmpeg reads), threading enabled.

Frame indices come from presentation timestamps: index = round((pts - start) x time_base x frame
rate) + offset. A frame lost to damage therefore leaves a hole instead of shifting every later index
(SPEC §3: a one-frame shift halves mAP@0.95). Frames without a timestamp (raw elementary streams, some
damaged frames) are numbered one after their predecessor, and so is a timestamp that does not advance.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av

from vce_stream.errors import InputError
from vce_stream.sources.base import ResolutionGuard, SourceConfig, SourceStats, StreamBroken, ffmpeg_reason

STDIN = "-"
# Containers whose index sits at the end of the file: unreadable from a pipe.
_NEEDS_SEEK = {"mov,mp4,m4a,3gp,3g2,mj2", "mov", "mp4"}
# Containers (and raw streams) whose duration FFmpeg estimates from the bit rate: good for a progress bar,
# not for calling a file truncated.
_ESTIMATED_DURATION = {"mpegts", "mpeg", "mpegvideo", "h264", "hevc", "mjpeg", "m4v", "rawvideo"}


def frame_index(pts: int, origin: int, time_base: Fraction, rate: Fraction) -> int:
    """The 0-based frame number of a timestamp (round half up), for a constant frame rate."""
    return math.floor((pts - origin) * time_base * rate + Fraction(1, 2))


def expected_frame_count(stream: av.VideoStream, container_duration: int | None) -> int | None:
    """Frames the header announces: the frame count if stored, else duration x rate; None if unknown."""
    if stream.frames:
        return int(stream.frames)
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        return None
    if stream.duration and stream.time_base:
        return round(stream.duration * stream.time_base * rate)
    if container_duration:
        return round(Fraction(container_duration, av.time_base) * rate)
    return None


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
            self.width, self.height = self._stream.codec_context.width, self._stream.codec_context.height
            self.expected_frames = expected_frame_count(self._stream, self._container.duration)
            formats = set(self._container.format.name.split(","))
            # The length a truncation check may trust: a stored frame count or a duration from the header.
            self.announced_frames = self.expected_frames if self._stream.frames or not formats & _ESTIMATED_DURATION else None
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

    def frames(self) -> Iterator[tuple[int, av.VideoFrame]]:
        """Decoded frames with their indices; damage is skipped and counted (see SourceConfig)."""
        stream, config, stats = self._stream, self.config, self.stats
        rate = stream.average_rate or stream.guessed_rate
        time_base = stream.time_base
        origin = stream.start_time
        guard = ResolutionGuard(self.name)
        last = -1  # last index delivered, before the offset
        damaged_run = 0
        packets = self._container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except (StopIteration, av.error.EOFError):  # a cut file ends here; the length check below judges it
                break
            except av.error.FFmpegError as exc:
                if stats.delivered == 0:
                    raise self._unreadable(exc) from None
                raise StreamBroken(f"{self.name}: stream broken after frame {last + config.frame_offset} ({ffmpeg_reason(exc)})") from None
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as exc:
                stats.damaged += 1
                damaged_run += 1
                self._check_damage(damaged_run, last, exc)
                continue
            for frame in decoded:
                if frame.is_corrupt:
                    stats.damaged += 1
                    damaged_run += 1
                    self._check_damage(damaged_run, last, None)
                    continue
                damaged_run = 0
                if frame.pts is None or not rate or time_base is None:
                    index = last + 1
                    stats.untimed += 1
                else:
                    if origin is None:
                        origin = frame.pts
                    index = frame_index(frame.pts, origin, time_base, rate)
                    if index <= last:  # not advancing (or before the start): keep decode order
                        index = last + 1
                        stats.untimed += 1
                stats.missing += index - last - 1 if last >= 0 else index
                guard.check(frame, index + config.frame_offset)
                last = index
                stats.delivered += 1
                yield index + config.frame_offset, frame
        if stats.delivered == 0:
            raise InputError(f"{self.name}: no decodable video frames")
        expected = self.announced_frames
        if expected is not None and last + 1 < expected - config.truncation_tolerance:
            raise StreamBroken(
                f"{self.name}: ended at frame {last + config.frame_offset} of the {expected} its header "
                "announces: the file is truncated"
            )

    def _unreadable(self, exc: BaseException) -> InputError:
        hint = ""
        if self.is_pipe and (self.config.container_format is None or self.config.container_format in _NEEDS_SEEK):
            hint = "; an mp4/mov keeps its index at the end and cannot be read from a pipe: stream mkv or mpegts"
        return InputError(f"{self.name}: not a readable video ({ffmpeg_reason(exc)}){hint}")

    def _check_damage(self, run: int, last: int, exc: BaseException | None) -> None:
        if run > self.config.max_damaged_run:
            why = f" ({ffmpeg_reason(exc)})" if exc is not None else ""
            raise StreamBroken(
                f"{self.name}: more than {self.config.max_damaged_run} damaged packets in a row after frame "
                f"{last + self.config.frame_offset}{why}"
            )

    def close(self) -> None:
        self._container.close()

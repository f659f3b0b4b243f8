"""What every frame source offers the pipeline, its settings, and the errors it raises part way.

A source yields `(frame index, av.VideoFrame)` pairs with strictly increasing indices (SPEC §4) and
counts the damage it skipped; given a per-frame `transform` (the pipeline's `prepare_frame`), it runs
the transform, and for frame folders the image decoding too, on `workers` threads (sources/parallel.py),
delivering results in the same order with the same damage handling. Errors that stop it before the first frame are `InputError` (exit 2:
nothing could start); errors after frames were delivered are `StreamBroken` (exit 3: the pipeline
writes what it decided, flagged incomplete).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import av

from vce_stream.errors import EXIT_INCOMPLETE, ConfigError, InputError
from vce_stream.limits import MAX_COUNT, MAX_FRAME_INDEX, MAX_THREADS, check_maxima, check_range

THREAD_TYPES = ("AUTO", "FRAME", "SLICE", "NONE")
MAX_WORKERS = 256


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class SourceConfig:
    """How inputs are opened and decoded.

    decode_threads: FFmpeg decoder threads (0: one per core).
    thread_type: FFmpeg threading, "AUTO" (frame and slice threads), "FRAME", "SLICE" or "NONE".
    scale_threads: swscale threads per frame (1: the decode thread's scaler stays on one core).
    frame_offset: added to video and pipe frame indices (SPEC §4; frame folders use their file numbers).
    container_format: FFmpeg demuxer name for inputs that cannot be probed (e.g. "mpegts" on a pipe).
    max_damaged_run: more consecutive undecodable packets or corrupt frames than this ends the exam
        (incomplete); fewer are skipped and counted.
    truncation_tolerance: frames a video may fall short of the length its header announces before it
        counts as truncated (header durations are rounded).
    allow_gaps: score a frame folder whose numbering has holes (else it is refused: a hole usually means a
        copy went wrong, or file numbers that are not frame indices; see --labels-csv).
    workers: decode-and-prepare workers (1..256; default: the cores this process may use).
    """

    decode_threads: int = 0
    thread_type: str = "AUTO"
    scale_threads: int = 1
    frame_offset: int = 0
    container_format: str | None = None
    max_damaged_run: int = 50
    truncation_tolerance: int = 2
    allow_gaps: bool = False
    workers: int = field(default_factory=usable_cores)

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or not 1 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"source.workers must be a whole number from 1 to {MAX_WORKERS}, got {self.workers!r}")
        if self.thread_type not in THREAD_TYPES:
            raise ConfigError(f"source.thread_type must be one of {THREAD_TYPES}, got {self.thread_type!r}")
        if self.decode_threads < 0 or self.scale_threads < 0:
            raise ConfigError("source.decode_threads and source.scale_threads must be >= 0")
        if self.max_damaged_run < 0 or self.truncation_tolerance < 0:
            raise ConfigError("source.max_damaged_run and source.truncation_tolerance must be >= 0")
        check_range("source.frame_offset", self.frame_offset, 0, MAX_FRAME_INDEX)
        check_maxima(self, "source.", {"decode_threads": MAX_THREADS, "scale_threads": MAX_THREADS, "max_damaged_run": MAX_COUNT, "truncation_tolerance": MAX_COUNT})


@dataclass
class SourceStats:
    """What a source skipped or repaired, for the run summary.

    damaged: packets the demuxer flagged corrupt or that failed to decode, frames the decoder flagged
        corrupt, and frames dropped after damage until the next key frame (video: see sources/video.py).
    missing: frame indices absent between delivered frames (dropped, undecodable, or folder holes).
    untimed: video frames whose timestamp is missing or does not advance (dropped: placing them would
        shift the frames after them); in a stream with no timestamps at all, every frame (numbered in
        decode order).
    """

    delivered: int = 0
    damaged: int = 0
    missing: int = 0
    untimed: int = 0


class StreamBroken(InputError):
    """The input broke after frames were delivered: the exam is incomplete (exit 3)."""

    exit_code = EXIT_INCOMPLETE


class FrameSource(Protocol):
    """A stream of decoded frames with their indices.

    name: how messages name the input (a path, or "<stdin>").
    video_id: the default video id (file stem or folder name).
    expected_frames: how many frames the input announces, when it does (for progress and truncation).
    """

    name: str
    video_id: str
    expected_frames: int | None
    stats: SourceStats

    def frames(self, transform: Callable[[av.VideoFrame], Any] | None = None) -> Iterator[tuple[int, Any]]:
        """(index, frame) in index order; with `transform`, (index, transform(frame)), computed on
        `SourceConfig.workers` threads and delivered in the same order, with the same damage handling."""
        ...

    def close(self) -> None: ...


def is_worker_fault(exc: BaseException) -> bool:
    """True for what makes a decode-and-prepare worker fail without being a bug: out of memory, an I/O
    error, an FFmpeg or OpenCV error. A bug (TypeError, AssertionError, ...) is not one: it keeps its
    traceback (exit 1)."""
    return isinstance(exc, (MemoryError, OSError, av.error.FFmpegError)) or type(exc).__module__.startswith("cv2")


def worker_failure(source_name: str, index: int, exc: BaseException) -> StreamBroken:
    """A decode-and-prepare worker failed on frame `index` (`is_worker_fault`): the exam stops there as if
    the input broke (exit 3, the decided events kept), and the one-line message names the frame and the
    cause. Before the first frame it is an input that cannot start (exit 2)."""
    cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return StreamBroken(f"{source_name}: frame {index}: the decode worker failed ({cause})")


def ffmpeg_reason(exc: BaseException) -> str:
    """FFmpeg's reason for an error, on one line, without the errno and path decorations PyAV adds."""
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())


class ResolutionGuard:
    """Refuses a resolution change mid-stream: one exam is one capsule, so a change means spliced inputs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.size: tuple[int, int] | None = None

    def check(self, frame: av.VideoFrame, index: int) -> None:
        self.check_size((frame.width, frame.height), index)

    def check_size(self, size: tuple[int, int], index: int) -> None:
        if self.size is None:
            self.size = size
        elif size != self.size:
            raise StreamBroken(
                f"{self.name}: resolution changed from {self.size[0]}x{self.size[1]} to "
                f"{size[0]}x{size[1]} at frame {index}"
            )

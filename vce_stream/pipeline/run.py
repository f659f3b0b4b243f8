"""One exam through the pipeline: source -> batches -> scorer -> MedianGapState -> sinks.

`run_exam` is the whole run as a Python function (the CLI and batch runs call it). Events go to the
`--follow` sink the moment the temporal stage closes them, and to the event JSON at the end. With the
metric-aware decoding on (`postprocess.decoding`), live events come from `LiveDecoder` and carry
`"provisional": true` until their label is decided; the final file is then decided on the whole video
by `video_events`, the function `postprocess` uses, from the probabilities kept in memory. When the
input breaks part way (or the run is interrupted), nothing decided is lost: the temporal state is
flushed at the last scored frame and the JSON is written atomically with a `vce_stream` block that says
the exam is incomplete and where it stopped.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from vce_stream.postprocess.config import PostprocessConfig
from vce_stream.sources.preprocess import PreprocessConfig
from vce_stream.postprocess.live import LiveDecoder
from vce_stream.engine.base import FrameScorer
from vce_stream.errors import EXIT_INCOMPLETE, EXIT_OK, ConfigError, InputError, VceError
from vce_stream.events.event import Event
from vce_stream.events.jsonio import write_submission
from vce_stream.sinks.json_lines import JsonLinesSink
from vce_stream.pipeline.batches import BatchPool
from vce_stream.pipeline.progress import ProgressBar
from vce_stream.pipeline.reader import BatchReader
from vce_stream.scores import save_scores
from vce_stream.sources import FrameSource, SourceConfig, SourceStats, open_source
from vce_stream.postprocess.video import video_events
from vce_stream.postprocess.streaming import MedianGapState

@dataclass(frozen=True)
class PipelineConfig:
    """Batching and overlap.

    batch_size: frames per scorer call (also the latency of a live stream, in frames).
    queue_depth: batches decoded ahead of the one being scored; the pool holds queue_depth + 2 batches
        (one being filled, one being scored), which bounds memory.
    flush_after: on a live stream (stdin), seconds without a completed batch after which the frames
        decoded so far are scored as a smaller batch; 0 waits for whole batches. Files always use whole
        batches, so their output does not depend on the machine's load.
    """

    batch_size: int = 32
    queue_depth: int = 2
    flush_after: float = 1.0
    source: SourceConfig = field(default_factory=SourceConfig)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"pipeline.batch_size must be >= 1, got {self.batch_size}")
        if self.queue_depth < 0:
            raise ConfigError(f"pipeline.queue_depth must be >= 0, got {self.queue_depth}")
        if self.flush_after < 0:
            raise ConfigError(f"pipeline.flush_after must be >= 0 seconds, got {self.flush_after}")


@dataclass(frozen=True)
class RunOptions:
    """Everything a run needs besides the input, the scorer and the output path.

    video_id: the id in the JSON (default: the source's file stem or folder name).
    labels_csv: a Galar label CSV mapping a frame folder's file numbers to frame indices.
    save_scores: where to write per-frame probabilities (the format `vce-stream postprocess` reads).
    pin_memory: allocate batch buffers in pinned host memory (when a CUDA device scores them).
    """

    video_id: str | None = None
    labels_csv: str | None = None
    save_scores: str | None = None
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    pin_memory: bool = False


@dataclass(frozen=True)
class RunSummary:
    """What a run did. `incomplete` runs wrote partial output; `error` says why they stopped."""

    input: str
    video_id: str
    out: str
    frames: int
    events: int
    seconds: float
    first_frame: int
    last_frame: int
    damaged: int = 0
    missing: int = 0
    untimed: int = 0
    incomplete: bool = False
    error: str | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def stopped_at_frame(self) -> int | None:
        """The first frame index not scored, for an incomplete exam."""
        return self.last_frame + 1 if self.incomplete else None

    @property
    def exit_code(self) -> int:
        return EXIT_INCOMPLETE if self.incomplete else EXIT_OK

    def line(self) -> str:
        """The final one-line summary."""
        text = (
            f"{self.video_id}: {self.frames} frames, {self.events} label events, {self.seconds:.1f} s, "
            f"{self.fps:.1f} frames/s"
        )
        notes = [
            f"{count} {what}"
            for count, what in (
                (self.damaged, "damaged frames skipped"),
                (self.missing, "frames missing"),
                (self.untimed, "frames without timestamp"),
            )
            if count
        ]
        if notes:
            text += " (" + ", ".join(notes) + ")"
        if self.incomplete:
            text += f"; INCOMPLETE, stopped at frame {self.stopped_at_frame}; partial events in {self.out}"
        return text

    def report(self) -> dict[str, Any]:
        """The `vce_stream` block written into the JSON of an incomplete exam."""
        return {
            "incomplete": self.incomplete,
            "stopped_at_frame": self.stopped_at_frame,
            "error": self.error,
            "frames": self.frames,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "damaged_frames": self.damaged,
            "missing_frames": self.missing,
        }


class ScoreRecorder:
    """Keeps every frame's probabilities for `--save-scores` (17 floats a frame: 9 MB for 130,000 frames)."""

    def __init__(self) -> None:
        self._indices: list[np.ndarray] = []
        self._probs: list[np.ndarray] = []

    def add(self, indices: np.ndarray, probs: np.ndarray) -> None:
        self._indices.append(indices)
        self._probs.append(probs)

    def arrays(self, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
        if not self._indices:
            return np.zeros(0, np.int64), np.zeros((0, num_labels), np.float32)
        return np.concatenate(self._indices), np.concatenate(self._probs)


def check_output_path(path: str | os.PathLike[str], what: str) -> None:
    """Refuse, before any frame is scored, an output that could not be written at the end (exit 2)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; the {what} must be a file path")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"{path}: cannot write the {what} there (part of its folder path is a file)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot write the {what} there ({exc.strerror or exc})") from None


def run_exam(
    input: str | os.PathLike[str],
    scorer: FrameScorer,
    out: str | os.PathLike[str],
    options: RunOptions = RunOptions(),
    *,
    follow: TextIO | None = None,
    progress: TextIO | None = None,
) -> RunSummary:
    """Score one exam and write its event JSON to `out` (atomically).

    follow: a text stream that gets each event as a JSON line the moment it closes.
    progress: a terminal stream for the progress bar (None: no bar).
    Raises VceError (exit 2) when the input cannot start. Returns the summary otherwise; an input that
    broke part way gives `incomplete=True` (partial output written). KeyboardInterrupt and internal
    errors are re-raised after the partial output is written.
    """
    source = open_source(input, options.pipeline.source, labels_csv=options.labels_csv)
    return stream_exam(source, scorer, out, options, follow=follow, progress=progress)


def stream_exam(
    source: FrameSource,
    scorer: FrameScorer,
    out: str | os.PathLike[str],
    options: RunOptions = RunOptions(),
    *,
    follow: TextIO | None = None,
    progress: TextIO | None = None,
) -> RunSummary:
    """`run_exam` on an opened source (closed here)."""
    try:
        check_output_path(out, "event JSON")
        if options.save_scores:
            check_output_path(options.save_scores, "scores file")
    except BaseException:
        source.close()
        raise
    labels = tuple(scorer.labels)
    post = options.postprocess
    video_id = options.video_id or source.video_id
    decoder = LiveDecoder(labels, post) if post.decoding.enabled else None
    state = MedianGapState(labels, post.thresholds_for(len(labels)), post.temporal) if decoder is None else None
    sink = JsonLinesSink(follow) if follow is not None else None
    recorder = ScoreRecorder() if options.save_scores or decoder is not None else None
    config = options.pipeline
    pool = BatchPool(config.queue_depth + 2, config.batch_size, options.preprocess.size, pin_memory=options.pin_memory)
    bar = ProgressBar(video_id, source.expected_frames, progress, enabled=True) if progress is not None else None
    events: list[Event] = []
    frames, first, last = 0, 0, -1
    error: BaseException | None = None

    def emit(closed: list[Event], provisional: list[bool] | None = None) -> None:
        nonlocal sink
        events.extend(closed)
        if sink is not None and closed:
            try:
                if provisional is None:
                    sink.emit(video_id, closed)
                else:
                    for ev, flag in zip(closed, provisional):
                        sink.emit(video_id, [ev], provisional=flag)
            except OSError:  # the reader of --follow went away (closed pipe): the JSON still gets written
                sink = None

    def decide(indices: np.ndarray | None, probs: np.ndarray | None) -> None:
        """Push a batch (or flush, with None) through the live temporal stage."""
        if decoder is None:
            emit(state.push(indices, probs) if indices is not None else state.flush())
        else:
            live = decoder.push(indices, probs) if indices is not None else decoder.flush()
            emit([le.event for le in live], [not le.final for le in live])

    start = time.perf_counter()
    # Only a live stream (a pipe) is scored in part-filled batches: files keep whole batches, so the
    # same file always gives the same batches and byte-identical output.
    flush_after = config.flush_after if getattr(source, "is_pipe", False) else 0.0
    reader = BatchReader(source, pool, options.preprocess, scale_threads=config.source.scale_threads, flush_after=flush_after)
    with reader:
        try:
            for batch in reader:
                tensor, indices = batch.filled()
                probs = np.asarray(scorer.score(tensor), dtype=np.float32)
                pool.release(batch)
                if probs.shape != (indices.size, len(labels)):
                    raise ValueError(f"the scorer returned {probs.shape} for {indices.size} frames x {len(labels)} labels")
                decide(indices, probs)
                if recorder is not None:
                    recorder.add(indices, probs)
                if frames == 0:
                    first = int(indices[0])
                frames += indices.size
                last = int(indices[-1])
                if bar is not None:
                    bar.update(frames)
        except BaseException as exc:  # decided below: partial output first, then report or re-raise
            error = exc
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    if frames == 0:
        if isinstance(error, VceError):
            raise InputError(str(error)) from None  # nothing scored: the input could not start (exit 2)
        if error is not None:
            raise error
        raise InputError(f"{source.name}: no frames")
    decide(None, None)
    if decoder is not None:  # the whole-video decision, exactly as `postprocess` makes it
        events = video_events(*recorder.arrays(len(labels)), labels, post)
    stats: SourceStats = source.stats
    summary = RunSummary(
        input=source.name,
        video_id=video_id,
        out=str(out),
        frames=frames,
        events=len(events),
        seconds=seconds,
        first_frame=first,
        last_frame=last,
        damaged=stats.damaged,
        missing=stats.missing,
        untimed=stats.untimed,
        incomplete=error is not None,
        error=None if error is None else (str(error) or type(error).__name__),
    )
    write_submission(
        Path(out),
        {video_id: events},
        segmentation=post.segmentation,
        order=post.order,
        frame_ranges={video_id: (first, last)},
        labels=labels,
        extra={"vce_stream": summary.report()} if summary.incomplete else None,
    )
    if options.save_scores:
        save_scores(options.save_scores, {video_id: recorder.arrays(len(labels))}, labels)
    if error is not None and not isinstance(error, VceError):
        raise error
    return summary

"""One exam through the pipeline, composed in one visible place:

    source -> BatchReader (decode + prepare, ahead) -> scorer -> EventStage -> sinks

`run_exam` / `stream_exam` are the whole run as a Python function (the CLI and batch workers call
them). Each stage does its work in one call: the reader yields prepared batches, the scorer returns
probabilities (checked: finite, in [0, 1], one row per frame), the `EventStage` (SPEC §6 filter, or the
live metric-aware decoder) returns the events that just closed, and every sink gets each scored batch
and each closed event, then the end of the exam (`vce_stream.sinks`). The final file holds the
whole-video decision: with the decoding on, `video_events` (the function `postprocess` uses) on the
probabilities kept in memory; otherwise the streamed events themselves.

Nothing decided is lost: when the input breaks part way, the scorer returns garbage, or the run is
interrupted (SIGINT or SIGTERM), the stage is flushed at the last scored frame and every sink closes
with an outcome that says the exam is incomplete and where it stopped. Outputs are checked before any
frame is scored (`vce_stream.output_paths`): none may overwrite an input or another output.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np

from vce_stream.engine.base import FeatureScorer, FrameScorer
from vce_stream.errors import ConfigError, InputError, OutputError, ScorerOutputError, VceError
from vce_stream.events.event import Event
from vce_stream.events.outcome import ExamOutcome
from vce_stream.engine.cuda_overlap import batch_scorer
from vce_stream.pipeline.batches import Batch, BatchPool
from vce_stream.pipeline.progress import ProgressBar
from vce_stream.pipeline.reader import BatchReader
from vce_stream.limits import MAX_BATCH, MAX_QUEUE_DEPTH, check_maxima
from vce_stream.postprocess.config import PostprocessConfig
from vce_stream.probabilities import ProbabilityError, check_probabilities
from vce_stream.postprocess.stage import EventStage
from vce_stream.postprocess.video import video_events
from vce_stream.sinks import ExamEnd, ExamStart, ScoredBatch, Sink
from vce_stream.output_paths import check_outputs
from vce_stream.sinks.event_json import EventJsonSink
from vce_stream.sinks.json_lines import JsonLinesSink
from vce_stream.sinks.scores import ScoresSink
from vce_stream.sources import FrameSource, SourceConfig, open_source
from vce_stream.sources.preprocess import PreprocessConfig

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
        check_maxima(self, "pipeline.", {"batch_size": MAX_BATCH, "queue_depth": MAX_QUEUE_DEPTH})
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


class ScoreRecorder:
    """Keeps every frame's probabilities (17 floats a frame: 9 MB for 130,000 frames): saved scores and
    the whole-video decision need them at the end."""

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


def checked_probabilities(raw: object, frame_indices: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """The scorer's output as float32 (frames, labels), or ScorerOutputError naming the first bad frame.

    NaN, infinities and values outside [0, 1] are never read as "nothing found": they stop the exam
    (`vce_stream.probabilities` holds the rule, shared with saved scores files).
    """
    probs = np.array(raw, dtype=np.float32)  # a copy: a view would keep the engine's output buffer alive
    if probs.shape != (frame_indices.size, len(labels)):
        raise ScorerOutputError(f"the scorer returned {probs.shape} for {frame_indices.size} frames x {len(labels)} labels")
    try:
        check_probabilities(probs, frame_indices, "the scorer's output", labels=labels)
    except ProbabilityError as exc:
        raise ScorerOutputError(f"{exc} (a broken model or engine)") from None
    return probs


def exam_sinks(out: str | os.PathLike[str], options: RunOptions, follow: TextIO | None = None) -> list[Sink]:
    """The outputs the options ask for: the event JSON, `--follow` lines, `--save-scores`."""
    post = options.postprocess
    sinks: list[Sink] = [EventJsonSink(out, post.segmentation, post.order)]
    if follow is not None:
        sinks.append(JsonLinesSink(follow))
    if options.save_scores:
        sinks.append(ScoresSink(options.save_scores))
    return sinks


def output_targets(sinks: Sequence[Sink]) -> list[tuple[str, Path]]:
    """(what, path) of every file the sinks will write, for `check_outputs`."""
    return [(sink.what, path) for sink in sinks for path in sink.targets()]


def run_exam(
    input: str | os.PathLike[str],
    scorer: FrameScorer,
    out: str | os.PathLike[str],
    options: RunOptions = RunOptions(),
    *,
    follow: TextIO | None = None,
    progress: TextIO | None = None,
    extra_sinks: Sequence[Sink] = (),
) -> ExamOutcome:
    """Score one exam and write its outputs (the event JSON to `out`, atomically).

    follow: a text stream that gets each event as a JSON line the moment it closes.
    progress: a terminal stream for the progress bar (None: no bar).
    Raises VceError (exit 2) when the input cannot start. Returns the outcome otherwise; an input that
    broke part way gives `incomplete=True` (partial output written). KeyboardInterrupt (SIGINT, SIGTERM)
    and internal errors are re-raised after the partial output is written.
    """
    source = open_source(input, options.pipeline.source, labels_csv=options.labels_csv)
    return stream_exam(source, scorer, out, options, follow=follow, progress=progress, extra_sinks=extra_sinks)


def stream_exam(
    source: FrameSource,
    scorer: FrameScorer,
    out: str | os.PathLike[str],
    options: RunOptions = RunOptions(),
    *,
    follow: TextIO | None = None,
    progress: TextIO | None = None,
    extra_sinks: Sequence[Sink] = (),
    inputs: Sequence[str | os.PathLike[str]] = (),
) -> ExamOutcome:
    """`run_exam` on an opened source (closed here). `inputs`: other paths the run reads (the bundle),
    which no output may overwrite."""
    sinks = [*exam_sinks(out, options, follow), *extra_sinks]
    try:
        labels_csv = [options.labels_csv] if options.labels_csv else []
        check_outputs(output_targets(sinks), inputs=[source_path(source), *labels_csv, *inputs])
    except BaseException:
        source.close()
        raise
    labels = tuple(scorer.labels)
    with_features = any(sink.wants_features for sink in sinks)
    if with_features and not isinstance(scorer, FeatureScorer):
        source.close()
        raise ConfigError(f"this engine ({type(scorer).__name__}) does not return image features, which --save-embeddings and --findings need")
    post = options.postprocess
    video_id = options.video_id or source.video_id
    stage = EventStage(labels, post)
    recorder = ScoreRecorder()
    config = options.pipeline
    pool = BatchPool(config.queue_depth + 2, config.batch_size, options.preprocess.size, pin_memory=options.pin_memory)
    bar = ProgressBar(video_id, source.expected_frames, progress, enabled=True) if progress is not None else None
    for sink in sinks:
        sink.open(ExamStart(
            video_id=video_id, labels=labels, input=source.name, expected_frames=source.expected_frames,
            fps=getattr(source, "frame_rate", None), frame_offset=config.source.frame_offset,
        ))  # fmt: skip
    streamed: list[Event] = []
    frames, first, last = 0, 0, -1
    error: BaseException | None = None

    def emit(closed: list) -> None:
        streamed.extend(live.event for live in closed)
        for live in closed:
            extra = {} if not stage.decoding else {"provisional": not live.final}
            for sink in sinks:
                sink.emit(video_id, [live.event], **extra)

    start = time.perf_counter()
    # Only a live stream (a pipe) is scored in part-filled batches: files keep whole batches, so the
    # same file always gives the same batches and byte-identical output.
    flush_after = config.flush_after if getattr(source, "is_pipe", False) else 0.0
    reader = BatchReader(source, pool, options.preprocess, scale_threads=config.source.scale_threads, flush_after=flush_after)
    submitter = batch_scorer(scorer, with_features)

    def finish(batch: Batch, indices: np.ndarray, raw: np.ndarray, features: np.ndarray | None) -> None:
        """One scored batch through the checks, the sinks and the event stage; its buffer goes back."""
        nonlocal frames, first, last
        try:
            probs = checked_probabilities(raw, indices, labels)
            for sink in sinks:
                sink.scored(ScoredBatch(indices, batch.filled()[0], probs, features))
        finally:
            pool.release(batch)
        emit(stage.push(indices, probs))
        recorder.add(indices, probs)
        if frames == 0:
            first = int(indices[0])
        frames += indices.size
        last = int(indices[-1])
        if bar is not None:
            bar.update(frames)

    with reader:
        try:
            for batch in reader:
                tensor, indices = batch.filled()
                for (done, done_indices), raw, features in submitter.submit(tensor, (batch, indices)):
                    finish(done, done_indices, raw, features)
            for (done, done_indices), raw, features in submitter.drain():
                finish(done, done_indices, raw, features)
        except BaseException as exc:  # decided below: partial output first, then report or re-raise
            error = exc
    seconds = time.perf_counter() - start
    if bar is not None:
        bar.close()
    if frames == 0 and not isinstance(error, ScorerOutputError):
        for sink in sinks:
            sink.abort()
        if isinstance(error, VceError):
            raise InputError(str(error)) from None  # nothing scored: the input could not start (exit 2)
        if error is not None:
            raise error
        raise InputError(f"{source.name}: no frames")
    emit(stage.flush())
    frame_indices, probs = recorder.arrays(len(labels))
    # With the decoding on, the final file is the whole-video decision, exactly as `postprocess` makes it.
    events = video_events(frame_indices, probs, labels, post) if stage.decoding else streamed
    stats = source.stats
    outcome = ExamOutcome(
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
    close_sinks(sinks, ExamEnd(events, frame_indices, probs, outcome))
    if error is not None and not isinstance(error, VceError):
        raise error
    return outcome


def close_sinks(sinks: Sequence[Sink], result: ExamEnd) -> None:
    """Close every sink; one that cannot write does not stop the others (OutputError afterwards)."""
    failures = []
    for sink in sinks:
        try:
            sink.close(result)
        except OSError as exc:
            where = ", ".join(str(p) for p in sink.targets()) or type(sink).__name__
            failures.append(f"{where}: {exc.strerror or exc}")
    if failures:
        written = [str(p) for sink in sinks for p in sink.targets() if not any(str(p) in f for f in failures)]
        kept = f"; written: {', '.join(written)}" if written else ""
        raise OutputError(f"could not write {'; '.join(failures)}{kept}")


def source_path(source: FrameSource) -> str:
    """The input path of `source` ("-" for a pipe), so no output overwrites it."""
    return "-" if getattr(source, "is_pipe", False) else source.name

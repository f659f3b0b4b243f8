"""The review-report sink (`run --report`): key frames kept while the exam streams, the page at the end.

Thumbnails are taken from the prepared frames the pipeline already has (`KeyFrameCollector`: one bounded
heap per label plus the overall top N, so memory does not grow with the exam), so the report never
decodes the video a second time. At the end the page gets the whole-video events, every frame's
probabilities (kept by the pipeline anyway) and the decoded anatomy path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from vce_stream.postprocess.config import PostprocessConfig
from vce_stream.report.cli import anatomy_path_of
from vce_stream.report.page import ReportFacts, render_report
from vce_stream.report.thumbnails import KeyFrameCollector, KeyFrameSettings
from vce_stream.sinks import ExamEnd, ExamStart, ScoredBatch, Sink, register_sink


@register_sink("report")
class ReportSink(Sink):
    """Writes the self-contained HTML review page of the exam to `path`.

    bundle, engine, thresholds, decoding: what scored the exam and how events were decided, as the page
    states them (None: not recorded).
    """

    what = "report"

    def __init__(
        self,
        path: str | os.PathLike[str],
        settings: KeyFrameSettings = KeyFrameSettings(),
        *,
        bundle: str | None = None,
        engine: str | None = None,
        thresholds: Mapping[str, float] | None = None,
        decoding: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.settings = settings
        self.bundle, self.engine, self.thresholds, self.decoding = bundle, engine, thresholds, decoding
        self._exam: ExamStart | None = None
        self._collector: KeyFrameCollector | None = None

    @classmethod
    def for_settings(
        cls, path: str | os.PathLike[str], labels: Sequence[str], post: PostprocessConfig, *,
        bundle: str, engine: str | None = None, top: int = KeyFrameSettings().top_n,
    ) -> ReportSink:  # fmt: skip
        """The report of a run that decides events with `post`: the page states its thresholds and
        decoding (`run --report` and `batch --report` both build it here)."""
        decoding = "metric-aware decoding (see the bundle's postprocess.decoding)" if post.decoding.enabled else (
            f"SPEC §6 filter: median window {post.temporal.window}, gap {post.temporal.gap}, minimum length {post.temporal.min_len}"
        )  # fmt: skip
        thresholds = dict(zip(labels, post.thresholds_for(len(labels))))
        return cls(path, KeyFrameSettings(top_n=top), bundle=bundle, engine=engine, thresholds=thresholds, decoding=decoding)

    def targets(self) -> Sequence[Path]:
        return (self.path,)

    def open(self, exam: ExamStart) -> None:
        self._exam = exam
        self._collector = KeyFrameCollector(exam.labels, self.settings)

    def scored(self, batch: ScoredBatch) -> None:
        assert self._collector is not None
        self._collector.push(batch.frame_indices, batch.frames, batch.probs)

    def close(self, result: ExamEnd) -> None:
        assert self._exam is not None and self._collector is not None
        outcome, exam = result.outcome, self._exam
        facts = ReportFacts(
            input=outcome.input,
            video_id=outcome.video_id,
            frames=outcome.frames,
            first_frame=outcome.first_frame,
            last_frame=outcome.last_frame,
            damaged=outcome.damaged,
            missing=outcome.missing,
            untimed=outcome.untimed,
            fps=exam.fps if outcome.untimed == 0 else None,  # frames without timestamps: frame indices only
            frame_offset=exam.frame_offset,
            bundle=self.bundle,
            engine=self.engine,
            thresholds=self.thresholds,
            decoding=self.decoding,
            incomplete=outcome.incomplete,
            stopped_at_frame=outcome.stopped_at_frame,
            notes=(f"stopped: {outcome.error}",) if outcome.error else (),
        )
        render_report(
            self.path,
            facts=facts,
            labels=exam.labels,
            events=result.events,
            frame_indices=result.frame_indices,
            probs=result.probs,
            key_frames=self._collector.result(),
            anatomy_path=anatomy_path_of(result.probs, exam.labels),
        )

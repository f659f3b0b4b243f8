"""The event JSON sink (`--out`): the RARE-VISION submission of one exam, written atomically at the end."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from vce_stream.events.jsonio import write_submission
from vce_stream.sinks import ExamEnd, ExamStart, Sink, register_sink


@register_sink("event-json")
class EventJsonSink(Sink):
    """Writes the whole-video events as the event JSON (SPEC §2) when the exam closes.

    An incomplete exam's file carries `"vce_stream": {"incomplete": true, "stopped_at_frame": N, ...}`.
    segmentation/order: as `PostprocessConfig` (tuple or label events; confidence or time order).
    """

    what = "event JSON"

    def __init__(self, path: str | os.PathLike[str], segmentation: str = "tuple", order: str = "confidence") -> None:
        self.path = Path(path)
        self.segmentation = segmentation
        self.order = order
        self._labels: tuple[str, ...] = ()

    def targets(self) -> Sequence[Path]:
        return (self.path,)

    def open(self, exam: ExamStart) -> None:
        self._labels = exam.labels

    def close(self, result: ExamEnd) -> None:
        outcome = result.outcome
        write_submission(
            self.path,
            {outcome.video_id: result.events},
            segmentation=self.segmentation,
            order=self.order,
            frame_ranges={outcome.video_id: (outcome.first_frame, outcome.last_frame)},
            labels=self._labels,
            extra={"vce_stream": outcome.report()} if outcome.incomplete else None,
        )

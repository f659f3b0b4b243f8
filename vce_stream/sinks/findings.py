"""The few-shot findings sink (`run --findings FILE`): the bundle's prototype findings as events.

Prototype findings (`vce-stream prototypes add`) are outside the RARE-VISION 17, so they never enter the
event JSON: each frame's image feature (from the same forward pass) is compared with the prototypes
(`prototype_probs`: 0.5 at each prototype's calibrated threshold), the result goes through the same
SPEC §6 filter as every label (`MedianGapState`, thresholds 0.5), and the events go to a findings file
of their own at the end.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from vce_stream.events.event import Event
from vce_stream.model.prototypes import PrototypeSet, prototype_probs, write_findings
from vce_stream.postprocess.config import TemporalConfig
from vce_stream.postprocess.streaming import MedianGapState
from vce_stream.sinks import ExamEnd, ExamStart, ScoredBatch, Sink, register_sink


@register_sink("findings")
class FindingsSink(Sink):
    """Writes the prototype findings of the exam to `path` (a JSON file of its own)."""

    what = "findings file"
    wants_features = True

    def __init__(self, path: str | os.PathLike[str], prototypes: PrototypeSet, bundle_hash: str, temporal: TemporalConfig = TemporalConfig()) -> None:
        self.path = Path(path)
        self.prototypes = prototypes
        self.bundle_hash = bundle_hash
        self.temporal = temporal
        self._state: MedianGapState | None = None
        self._events: list[Event] = []

    def targets(self) -> Sequence[Path]:
        return (self.path,)

    def open(self, exam: ExamStart) -> None:
        labels = self.prototypes.labels
        self._state = MedianGapState(labels, [0.5] * len(labels), self.temporal)
        self._events = []

    def scored(self, batch: ScoredBatch) -> None:
        assert self._state is not None and batch.features is not None
        self._events.extend(self._state.push(batch.frame_indices, prototype_probs(batch.features, self.prototypes)))

    def close(self, result: ExamEnd) -> None:
        assert self._state is not None
        self._events.extend(self._state.flush())
        write_findings(self.path, result.outcome.video_id, self.bundle_hash, self.prototypes, self._events)

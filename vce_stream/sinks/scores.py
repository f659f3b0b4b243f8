"""The saved-scores sink (`--save-scores`): every frame's probabilities, for `postprocess` and `calibrate`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from vce_stream.scores import save_scores
from vce_stream.sinks import ExamEnd, ExamStart, Sink, register_sink


@register_sink("scores")
class ScoresSink(Sink):
    """Writes the exam's frame indices and probabilities (the `vce_stream.scores` format) at the end."""

    what = "scores file"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._labels: tuple[str, ...] = ()

    def targets(self) -> Sequence[Path]:
        return (self.path,)

    def open(self, exam: ExamStart) -> None:
        self._labels = exam.labels

    def close(self, result: ExamEnd) -> None:
        save_scores(self.path, {result.outcome.video_id: (result.frame_indices, result.probs)}, self._labels)

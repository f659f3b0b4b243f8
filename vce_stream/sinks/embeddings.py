"""The embeddings sink (`run --save-embeddings`): every frame's unit image feature, streamed to disk.

The features come from the same forward pass as the probabilities (`FeatureScorer`); rows go to a
temporary file as they arrive (memory holds one batch) and the file is renamed into place at the end
(`vce_stream.embeddings.store`), flagged incomplete when the exam broke part way. A run killed before
its end leaves no file under the final name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from vce_stream.embeddings.store import EmbeddingWriter
from vce_stream.sinks import ExamEnd, ExamStart, ScoredBatch, Sink, register_sink


@register_sink("embeddings")
class EmbeddingsSink(Sink):
    """Writes the exam's embeddings file to `path` (feature size `dim`, tagged with the bundle's hash)."""

    what = "embeddings file"
    wants_features = True

    def __init__(self, path: str | os.PathLike[str], dim: int, bundle_hash: str) -> None:
        self.path = Path(path)
        self.dim = dim
        self.bundle_hash = bundle_hash
        self._writer: EmbeddingWriter | None = None

    def targets(self) -> Sequence[Path]:
        return (self.path,)

    def open(self, exam: ExamStart) -> None:
        self._writer = EmbeddingWriter(self.path, self.dim, self.bundle_hash, exam.video_id)

    def scored(self, batch: ScoredBatch) -> None:
        assert self._writer is not None and batch.features is not None
        self._writer.push(batch.frame_indices, batch.features)

    def close(self, result: ExamEnd) -> None:
        assert self._writer is not None
        self._writer.close(complete=not result.outcome.incomplete)

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()

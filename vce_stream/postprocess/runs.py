"""A whole video on a dense row grid, and the paper's filter (SPEC §6) on it one class at a time.

Decoding works on *rows*: the video's frames after the missing-frame policy (`filters.fill_missing_frames`),
so row r is frame `frames[r]`. A long hole splits the rows into segments; the filter never joins runs
across one. Runs (`filters.Runs`) are rows, in time order. `filter_runs` is `filters.segment_runs` per
segment for one class, so it gives exactly the runs of `filters.offline_events` while a calibration
search calls it for one (class, threshold) at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vce_stream.postprocess.config import TemporalConfig
from vce_stream.postprocess.filters import Runs, fill_missing_frames, segment_runs


@dataclass(frozen=True)
class DenseVideo:
    """One video's probabilities on the dense row grid.

    probs: (rows, labels) float; frames: (rows,) frame index of each row; segments: (first row,
    last row + 1) of each stretch without a long hole; prefix: (rows + 1, labels) float64 cumulative
    sums of `probs`, for run means in O(1).
    """

    probs: np.ndarray
    frames: np.ndarray
    segments: tuple[tuple[int, int], ...]
    prefix: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.frames.size)

    def run_means(self, column: int, runs: Runs) -> np.ndarray:
        """Mean probability of class `column` over each run."""
        starts, ends = runs
        sums = self.prefix[ends + 1, column] - self.prefix[starts, column]
        return sums / np.maximum(ends - starts + 1, 1)


def densify(frame_indices: np.ndarray, probs: np.ndarray, max_fill: int) -> DenseVideo:
    """Apply the missing-frame policy (filters.fill_missing_frames) and lay the segments end to end."""
    parts = fill_missing_frames(frame_indices, probs, max_fill)
    num_labels = np.asarray(probs).shape[1] if np.asarray(probs).ndim == 2 else 0
    if not parts:
        empty = np.zeros((0, num_labels), dtype=np.float32)
        return DenseVideo(empty, np.zeros(0, np.int64), (), np.zeros((1, num_labels)))
    rows = np.concatenate([p for _, p in parts])  # the input's dtype: thresholds compare as in the reference
    frames = np.concatenate([first + np.arange(len(p), dtype=np.int64) for first, p in parts])
    bounds = np.cumsum([0] + [len(p) for _, p in parts])
    segments = tuple((int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:]))
    prefix = np.concatenate([np.zeros((1, rows.shape[1])), np.cumsum(rows, axis=0, dtype=np.float64)])
    return DenseVideo(rows, frames, segments, prefix)


def filter_runs(video: DenseVideo, column: int, threshold: float, config: TemporalConfig) -> Runs:
    """Runs of one class after threshold, median, gap merging and minimum length, per segment."""
    all_starts, all_ends = [], []
    for lo, hi in video.segments:
        starts, ends = segment_runs(video.probs[lo:hi, column : column + 1], [threshold], config)[0]
        all_starts.append(starts + lo)
        all_ends.append(ends + lo)
    if not all_starts:
        return empty_runs()
    return np.concatenate(all_starts).astype(np.int64), np.concatenate(all_ends).astype(np.int64)


def length_weighted(means: np.ndarray, runs: Runs, power: float) -> np.ndarray:
    """mean probability x length ** power per run: the evidence of a gate and the confidence of a rank."""
    starts, ends = runs
    return np.asarray(means, dtype=np.float64) * (ends - starts + 1).astype(np.float64) ** power


def empty_runs() -> Runs:
    """No runs (what a dropped label decides)."""
    return np.zeros(0, np.int64), np.zeros(0, np.int64)

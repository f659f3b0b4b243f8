"""`MedianGapState`: the streaming form of SPEC §6, equal to `filters.offline_events` on any input.

The semantics are `filters`' (its module docstring); this module holds only the incremental logic, and
takes the threshold and the window vote from there. The state machine sees each frame once, in batches, and keeps per class only what the next frames can
still change: the last `window - 1` binarised frames (for the median), their probabilities, and one open
run (start, end, probability sums). Memory is O(window + classes) whatever the exam's length.

Positions below are counted from the start of the current *segment* (a stretch of frames without a long
hole; see `TemporalConfig.max_fill`); frame index = segment's first index + position.

An event is emitted as soon as `gap + 1` frames of the median output after its end are known to be off,
that is at the push that delivers frame `end + window // 2 + gap + 1` (`TemporalConfig.lag` frames later),
or at `flush()`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vce_stream.errors import FrameOrderError
from vce_stream.events.event import Event
from vce_stream.postprocess.config import TemporalConfig
from vce_stream.postprocess.filters import binarise, window_votes


class MedianGapState:
    """Per-class streaming median filter, gap merging and minimum length.

    Interface: `push(frame_indices, probs) -> events closed by these frames`, `flush() -> the rest`.
    After `flush()` the state is empty and a new video may be pushed.
    """

    def __init__(self, labels: Sequence[str], thresholds: Sequence[float], config: TemporalConfig) -> None:
        if len(thresholds) != len(labels):
            raise ValueError(f"{len(thresholds)} thresholds for {len(labels)} labels")
        self.labels = tuple(labels)
        self.config = config
        self._thresholds = np.asarray(thresholds, dtype=np.float64)
        self._half = config.window // 2
        self._label_rank = {label: i for i, label in enumerate(self.labels)}
        self.frames_seen = 0  # frames pushed
        self.frames_filled = 0  # missing frames filled with the last probabilities
        self.breaks = 0  # holes longer than max_fill that ended every open event
        self._last_index: int | None = None
        self._reset_segment()

    # -- public interface -------------------------------------------------------------------------------

    def push(self, frame_indices: np.ndarray, probs: np.ndarray) -> list[Event]:
        """Feed frames (strictly increasing indices, probabilities (N, classes)); return events now final."""
        idx = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim != 2 or probs.shape != (idx.size, len(self.labels)):
            raise ValueError(f"probs shape {probs.shape} does not match {idx.size} frames x {len(self.labels)} labels")
        if idx.size == 0:
            return []
        previous = self._last_index if self._last_index is not None else idx[0] - 1
        steps = np.diff(idx, prepend=previous)
        if np.any(steps <= 0):
            bad = int(np.flatnonzero(steps <= 0)[0])
            before = previous if bad == 0 else int(idx[bad - 1])
            raise FrameOrderError(f"frame index {idx[bad]} follows {before}: indices must increase")
        self.frames_seen += idx.size
        events: list[Event] = []
        # Cut the batch at long holes; within a part, repeat rows to fill short holes.
        long_holes = np.flatnonzero(steps - 1 > self.config.max_fill)
        bounds = [0, *long_holes.tolist(), idx.size]
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            if lo == hi:
                continue
            if self._segment_first is not None and steps[lo] - 1 > self.config.max_fill:
                events.extend(self._end_segment())
                self.breaks += 1
            part_idx, part = idx[lo:hi], probs[lo:hi]
            rows = self._fill_rows(part_idx, part, int(steps[lo]))
            if self._segment_first is None:
                self._segment_first = int(part_idx[0])
            events.extend(self._advance(rows))
            self._last_index = int(part_idx[-1])
            self._last_probs = part[-1]
        return self._ordered(events)

    def flush(self) -> list[Event]:
        """End of the video: close every open event. The state is then empty."""
        events = self._end_segment()
        self._last_index = None
        return self._ordered(events)

    # -- internals --------------------------------------------------------------------------------------

    def _reset_segment(self) -> None:
        n = len(self.labels)
        self._segment_first: int | None = None
        self._last_probs: np.ndarray | None = None
        self._pad: np.ndarray | None = None  # binarised tail of the edge-padded input, <= 2*half rows
        self._pending_probs = np.zeros((0, n))  # probabilities of inputs whose median is not out yet
        self._out_pos = 0  # next median-output position
        self._prob_total = np.zeros(n)  # sum of probabilities of positions < _out_pos
        self._run_start = np.full(n, -1, np.int64)  # open run per class, -1 when none
        self._run_end = np.full(n, -1, np.int64)
        self._run_sum_before = np.zeros(n)  # probability sum of positions < run start
        self._run_sum_end = np.zeros(n)  # probability sum of positions <= run end

    def _fill_rows(self, part_idx: np.ndarray, part: np.ndarray, first_step: int) -> np.ndarray:
        """Rows to feed for one part: the short hole before it (if any) and the holes inside it."""
        repeats = np.append(np.diff(part_idx), 1)
        rows = np.repeat(part, repeats, axis=0)
        filled = int(repeats.sum()) - part_idx.size
        if self._segment_first is not None and first_step > 1:
            rows = np.concatenate([np.repeat(self._last_probs[None, :], first_step - 1, axis=0), rows])
            filled += first_step - 1
        self.frames_filled += filled
        return rows

    def _advance(self, rows: np.ndarray) -> list[Event]:
        binary = binarise(rows, self._thresholds)
        if self._pad is None:  # edge replication at the segment's start
            self._pad = np.repeat(binary[:1], self._half, axis=0)
        return self._median_out(np.concatenate([self._pad, binary]), rows)

    def _median_out(self, padded: np.ndarray, new_probs: np.ndarray) -> list[Event]:
        """Emit median outputs for every complete window of `padded`; keep the rest as the new tail."""
        window = 2 * self._half + 1
        count = padded.shape[0] - window + 1
        self._pending_probs = np.concatenate([self._pending_probs, new_probs])
        if count <= 0:
            self._pad = padded
            return []
        median = window_votes(padded, self._half)
        self._pad = padded[count:]
        out_probs, self._pending_probs = self._pending_probs[:count], self._pending_probs[count:]
        return self._runs_out(median, out_probs)

    def _runs_out(self, median: np.ndarray, probs: np.ndarray) -> list[Event]:
        """Gap merging and minimum length on median outputs at positions _out_pos.. (vectorised scan)."""
        first = self._out_pos
        last = first + median.shape[0] - 1
        # Probability prefix sums: sums[j] = sum of positions < first + j.
        sums = np.concatenate([self._prob_total[None, :], self._prob_total + np.cumsum(probs, axis=0)])
        edges = np.diff(np.pad(median, ((1, 1), (0, 0))).astype(np.int8), axis=0)
        cls_s, pos_s = np.nonzero(edges.T == 1)
        _, pos_e = np.nonzero(edges.T == -1)
        events: list[Event] = []
        gap = self.config.gap
        for c, s, e in zip(cls_s.tolist(), (pos_s + first).tolist(), (pos_e - 1 + first).tolist()):
            if self._run_start[c] >= 0 and s - self._run_end[c] - 1 <= gap:
                self._run_end[c] = e
                self._run_sum_end[c] = sums[e - first + 1, c]
                continue
            if self._run_start[c] >= 0:
                events.extend(self._close(c))
            self._run_start[c], self._run_end[c] = s, e
            self._run_sum_before[c] = sums[s - first, c]
            self._run_sum_end[c] = sums[e - first + 1, c]
        # Runs followed by more than `gap` off frames can no longer grow.
        for c in np.flatnonzero((self._run_start >= 0) & (last - self._run_end > gap)).tolist():
            events.extend(self._close(c))
        self._prob_total = sums[-1]
        self._out_pos = last + 1
        return events

    def _close(self, c: int) -> list[Event]:
        start, end = int(self._run_start[c]), int(self._run_end[c])
        self._run_start[c] = -1
        length = end - start + 1
        if length < self.config.min_len:
            return []
        score = float((self._run_sum_end[c] - self._run_sum_before[c]) / length)
        first = self._segment_first
        return [Event(first + start, first + end, self.labels[c], score)]

    def _end_segment(self) -> list[Event]:
        """Finish the current segment: edge-replicate its last frame, close all runs, reset."""
        events: list[Event] = []
        if self._segment_first is not None and self._pad is not None:
            tail = np.repeat(self._pad[-1:], self._half, axis=0)
            last_probs = np.zeros((0, len(self.labels)))
            events.extend(self._median_out(np.concatenate([self._pad, tail]), last_probs))
            for c in np.flatnonzero(self._run_start >= 0).tolist():
                events.extend(self._close(c))
        self._reset_segment()
        return events

    def _ordered(self, events: list[Event]) -> list[Event]:
        return sorted(events, key=lambda ev: (ev.start, self._label_rank[ev.label]))

"""SPEC §6, the paper's per-class post-processing: the offline reference, as small pure numpy functions.

The semantics, stated once (the streaming `streaming.MedianGapState` and the decoding's
`runs.filter_runs` are other forms of exactly this, and the tests hold them to it):

0. Missing frames (`fill_missing_frames`): frame indices must strictly increase. A hole of at most
   `max_fill` absent indices is filled with the last probabilities before it; a longer hole ends the
   segment, and steps 1-5 run on each segment separately (no run crosses a long hole).
1. Threshold (`binarise`): frame t is on for class c when p[t, c] >= thresholds[c], compared in float64.
2. Median (`median_filter_binary`): majority vote over an odd `window` centred on each frame, the
   segment's first and last frames repeated beyond its ends; equal to
   ``scipy.ndimage.median_filter(x, size=(window, 1), mode="nearest")`` on 0/1 input.
3. Gap merging (`merge_runs`): two runs separated by at most `gap` off frames become one run; off
   frames before the first run or after the last are never a gap.
4. Minimum length (`drop_short`): runs shorter than `min_len` frames are dropped (after merging).
5. Events (`segment_events`): each remaining run [s, e] of class c is an event of label c from frame
   first + s to first + e (inclusive), scored by the mean probability of c over the run (the raw, not
   binarised, probabilities, after step 0's filling); events are ordered by (start, label order).

Arrays are (frames, classes) along axis 0 unless said otherwise, so all classes are processed at once.
Runs are pairs of int64 arrays (starts, inclusive ends), in time order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from vce_stream.postprocess.config import TemporalConfig
from vce_stream.errors import FrameOrderError
from vce_stream.events.event import Event

Runs = tuple[np.ndarray, np.ndarray]  # starts, inclusive ends, int64, time order


def binarise(probs: np.ndarray, thresholds: Sequence[float] | np.ndarray) -> np.ndarray:
    """Step 1: p >= t per class, as (frames, classes) bool.

    A float64 comparison: a float32 probability equal to float32(t) but below t is off.
    """
    return np.asarray(probs) >= np.asarray(thresholds, dtype=np.float64)[None, :]


def window_votes(padded: np.ndarray, half: int) -> np.ndarray:
    """Majority of every complete window of `2 * half + 1` rows of an already padded bool array.

    Row i of the result is the vote over rows i .. i + 2 * half of `padded` (so it has
    `len(padded) - 2 * half` rows, none if fewer rows than a window).
    """
    window = 2 * half + 1
    csum = np.concatenate([np.zeros((1, padded.shape[1]), np.int64), np.cumsum(padded, axis=0, dtype=np.int64)])
    return (csum[window:] - csum[:-window]) > half


def median_filter_binary(x: np.ndarray, window: int) -> np.ndarray:
    """Step 2: majority vote over an odd `window` with edge replication along axis 0.

    Parameters
    ----------
    x : (frames, classes) bool
    window : odd int >= 1

    Returns
    -------
    (frames, classes) bool, equal to
    ``scipy.ndimage.median_filter(x, size=(window, 1), mode="nearest")`` for 0/1 input.
    """
    x = np.asarray(x, dtype=bool)
    if x.shape[0] == 0 or window == 1:
        return x.copy()
    half = window // 2
    padded = np.concatenate([np.repeat(x[:1], half, axis=0), x, np.repeat(x[-1:], half, axis=0)])
    return window_votes(padded, half)


def run_bounds(x: np.ndarray) -> Runs:
    """Starts and inclusive ends of the runs of True in a 1-D bool array."""
    x = np.asarray(x, dtype=bool)
    edges = np.diff(np.concatenate([[False], x, [False]]).astype(np.int8))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1


def merge_runs(runs: Runs, gap: int) -> Runs:
    """Step 3: runs separated by at most `gap` off frames become one run."""
    starts, ends = runs
    if starts.size == 0:
        return runs
    keep_break = (starts[1:] - ends[:-1] - 1) > gap
    return starts[np.concatenate([[True], keep_break])], ends[np.concatenate([keep_break, [True]])]


def drop_short(runs: Runs, min_len: int) -> Runs:
    """Step 4: the runs of at least `min_len` frames."""
    starts, ends = runs
    long_enough = ends - starts + 1 >= min_len
    return starts[long_enough], ends[long_enough]


def segment_runs(probs: np.ndarray, thresholds: Sequence[float] | np.ndarray, config: TemporalConfig) -> list[Runs]:
    """Steps 1-4 on one segment (rows without a long hole): each class's runs, as rows of `probs`."""
    mask = median_filter_binary(binarise(probs, thresholds), config.window)
    return [drop_short(merge_runs(run_bounds(mask[:, c]), config.gap), config.min_len) for c in range(mask.shape[1])]


def runs_mask(runs: Runs, length: int) -> np.ndarray:
    """The 1-D bool array of `length` frames that is True exactly on `runs`."""
    out = np.zeros(length, dtype=bool)
    for s, e in zip(*runs):
        out[s : e + 1] = True
    return out


def merge_gaps(x: np.ndarray, gap: int) -> np.ndarray:
    """Step 3 on a (frames, classes) mask: fill holes of at most `gap` off frames between two runs."""
    x = np.asarray(x, dtype=bool)
    return _per_column(x, lambda column: merge_runs(run_bounds(column), gap))


def drop_short_runs(x: np.ndarray, min_len: int) -> np.ndarray:
    """Step 4 on a (frames, classes) mask: clear runs shorter than `min_len` frames."""
    x = np.asarray(x, dtype=bool)
    return _per_column(x, lambda column: drop_short(run_bounds(column), min_len))


def _per_column(x: np.ndarray, step: Callable[[np.ndarray], Runs]) -> np.ndarray:
    out = np.zeros_like(x)
    for c in range(x.shape[1]):
        out[:, c] = runs_mask(step(x[:, c]), x.shape[0])
    return out


def fill_missing_frames(
    frame_indices: np.ndarray, probs: np.ndarray, max_fill: int
) -> list[tuple[int, np.ndarray]]:
    """Step 0: the missing-frame policy; contiguous segments as (first frame index, probs).

    A hole of at most `max_fill` absent indices is filled with the last probabilities before it; a
    longer hole starts a new segment. Indices must strictly increase (FrameOrderError otherwise).
    """
    idx = np.asarray(frame_indices, dtype=np.int64)
    probs = np.asarray(probs)
    if idx.size == 0:
        return []
    steps = np.diff(idx)
    if np.any(steps <= 0):
        bad = int(np.flatnonzero(steps <= 0)[0])
        raise FrameOrderError(f"frame index {idx[bad + 1]} follows {idx[bad]}: indices must increase")
    segments: list[tuple[int, np.ndarray]] = []
    seg_start = 0
    for cut in list(np.flatnonzero(steps - 1 > max_fill) + 1) + [idx.size]:
        part_idx, part = idx[seg_start:cut], probs[seg_start:cut]
        # Each frame repeats until the next present index: step 1 -> once, a filled hole -> more.
        repeats = np.append(np.diff(part_idx), 1)
        segments.append((int(part_idx[0]), np.repeat(part, repeats, axis=0)))
        seg_start = cut
    return segments


def segment_events(
    first_index: int,
    probs: np.ndarray,
    thresholds: Sequence[float],
    config: TemporalConfig,
    labels: Sequence[str],
) -> list[Event]:
    """Steps 1-5 on one segment (frame `first_index + i` is row i), ordered by (start, label order)."""
    csum = np.concatenate([np.zeros((1, probs.shape[1])), np.cumsum(probs, axis=0, dtype=np.float64)])
    events = []
    for c, (label, runs) in enumerate(zip(labels, segment_runs(probs, thresholds, config))):
        for s, e in zip(*runs):
            score = float((csum[e + 1, c] - csum[s, c]) / (e - s + 1))
            events.append(Event(first_index + int(s), first_index + int(e), label, score))
    order = {label: i for i, label in enumerate(labels)}
    return sorted(events, key=lambda ev: (ev.start, order[ev.label]))


def offline_events(
    frame_indices: np.ndarray,
    probs: np.ndarray,
    thresholds: Sequence[float],
    config: TemporalConfig,
    labels: Sequence[str],
) -> list[Event]:
    """The reference: all events of a whole video, given all its frames at once (steps 0-5).

    Returns events ordered by (start, label order); `MedianGapState` returns the same set.
    """
    events: list[Event] = []
    for first, seg_probs in fill_missing_frames(frame_indices, probs, config.max_fill):
        events.extend(segment_events(first, seg_probs, thresholds, config, labels))
    return events

"""The offline reference of SPEC §6, as small pure numpy functions.

Each function works on a (frames, classes) array along axis 0, so all classes are processed at once.
`offline_events` composes them and is the definition that the streaming `MedianGapState` must equal.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vce_stream.postprocess.config import TemporalConfig
from vce_stream.errors import FrameOrderError
from vce_stream.events.event import Event


def binarise(probs: np.ndarray, thresholds: Sequence[float] | np.ndarray) -> np.ndarray:
    """p >= t per class: (frames, classes) bool."""
    return np.asarray(probs) >= np.asarray(thresholds, dtype=np.float64)[None, :]


def median_filter_binary(x: np.ndarray, window: int) -> np.ndarray:
    """Majority vote over an odd `window` with edge replication along axis 0.

    Equals `scipy.ndimage.median_filter(x, size=(window, 1), mode="nearest")` for 0/1 input.
    """
    x = np.asarray(x, dtype=bool)
    if x.shape[0] == 0 or window == 1:
        return x.copy()
    half = window // 2
    padded = np.concatenate([np.repeat(x[:1], half, axis=0), x, np.repeat(x[-1:], half, axis=0)])
    csum = np.concatenate([np.zeros((1, x.shape[1]), np.int64), np.cumsum(padded, axis=0, dtype=np.int64)])
    votes = csum[window:] - csum[:-window]
    return votes > half


def run_bounds(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and inclusive ends of the runs of True in a 1-D bool array."""
    x = np.asarray(x, dtype=bool)
    edges = np.diff(np.concatenate([[False], x, [False]]).astype(np.int8))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1


def merge_gaps(x: np.ndarray, gap: int) -> np.ndarray:
    """Fill holes of at most `gap` False frames between two True runs (per column).

    Leading and trailing False frames are never holes.
    """
    out = np.asarray(x, dtype=bool).copy()
    if gap <= 0:
        return out
    for c in range(out.shape[1]):
        starts, ends = run_bounds(out[:, c])
        for prev_end, next_start in zip(ends[:-1], starts[1:]):
            if next_start - prev_end - 1 <= gap:
                out[prev_end + 1 : next_start, c] = True
    return out


def drop_short_runs(x: np.ndarray, min_len: int) -> np.ndarray:
    """Clear runs of True shorter than `min_len` frames (per column)."""
    out = np.asarray(x, dtype=bool).copy()
    for c in range(out.shape[1]):
        starts, ends = run_bounds(out[:, c])
        for s, e in zip(starts, ends):
            if e - s + 1 < min_len:
                out[s : e + 1, c] = False
    return out


def fill_missing_frames(
    frame_indices: np.ndarray, probs: np.ndarray, max_fill: int
) -> list[tuple[int, np.ndarray]]:
    """Apply the missing-frame policy; return contiguous segments as (first frame index, probs).

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
    """Events of one contiguous segment (frame `first_index + i` is row i), ordered by (start, label order)."""
    mask = binarise(probs, thresholds)
    mask = median_filter_binary(mask, config.window)
    mask = merge_gaps(mask, config.gap)
    mask = drop_short_runs(mask, config.min_len)
    csum = np.concatenate([np.zeros((1, probs.shape[1])), np.cumsum(probs, axis=0, dtype=np.float64)])
    events = []
    for c, label in enumerate(labels):
        for s, e in zip(*run_bounds(mask[:, c])):
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
    """The reference: all events of a whole video, given all its frames at once (SPEC §6).

    Returns events ordered by (start, label order); `MedianGapState` returns the same set.
    """
    events: list[Event] = []
    for first, seg_probs in fill_missing_frames(frame_indices, probs, config.max_fill):
        events.extend(segment_events(first, seg_probs, thresholds, config, labels))
    return events

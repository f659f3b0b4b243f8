"""Per-(video, label) AP for calibration searches: `average_precision`'s result, vectorised.

A search evaluates thousands of candidate decodings, and `metrics.temporal_map.average_precision` walks
the predictions one by one against every ground-truth segment. When one label's predicted segments are
disjoint and its ground-truth segments are disjoint (always the case for decoded runs and
tuple-segmented ground truth) and the threshold is >= 0.5, a prediction can reach the threshold only
with ground-truth segments it overlaps, and with at most one of them except for exact ties at 0.5.
So the candidate pairs are found by binary search, and greedy first-fit matching is run on those pairs
only. Anything else (overlapping segments, thresholds below 0.5) uses the exact reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from vce_stream.labels import LABELS
from vce_stream.metrics.temporal_map import (
    THRESHOLDS,
    MapResult,
    average_precision,
    evaluate,
    segments_by_label,
)

Segments = tuple[np.ndarray, np.ndarray]  # starts, inclusive ends (frame indices)


@dataclass(frozen=True)
class TruthSegments:
    """One label's ground-truth segments in one video, in file order."""

    starts: np.ndarray
    ends: np.ndarray

    @property
    def count(self) -> int:
        return int(self.starts.size)

    @cached_property
    def time_order(self) -> np.ndarray | None:
        """Permutation to time order if the segments are disjoint, else None (then only the exact path)."""
        order = np.argsort(self.starts, kind="stable")
        return order if bool(np.all(self.starts[order][1:] > self.ends[order][:-1])) else None


def truth_by_label(events: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> list[TruthSegments]:
    """Each label's ground-truth segments of one parsed video (`parse_submission` events)."""
    by_label = segments_by_label(events, labels)
    out = []
    for label in labels:
        segs = by_label[label]
        out.append(TruthSegments(np.array([s for s, _ in segs], np.int64), np.array([e for _, e in segs], np.int64)))
    return out


def fast_average_precision(pred: Segments, truth: TruthSegments, threshold: float) -> float:
    """AP of predictions `pred` (rank order) against `truth`: `average_precision`, up to float rounding."""
    p_start, p_end = (np.asarray(a, dtype=np.int64) for a in pred)
    order = np.argsort(p_start, kind="stable")
    return ranked_average_precisions(p_start[order], p_end[order], order, truth, (threshold,))[0]


def ranked_average_precisions(
    starts: np.ndarray, ends: np.ndarray, rank: np.ndarray, truth: TruthSegments, thresholds: Sequence[float]
) -> list[float]:
    """AP at each threshold of predictions given in time order (`starts`, `ends`) with `rank[i]` the
    0-based position of prediction i in the file (the ranking)."""
    if truth.count == 0:
        return [1.0 if starts.size == 0 else 0.0 for _ in thresholds]
    if starts.size == 0:
        return [0.0 for _ in thresholds]
    truth_order = truth.time_order
    if truth_order is None or not bool(np.all(starts[1:] > ends[:-1])) or min(thresholds) < 0.5:
        return [_exact(starts, ends, rank, truth, t) for t in thresholds]
    g_start, g_end = truth.starts[truth_order], truth.ends[truth_order]
    lo = np.searchsorted(g_end, starts, side="left")  # first truth ending at or after the start
    hi = np.searchsorted(g_start, ends, side="right")  # truths starting at or before the end
    counts = np.maximum(hi - lo, 0)
    pred_of_pair = np.repeat(np.arange(starts.size), counts)
    offsets = np.arange(pred_of_pair.size) - np.repeat(np.cumsum(counts) - counts, counts)
    truth_of_pair = np.repeat(lo, counts) + offsets
    ps, pe = starts[pred_of_pair], ends[pred_of_pair]
    gs, ge = g_start[truth_of_pair], g_end[truth_of_pair]
    inter = np.maximum(0, np.minimum(pe, ge) - np.maximum(ps, gs) + 1)
    iou = inter / ((pe - ps + 1) + (ge - gs + 1) - inter)
    out = []
    for threshold in thresholds:
        hit = iou >= threshold
        hits_per_pred = np.bincount(pred_of_pair[hit], minlength=starts.size)
        hits_per_truth = np.bincount(truth_of_pair[hit], minlength=truth.count)
        if hits_per_pred.max(initial=0) > 1 or hits_per_truth.max(initial=0) > 1:
            matched = _greedy_matches(pred_of_pair[hit], truth_order[truth_of_pair[hit]], rank)
        else:
            matched = hits_per_pred > 0
        ranks = np.sort(rank[matched]) + 1
        out.append(float(np.sum(np.arange(1, ranks.size + 1) / ranks) / truth.count))
    return out


def _greedy_matches(pred: np.ndarray, truth_file_index: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """The scorer's greedy first-fit matching restricted to the candidate pairs (ties at tIoU 0.5):
    predictions in rank order each take the first unmatched ground truth in file order."""
    order = np.lexsort((truth_file_index, rank[pred]))
    matched = np.zeros(rank.size, dtype=bool)
    taken: set[int] = set()
    for p, g in zip(pred[order].tolist(), truth_file_index[order].tolist()):
        if not matched[p] and g not in taken:
            matched[p] = True
            taken.add(g)
    return matched


def _exact(starts: np.ndarray, ends: np.ndarray, rank: np.ndarray, truth: TruthSegments, threshold: float) -> float:
    file_order = np.argsort(rank)
    predicted = list(zip(starts[file_order].tolist(), ends[file_order].tolist()))
    segments = list(zip(truth.starts.tolist(), truth.ends.tolist()))
    return average_precision(predicted, segments, threshold)


def fast_video_average_precisions(
    pred_events: Sequence[Mapping[str, Any]],
    gt_events: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    thresholds: Sequence[float],
) -> dict[float, dict[str, float]]:
    """`metrics.temporal_map.video_average_precisions` with the AP above."""
    truth = truth_by_label(gt_events, labels)
    predicted = segments_by_label(pred_events, labels)
    ap: dict[float, dict[str, float]] = {t: {} for t in thresholds}
    for c, label in enumerate(labels):
        starts = np.array([s for s, _ in predicted[label]], np.int64)
        ends = np.array([e for _, e in predicted[label]], np.int64)
        order = np.argsort(starts, kind="stable")
        for t, value in zip(thresholds, ranked_average_precisions(starts[order], ends[order], order, truth[c], thresholds)):
            ap[t][label] = value
    return ap


def fast_evaluate(
    pred: Mapping[str, Sequence[Mapping[str, Any]]],
    gt: Mapping[str, Sequence[Mapping[str, Any]]],
    labels: Sequence[str] = LABELS,
    thresholds: Sequence[float] = THRESHOLDS,
) -> MapResult:
    """`metrics.temporal_map.evaluate` with the AP above: same checks, same means, same result."""
    return evaluate(pred, gt, labels, thresholds, video_ap=fast_video_average_precisions)

"""Temporal mAP, exactly as the RARE-VISION scorer computes it (SPEC §3).

Small pure functions: `tiou` on inclusive intervals, `average_precision` for one (video, label) with greedy
first-fit matching in file order, and `evaluate` for whole submissions. Inputs are the parsed submissions
of `vce_stream.events.jsonio.parse_submission` (video id -> events with start, end, label list).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vce_stream.errors import SubmissionError
from vce_stream.labels import LABELS

Segment = tuple[int, int]
THRESHOLDS: tuple[float, ...] = (0.5, 0.95)


def tiou(a: Segment, b: Segment) -> float:
    """Temporal IoU of two inclusive frame intervals."""
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]) + 1)
    union = (a[1] - a[0] + 1) + (b[1] - b[0] + 1) - inter
    return inter / union


def average_precision(predicted: Sequence[Segment], truth: Sequence[Segment], threshold: float) -> float:
    """AP of one label in one video; `predicted` in file order (the ranking), matched greedily first-fit.

    No ground truth: 1.0 if nothing is predicted, else 0.0. Otherwise the sum over predictions of
    precision@i x (recall@i - recall@i-1), not interpolated.
    """
    if not truth:
        return 1.0 if not predicted else 0.0
    # Vectorised over the ground truth; the same arithmetic as `tiou`, so the same matches.
    gt_start = np.array([s for s, _ in truth], dtype=np.int64)
    gt_end = np.array([e for _, e in truth], dtype=np.int64)
    gt_len = gt_end - gt_start + 1
    unmatched = np.ones(len(truth), dtype=bool)
    true_positives = 0
    ap = 0.0
    for i, (start, end) in enumerate(predicted, start=1):
        inter = np.maximum(0, np.minimum(end, gt_end) - np.maximum(start, gt_start) + 1)
        hits = unmatched & (inter / ((end - start + 1) + gt_len - inter) >= threshold)
        if hits.any():
            unmatched[int(np.argmax(hits))] = False
            true_positives += 1
            ap += (true_positives / i) * (1.0 / len(truth))
    return ap


def segments_by_label(events: Sequence[Mapping[str, Any]], labels: Sequence[str] = LABELS) -> dict[str, list[Segment]]:
    """Each label's segments in file order (an event with several labels gives one to each)."""
    out: dict[str, list[Segment]] = {label: [] for label in labels}
    for event in events:
        for name in event["label"]:
            out[name].append((int(event["start"]), int(event["end"])))
    return out


@dataclass(frozen=True)
class VideoScore:
    video_id: str
    ap: dict[float, dict[str, float]]  # threshold -> label -> AP

    def mean(self, threshold: float) -> float:
        values = self.ap[threshold]
        return sum(values.values()) / len(values)


@dataclass(frozen=True)
class MapResult:
    """Overall and per-video temporal mAP at each threshold."""

    videos: list[VideoScore]
    thresholds: tuple[float, ...] = THRESHOLDS
    skipped_videos: list[str] = field(default_factory=list)  # ground-truth videos with no events

    def overall(self, threshold: float) -> float:
        if not self.videos:
            return 0.0
        return sum(v.mean(threshold) for v in self.videos) / len(self.videos)

    @property
    def map50(self) -> float:
        return self.overall(0.5)

    @property
    def map95(self) -> float:
        return self.overall(0.95)

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall": {f"mAP@{t}": self.overall(t) for t in self.thresholds},
            "videos": [
                {"video_id": v.video_id, **{f"mAP@{t}": v.mean(t) for t in self.thresholds}, "ap": {str(t): v.ap[t] for t in self.thresholds}}
                for v in self.videos
            ],
            "skipped_videos": self.skipped_videos,
        }


def check_same_videos(pred: Mapping[str, Any], gt: Mapping[str, Any]) -> None:
    """The scorer's first sanity check: the video id sets are equal."""
    missing = sorted(set(gt) - set(pred))
    extra = sorted(set(pred) - set(gt))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} video(s) {missing[:5]}")
        if extra:
            parts.append(f"{len(extra)} extra video(s) {extra[:5]}")
        raise SubmissionError("prediction and ground truth have different videos: " + "; ".join(parts))


VideoAP = Callable[[Sequence[Mapping[str, Any]], Sequence[Mapping[str, Any]], Sequence[str], Sequence[float]], dict[float, dict[str, float]]]


def video_average_precisions(
    pred_events: Sequence[Mapping[str, Any]],
    gt_events: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    thresholds: Sequence[float],
) -> dict[float, dict[str, float]]:
    """AP of every label of one video at every threshold: threshold -> label -> AP."""
    truth = segments_by_label(gt_events, labels)
    predicted = segments_by_label(pred_events, labels)
    return {t: {label: average_precision(predicted[label], truth[label], t) for label in labels} for t in thresholds}


def evaluate(
    pred: Mapping[str, Sequence[Mapping[str, Any]]],
    gt: Mapping[str, Sequence[Mapping[str, Any]]],
    labels: Sequence[str] = LABELS,
    thresholds: Sequence[float] = THRESHOLDS,
    video_ap: VideoAP = video_average_precisions,
) -> MapResult:
    """Temporal mAP of parsed submissions (SPEC §3); raises SubmissionError on a failed sanity check.

    `video_ap` computes one video's APs; a faster implementation with the same results may be given.
    """
    check_same_videos(pred, gt)
    scores, skipped = [], []
    for video_id, gt_events in gt.items():
        if not gt_events:
            skipped.append(video_id)
            continue
        scores.append(VideoScore(video_id, video_ap(pred[video_id], gt_events, labels, thresholds)))
    return MapResult(scores, tuple(thresholds), skipped)

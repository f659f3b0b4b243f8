"""Validation: frame metrics, per-class thresholds, temporal mAP and the per-video presence rule.

Frame metrics are small pure numpy functions on (N,) scores and 0/1 targets: `average_precision`
(non-interpolated, ties as one step, as scikit-learn), `roc_auc` (Mann-Whitney with average ranks), and
precision/recall/F1 at a threshold. The threshold rule, the evaluation loop and the presence search are
the runtime's tuning module (`vce_stream.postprocess.tuning`, shared with `calibrate`): temporal mAP runs
the validation videos through the runtime's own event decision (`video_events`), its JSON writer and the
scorer's evaluator, against ground truth built from every frame of the label CSVs, and the presence rule
is the runtime's gating, so what is tuned here is exactly what `vce-stream run` applies from the bundle.
This module adds what only training has: predictions on sampled frames held to full rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy.stats import rankdata

from vce_stream.events.jsonio import parse_submission, submission_dict
from vce_stream.metrics.temporal_map import MapResult
from vce_stream.postprocess import tuning
from vce_stream.postprocess.config import PostprocessConfig
from vce_stream.scores import VideoScores

from train.config import ThresholdSearchConfig, TrainConfig
from train.data import VideoFrames, ground_truth_events


# -- frame metrics -------------------------------------------------------------------------------------


def average_precision(targets: np.ndarray, scores: np.ndarray) -> float:
    """Sum over distinct score thresholds of (R_n - R_n-1) P_n; NaN without positives."""
    y = np.asarray(targets, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    positives = int(y.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tp = np.cumsum(y)[last_of_tie]
    precision = tp / (last_of_tie + 1)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(targets: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U / (P N), ties counted half); NaN without both classes."""
    y = np.asarray(targets, dtype=bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[y].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def precision_recall_f1(targets: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """At p >= threshold; each is 0 where its denominator is 0."""
    y = np.asarray(targets, dtype=bool)
    predicted = np.asarray(scores, dtype=np.float64) >= threshold
    tp = int((y & predicted).sum())
    fp = int((~y & predicted).sum())
    fn = int((y & ~predicted).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return precision, recall, f1


def search_thresholds(targets: np.ndarray, scores: np.ndarray, cfg: ThresholdSearchConfig) -> np.ndarray:
    """Per class, the threshold of `cfg`'s grid with the highest F1 (the lowest such one); `cfg.default`
    without positives (the shared rule: `tuning.f1_thresholds`)."""
    return tuning.f1_thresholds(targets, scores, cfg.grid(), cfg.default)


@dataclass(frozen=True)
class ClassMetrics:
    label: str
    ap: float
    auc: float
    f1: float
    precision: float
    recall: float
    support: int
    threshold: float


def frame_metrics(targets: np.ndarray, scores: np.ndarray, thresholds: Sequence[float], labels: Sequence[str]) -> list[ClassMetrics]:
    """Per-class AP, AUC, and precision/recall/F1 at `thresholds`, with support (positive frames)."""
    out = []
    for c, label in enumerate(labels):
        y, s = targets[:, c], scores[:, c]
        precision, recall, f1 = precision_recall_f1(y, s, thresholds[c])
        out.append(ClassMetrics(label, average_precision(y, s), roc_auc(y, s), f1, precision, recall, int(y.sum()), float(thresholds[c])))
    return out


def macro(values: Sequence[ClassMetrics], name: str) -> float:
    """Mean of one metric over classes with validation positives (NaN-free); NaN if none has any."""
    picked = [getattr(m, name) for m in values if m.support > 0 and np.isfinite(getattr(m, name))]
    return float(np.mean(picked)) if picked else float("nan")


# -- temporal mAP --------------------------------------------------------------------------------------


def hold_to_full_rate(sampled_index: np.ndarray, probs: np.ndarray, full_index: np.ndarray) -> np.ndarray:
    """Probabilities at every frame of `full_index`: each sampled prediction holds until the next one."""
    position = np.searchsorted(sampled_index, full_index, side="right") - 1
    return probs[np.clip(position, 0, len(sampled_index) - 1)]


def ground_truth_submission(videos: Mapping[str, VideoFrames], labels: Sequence[str]) -> dict[str, list[dict]]:
    """The parsed ground truth of `videos` (tuple segmentation, as the official file is built)."""
    events = {vid: ground_truth_events(video, labels) for vid, video in videos.items()}
    ranges = {vid: (int(v.index[0]), int(v.index[-1])) for vid, v in videos.items()}
    data = submission_dict(events, segmentation="tuple", order="time", frame_ranges=ranges, labels=labels, with_scores=False)
    return parse_submission(data, "validation ground truth", labels)


def full_rate(predictions: Mapping[str, VideoScores], videos: Mapping[str, VideoFrames]) -> dict[str, VideoScores]:
    """Each video's predictions on every frame of its CSV (held from the sampled frames)."""
    return {vid: (videos[vid].index, hold_to_full_rate(s, p, videos[vid].index)) for vid, (s, p) in predictions.items()}


def temporal_map(
    predictions: Mapping[str, VideoScores],
    videos: Mapping[str, VideoFrames],
    labels: Sequence[str],
    post: PostprocessConfig,
    gt: Mapping[str, list[dict]] | None = None,
) -> MapResult:
    """Temporal mAP@0.5/0.95 of the validation videos under the post-processing `post`."""
    gt = gt if gt is not None else ground_truth_submission({v: videos[v] for v in predictions}, labels)
    return tuning.score_videos(full_rate(predictions, videos), gt, labels, post, where="validation prediction")


def epoch_metrics(
    predictions: dict[str, tuple[np.ndarray, np.ndarray]],
    val_sampled: dict[str, VideoFrames],
    val_full: dict[str, VideoFrames],
    gt: dict[str, list[dict]],
    config: TrainConfig,
) -> dict[str, Any]:
    """Frame metrics at F1-searched thresholds and the temporal mAP with those thresholds."""
    labels = config.labels
    targets = np.concatenate([val_sampled[v].targets for v in predictions])
    scores = np.concatenate([p for _, p in predictions.values()])
    thresholds = search_thresholds(targets, scores, config.thresholds)
    per_class = frame_metrics(targets, scores, thresholds, labels)
    post = with_thresholds(config.postprocess, thresholds)
    temporal = temporal_map(predictions, val_full, labels, post, gt=gt)
    return {
        "macro_ap": macro(per_class, "ap"),
        "macro_auc": macro(per_class, "auc"),
        "macro_f1": macro(per_class, "f1"),
        "temporal_map50": temporal.map50,
        "temporal_map95": temporal.map95,
        "thresholds": [float(t) for t in thresholds],
        "per_class": [vars(m) for m in per_class],
    }


# -- the per-video presence rule -----------------------------------------------------------------------


def search_presence(
    predictions: Mapping[str, VideoScores],
    videos: Mapping[str, VideoFrames],
    labels: Sequence[str],
    post: PostprocessConfig,
    rounds: int = 2,
) -> tuning.PresenceResult:
    """Presence gates searched on the validation videos' temporal mAP@0.5 (`tuning.search_presence`),
    their predictions held to full rate against ground truth from every frame of the label CSVs."""
    gt = ground_truth_submission({v: videos[v] for v in predictions}, labels)
    return tuning.search_presence(full_rate(predictions, videos), gt, labels, post, rounds)


def with_thresholds(post: PostprocessConfig, thresholds: Sequence[float]) -> PostprocessConfig:
    return replace(post, thresholds=tuple(float(t) for t in thresholds))

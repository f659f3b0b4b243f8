"""Validation: frame metrics, per-class thresholds, temporal mAP and the per-video presence rule.

Frame metrics are small pure numpy functions on (N,) scores and 0/1 targets: `average_precision`
(non-interpolated, ties as one step, as scikit-learn), `roc_auc` (Mann-Whitney with average ranks), and
precision/recall/F1 at a threshold. Temporal mAP runs the validation videos through the runtime's own
event decision (`vce_stream.postprocess.video.video_events`: the streaming filter, or the decoding
when configured), its JSON writer and the scorer's evaluator, against ground truth built from every
frame of the label CSVs. The presence rule is the runtime's gating (`vce_stream.postprocess.gating`), so
what is tuned here is exactly what `vce-stream run` applies from the bundle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.stats import rankdata

from vce_stream.postprocess.config import PostprocessConfig
from vce_stream.postprocess.config import DecodingConfig
from vce_stream.postprocess.decode import decide_runs
from vce_stream.postprocess.runs import densify, length_weighted
from vce_stream.events.jsonio import parse_submission, submission_dict
from vce_stream.metrics.temporal_map import MapResult, evaluate
from vce_stream.scores import VideoScores
from vce_stream.postprocess.video import video_events

from train.config import ThresholdSearchConfig
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


def threshold_grid(cfg: ThresholdSearchConfig) -> np.ndarray:
    count = int(np.floor((cfg.high - cfg.low) / cfg.step + 1e-9)) + 1
    return np.round(cfg.low + cfg.step * np.arange(count), 10)


def f1_curve(targets: np.ndarray, scores: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """F1 at p >= t for every t of `grid` (vectorised with one sort)."""
    y = np.asarray(targets, dtype=bool)
    order = np.argsort(scores, kind="mergesort")
    ascending = np.asarray(scores, dtype=np.float64)[order]
    positives_below = np.r_[0, np.cumsum(y[order])]
    first_at_or_above = np.searchsorted(ascending, grid, side="left")
    predicted = y.size - first_at_or_above
    tp = positives_below[-1] - positives_below[first_at_or_above]
    fp = predicted - tp
    fn = positives_below[-1] - tp
    denominator = 2 * tp + fp + fn
    return np.divide(2.0 * tp, denominator, out=np.zeros(grid.size), where=denominator > 0)


def search_thresholds(targets: np.ndarray, scores: np.ndarray, cfg: ThresholdSearchConfig) -> np.ndarray:
    """Per class, the grid threshold of highest F1 (the lowest such one); `cfg.default` without positives."""
    grid = threshold_grid(cfg)
    out = np.full(targets.shape[1], cfg.default, dtype=np.float64)
    for c in range(targets.shape[1]):
        if targets[:, c].any():
            out[c] = grid[int(np.argmax(f1_curve(targets[:, c], scores[:, c], grid)))]
    return out


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


def score_full_rate(
    dense: Mapping[str, VideoScores],
    gt: Mapping[str, list[dict]],
    labels: Sequence[str],
    post: PostprocessConfig,
) -> MapResult:
    """Temporal mAP of full-rate probabilities decided by the runtime's `video_events` and written as
    the runtime writes them (segmentation, order)."""
    events = {vid: video_events(frames, probs, labels, post) for vid, (frames, probs) in dense.items()}
    ranges = {vid: (int(frames[0]), int(frames[-1])) for vid, (frames, _) in dense.items()}
    data = submission_dict(events, segmentation=post.segmentation, order=post.order, frame_ranges=ranges, labels=labels)
    return evaluate(parse_submission(data, "validation prediction", labels), gt, labels)


def temporal_map(
    predictions: Mapping[str, VideoScores],
    videos: Mapping[str, VideoFrames],
    labels: Sequence[str],
    post: PostprocessConfig,
    gt: Mapping[str, list[dict]] | None = None,
) -> MapResult:
    """Temporal mAP@0.5/0.95 of the validation videos under the post-processing `post`."""
    gt = gt if gt is not None else ground_truth_submission({v: videos[v] for v in predictions}, labels)
    return score_full_rate(full_rate(predictions, videos), gt, labels, post)


# -- the per-video presence rule -----------------------------------------------------------------------


def gated_config(post: PostprocessConfig, gates: float | tuple[float, ...] = 0.0) -> PostprocessConfig:
    """`post` with the runtime's presence gates on (vce_stream.postprocess.gating).

    If `post` already decodes, only its gating changes. Otherwise decoding is switched on with gating
    alone (no anatomy or landmark stages), which the runtime requires to be written per label.
    """
    decoding = post.decoding
    gating = replace(decoding.gating, enabled=True, gates=gates)
    if decoding.enabled:
        return replace(post, decoding=replace(decoding, gating=gating))
    return replace(post, segmentation="label", decoding=DecodingConfig(enabled=True, gating=gating))


def best_run_evidence(frames: np.ndarray, probs: np.ndarray, labels: Sequence[str], post: PostprocessConfig) -> dict[str, float]:
    """Per label, the evidence of its most convincing run in one video (what a gate is compared with)."""
    ungated = replace(post, decoding=replace(post.decoding, gating=replace(post.decoding.gating, enabled=False)))
    video = densify(frames, probs, post.temporal.max_fill)
    if video.rows == 0:
        return {}
    decision = decide_runs(video, labels, ungated)
    power = post.decoding.gating.evidence_power
    out = {}
    for c, runs in enumerate(decision.runs):
        if runs[0].size:
            out[labels[c]] = float(length_weighted(video.run_means(c, runs), runs, power).max())
    return out


@dataclass(frozen=True)
class PresenceResult:
    """The searched presence gates, the post-processing to ship, and the mAP@0.5 with and without."""

    post: PostprocessConfig
    gates: dict[str, float]
    map50_without: float
    map50_with: float

    @property
    def improves(self) -> bool:
        return self.map50_with > self.map50_without


def video_map50(
    video_id: str, dense: VideoScores, gt: Mapping[str, list[dict]], labels: Sequence[str], post: PostprocessConfig
) -> float | None:
    """One video's temporal mAP@0.5 under `post` (None if its ground truth has no event: left out)."""
    frames, probs = dense
    events = video_events(frames, probs, labels, post)
    data = submission_dict({video_id: events}, segmentation=post.segmentation, order=post.order,
                           frame_ranges={video_id: (int(frames[0]), int(frames[-1]))}, labels=labels)
    result = evaluate(parse_submission(data, "validation prediction", labels), {video_id: gt[video_id]}, labels)
    return result.videos[0].mean(0.5) if result.videos else None


def mean_score(per_video: Mapping[str, float | None]) -> float:
    """The scorer's overall mean: videos without ground-truth events are left out."""
    values = [v for v in per_video.values() if v is not None]
    return sum(values) / len(values) if values else 0.0


def search_presence(
    predictions: Mapping[str, VideoScores],
    videos: Mapping[str, VideoFrames],
    labels: Sequence[str],
    post: PostprocessConfig,
    rounds: int = 2,
) -> PresenceResult:
    """Coordinate ascent on validation temporal mAP@0.5 over one presence gate per label.

    Candidates for a label are 0 (always present) and its best-run evidence in each validation video,
    so each candidate is a distinct set of per-video decisions. Cutting at tuple boundaries couples the
    labels within a video, hence whole-video scoring and a few rounds rather than one independent pass;
    videos are independent, so a candidate re-scores only the videos whose decision it flips. The
    result keeps `post` unless the gates raise the score above `post`'s own.
    """
    gt = ground_truth_submission({v: videos[v] for v in predictions}, labels)
    dense = full_rate(predictions, videos)
    base = mean_score({vid: video_map50(vid, d, gt, labels, post) for vid, d in dense.items()})
    gates = [0.0] * len(labels)
    start = gated_config(post)
    evidence = {vid: best_run_evidence(frames, probs, labels, start) for vid, (frames, probs) in dense.items()}
    current = {vid: video_map50(vid, d, gt, labels, start) for vid, d in dense.items()}
    best = mean_score(current)
    for _ in range(rounds):
        changed = False
        for c, label in enumerate(labels):
            for q in sorted({0.0, *(e[label] for e in evidence.values() if label in e)}):
                flipped = [vid for vid, e in evidence.items() if label in e and (e[label] >= gates[c]) != (e[label] >= q)]
                if not flipped:
                    continue
                trial = [*gates[:c], q, *gates[c + 1 :]]
                trial_post = gated_config(post, tuple(trial))
                scores = {**current, **{vid: video_map50(vid, dense[vid], gt, labels, trial_post) for vid in flipped}}
                value = mean_score(scores)
                if value > best + 1e-12:
                    best, gates, current, changed = value, trial, scores, True
        if not changed:
            break
    if best <= base:
        return PresenceResult(post, {}, base, base)
    chosen = {label: q for label, q in zip(labels, gates) if q > 0.0}
    return PresenceResult(gated_config(post, tuple(gates)), chosen, base, best)


def with_thresholds(post: PostprocessConfig, thresholds: Sequence[float]) -> PostprocessConfig:
    return replace(post, thresholds=tuple(float(t) for t in thresholds))

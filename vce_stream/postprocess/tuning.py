"""Tuning post-processing on validation scores: the pieces `calibrate` and training share.

- The threshold rule (the paper's): per class, the threshold on a grid that maximises frame-level F1
  (`f1_thresholds`); callers choose the grid (`threshold_grid`), so each keeps its own range.
- Presence gates (SPEC §3: presence decisions dominate temporal mAP). A label is kept in a video when
  its most convincing run's evidence reaches the gate, so a gate only decides, per video, between
  "kept" and "dropped". Two objectives use that fact:
  `best_gate` sweeps one label's gate when the objective is a sum over videos of that label's own AP
  (`calibrate`'s coordinate ascent, gates placed midway between evidence values);
  `search_presence` ascends all labels' gates on whole-video mAP@0.5, where the tuple cuts couple the
  labels of a video (training; gates placed at evidence values, re-scoring only the videos a candidate
  flips).
- The evaluation loop: events of whole videos (`decide_events`, the runtime's `video_events`) ->
  the submission as the runtime writes it -> the scorer's evaluator (`score_events`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from vce_stream.events.event import Event
from vce_stream.events.jsonio import parse_submission, submission_dict
from vce_stream.metrics.temporal_map import MapResult, evaluate
from vce_stream.postprocess.config import DecodingConfig, PostprocessConfig
from vce_stream.postprocess.decode import decide_runs
from vce_stream.postprocess.runs import densify, length_weighted
from vce_stream.postprocess.video import video_events
from vce_stream.scores import VideoScores

Evaluator = Callable[..., MapResult]  # metrics.temporal_map.evaluate or fastmap.fast_evaluate


# -- the F1 threshold rule -----------------------------------------------------------------------------


def threshold_grid(low: float, high: float, step: float) -> np.ndarray:
    """low, low + step, ... up to high (inclusive), rounded to 10 decimals so 0.05 + k * 0.01 is k/100 + 0.05."""
    count = int(np.floor((high - low) / step + 1e-9)) + 1
    return np.round(low + step * np.arange(count), 10)


def f1_curve(targets: np.ndarray, scores: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """F1 at p >= t for every t of `grid` (vectorised with one sort); 0 where nothing is predicted or true."""
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


def f1_thresholds(targets: np.ndarray, scores: np.ndarray, grid: np.ndarray, default: float | None = None) -> np.ndarray:
    """Per class (column), the lowest threshold of `grid` with the highest frame-level F1.

    targets: (frames, classes) 0/1; scores: (frames, classes) probabilities. A class without positive
    frames has F1 0 everywhere: it gets `default`, or the lowest grid value when `default` is None.
    """
    grid = np.asarray(grid, dtype=np.float64)
    out = np.full(targets.shape[1], grid[0] if default is None else default, dtype=np.float64)
    for c in range(targets.shape[1]):
        if np.any(targets[:, c]):
            out[c] = grid[int(np.argmax(f1_curve(targets[:, c], scores[:, c], grid)))]
    return out


# -- the evaluation loop -------------------------------------------------------------------------------


def decide_events(scores: Mapping[str, VideoScores], labels: Sequence[str], post: PostprocessConfig) -> dict[str, list[Event]]:
    """Each whole video's final-file events under `post` (`video_events`: what `run` and `postprocess` write)."""
    return {vid: video_events(frames, probs, labels, post) for vid, (frames, probs) in scores.items()}


def score_events(
    events: Mapping[str, Sequence[Event]],
    scores: Mapping[str, VideoScores],
    gt: Mapping[str, Sequence[Mapping[str, Any]]],
    labels: Sequence[str],
    post: PostprocessConfig,
    evaluator: Evaluator = evaluate,
    where: str = "submission",
) -> MapResult:
    """The scorer's temporal mAP of `events` written as `post` writes them (segmentation, order).

    scores: gives each video's frame range (a video without frames has none); gt: the parsed ground
    truth of exactly the videos of `events`, in the order the result lists them; evaluator:
    `metrics.temporal_map.evaluate` or the equal, faster `fastmap.fast_evaluate`.
    """
    ranges = {vid: (int(scores[vid][0][0]), int(scores[vid][0][-1])) for vid in events if len(scores[vid][0])}
    submission = submission_dict(events, segmentation=post.segmentation, order=post.order, frame_ranges=ranges, labels=labels)
    return evaluator(parse_submission(submission, where, labels), gt, labels)


def score_videos(
    scores: Mapping[str, VideoScores],
    gt: Mapping[str, Sequence[Mapping[str, Any]]],
    labels: Sequence[str],
    post: PostprocessConfig,
    evaluator: Evaluator = evaluate,
    where: str = "submission",
) -> MapResult:
    """`score_events` of `decide_events`: the temporal mAP of `scores` under `post`."""
    return score_events(decide_events(scores, labels, post), scores, gt, labels, post, evaluator, where)


# -- presence gates: one label's sweep ------------------------------------------------------------------


def best_gate(kept: np.ndarray, dropped: np.ndarray, evidence: np.ndarray) -> tuple[float, float]:
    """The presence gate maximising sum(kept where evidence >= gate, dropped elsewhere): (gate, total).

    Per video: `kept` / `dropped` is the objective with the label kept / dropped, `evidence` its best
    run's evidence (-inf without runs). Gates are placed midway between consecutive evidence values; 0
    keeps every video, a gate above all evidence drops the label everywhere.
    """
    order = np.argsort(evidence, kind="stable")
    m, a, d = evidence[order], kept[order], dropped[order]
    # Drop the first i videos (lowest evidence), keep the rest: i = 0 .. V.
    totals = np.concatenate([[0.0], np.cumsum(d)]) + np.concatenate([np.cumsum(a[::-1])[::-1], [0.0]])
    finite = np.isfinite(m)
    # Splitting inside a run of equal evidence is not realisable; nor is keeping a video without runs.
    valid = np.ones(totals.size, dtype=bool)
    valid[1:-1] = m[1:] > m[:-1]
    totals = np.where(valid, totals, -np.inf)
    i = int(np.argmax(totals))
    if i == 0 or not finite[:i].any():
        return 0.0, float(totals[i])
    if i == m.size:
        return float(m[-1]) * 2.0 + 1.0, float(totals[i])
    low = float(m[i - 1])
    return (low + float(m[i])) / 2.0, float(totals[i])


# -- presence gates: all labels on whole-video mAP@0.5 ------------------------------------------------


def gated_config(post: PostprocessConfig, gates: float | tuple[float, ...] = 0.0) -> PostprocessConfig:
    """`post` with the runtime's presence gates on (`postprocess.gating`).

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
    power = post.decoding.gating.evidence_power
    out = {}
    for c, runs in enumerate(decide_runs(video, labels, ungated)):
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
    result = score_videos({video_id: dense}, {video_id: gt[video_id]}, labels, post, where="validation prediction")
    return result.videos[0].mean(0.5) if result.videos else None


def mean_score(per_video: Mapping[str, float | None]) -> float:
    """The scorer's overall mean: videos without ground-truth events are left out."""
    values = [v for v in per_video.values() if v is not None]
    return sum(values) / len(values) if values else 0.0


def search_presence(
    dense: Mapping[str, VideoScores], gt: Mapping[str, list[dict]], labels: Sequence[str], post: PostprocessConfig, rounds: int = 2
) -> PresenceResult:
    """Coordinate ascent on temporal mAP@0.5 of the videos `dense` over one presence gate per label.

    Candidates for a label are 0 (always present) and its best-run evidence in each video, so each
    candidate is a distinct set of per-video decisions. Cutting at tuple boundaries couples the labels
    within a video, hence whole-video scoring and a few rounds rather than one independent pass; videos
    are independent, so a candidate re-scores only the videos whose decision it flips. The result keeps
    `post` unless the gates raise the score above `post`'s own.
    """
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

"""Tune thresholds, gates and decoding options on validation scores to maximise temporal mAP.

The search is coordinate ascent over labels, exploiting the metric's structure (SPEC §3): a label's AP
in a video depends on that label's events and, through the tuple cuts, on where the other labels'
events begin and end. So, with the other labels fixed:
- for each frame threshold (and for landmarks each radius / event cap), decode the label in every
  training video and compute its AP (`fastmap`); a presence gate then only keeps or drops the label per
  video, so the best gate for each evidence power is one sweep over the videos' best evidence;
- the anatomy switch penalty is chosen on the five sections' summed AP;
- the ranking's length power is chosen last on the whole decoding.
`rounds` passes let each label see the others' final cuts. Figures are reported from cross-validation
over videos (`cross_validate`): each fold is decoded with settings tuned on the other folds only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vce_stream.errors import ConfigError, InputError
from vce_stream.events.event import Event
from vce_stream.events.jsonio import label_events_from_json, labels_at_frames
from vce_stream.metrics.temporal_map import MapResult
from vce_stream.postprocess import tuning
from vce_stream.postprocess.anatomy import section_runs
from vce_stream.postprocess.config import AnatomyConfig, DecodingConfig, GatingConfig, LandmarksConfig, PostprocessConfig, RankingConfig
from vce_stream.postprocess.decode import anatomy_columns, anatomy_path, landmark_runs
from vce_stream.postprocess.fastmap import TruthSegments, fast_evaluate, ranked_average_precisions, truth_by_label
from vce_stream.postprocess.gating import gate_runs
from vce_stream.postprocess.landmarks import LANDMARK_SECTIONS
from vce_stream.postprocess.ranking import change_points, cut_runs
from vce_stream.postprocess.runs import DenseVideo, Runs, densify, filter_runs, length_weighted
from vce_stream.postprocess.tuning import best_gate
from vce_stream.scores import VideoScores
from vce_stream.limits import MAX_COUNT, MAX_LOOKAHEAD, MAX_VIDEOS, check_maxima

METRICS = ("map50", "map95", "mean")
FEATURES = ("gating", "anatomy", "landmarks")
F1_GRID = tuning.threshold_grid(0.05, 0.99, 0.01)  # the paper searches from 0.05


@dataclass(frozen=True)
class SearchConfig:
    """What `calibrate` searches over, and how.

    metric: the objective: mAP@0.5, mAP@0.95 or their mean.
    features: decoding stages to enable and tune (a subset of gating, anatomy, landmarks); thresholds
        and the ranking are always tuned.
    folds: cross-validation folds over videos for the reported held-out figure (videos are shuffled
        with `seed`); rounds: coordinate-ascent passes over the labels.
    """

    metric: str = "mean"
    features: tuple[str, ...] = FEATURES
    folds: int = 5
    rounds: int = 2
    seed: int = 0
    thresholds: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
    switch_penalties: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0)
    radii: tuple[int, ...] = (50, 200, 1000, 5000)
    max_events: tuple[int, ...] = (1, 2, 4)
    evidence_powers: tuple[float, ...] = (0.0, 0.5, 1.0)
    length_powers: tuple[float, ...] = (0.0, 0.5, 1.0)

    def __post_init__(self) -> None:
        check_maxima(self, "", {"folds": MAX_VIDEOS, "rounds": 1_000, "radii": MAX_LOOKAHEAD, "max_events": MAX_COUNT})
        if self.metric not in METRICS:
            raise ConfigError(f"metric must be one of {METRICS}, got {self.metric!r}")
        unknown = sorted(set(self.features) - set(FEATURES))
        if unknown:
            raise ConfigError(f"unknown decoding feature(s) {unknown}; known: {list(FEATURES)}")
        if self.folds < 2:
            raise ConfigError(f"folds must be >= 2, got {self.folds}")
        if self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.rounds}")


@dataclass(frozen=True)
class PreparedVideo:
    """One validation video ready for searching: dense probabilities, per-label truth, truth on rows."""

    video_id: str
    video: DenseVideo
    truth: list[TruthSegments]
    truth_rows: np.ndarray  # (rows, labels) bool

    def absent(self, column: int) -> bool:
        return self.truth[column].count == 0


def prepare(
    scores: Mapping[str, VideoScores], gt: Mapping[str, Sequence[Mapping[str, Any]]], labels: Sequence[str], max_fill: int,
    where: str = "calibrate",
) -> list[PreparedVideo]:
    """Pair scores with ground truth; the video sets must be equal, as for the scorer."""
    missing = sorted(set(gt) - set(scores))
    extra = sorted(set(scores) - set(gt))
    if missing or extra:
        raise InputError(f"{where}: scores and ground truth have different videos (no scores for {missing[:5]}, no ground truth for {extra[:5]})")
    prepared = []
    for video_id, (frames, probs) in scores.items():
        if not gt[video_id]:
            continue  # the scorer leaves out videos without ground-truth events
        video = densify(frames, probs, max_fill)
        if video.rows == 0:
            raise InputError(f"{where}: video {video_id!r} has no frames in the scores")
        truth = truth_by_label(gt[video_id], labels)
        truth_rows = labels_at_frames(label_events_from_json(gt[video_id]), video.frames, labels)
        prepared.append(PreparedVideo(video_id, video, truth, truth_rows))
    if not prepared:
        raise InputError(f"{where}: no video with ground-truth events to calibrate on")
    return prepared


# --- the paper's thresholds ------------------------------------------------------------------------


def f1_thresholds(videos: Sequence[PreparedVideo], grid: np.ndarray = F1_GRID) -> tuple[float, ...]:
    """Per class, the threshold on `grid` that maximises frame-level F1 over the rows of `videos`
    (the paper's rule, `tuning.f1_thresholds`; a class without positive rows gets the lowest value)."""
    targets = np.concatenate([v.truth_rows for v in videos])
    scores = np.concatenate([v.video.probs for v in videos])
    return tuple(float(t) for t in tuning.f1_thresholds(targets, scores, grid))


# --- scoring pieces of the search ------------------------------------------------------------------


METRIC_THRESHOLDS: dict[str, tuple[float, ...]] = {"map50": (0.5,), "map95": (0.95,), "mean": (0.5, 0.95)}


def label_ap(v: PreparedVideo, column: int, runs: Runs, cuts: np.ndarray, length_power: float, metric: str) -> float:
    """AP (the `metric`'s, averaged over its thresholds) of one label in one video when its decided
    runs are `runs` and the other labels cut them at `cuts`."""
    pieces = cut_runs(runs, cuts)
    confidence = length_weighted(v.video.run_means(column, pieces), pieces, length_power)
    rank = np.empty(confidence.size, np.int64)
    rank[np.argsort(-confidence, kind="stable")] = np.arange(confidence.size)
    frames = v.video.frames
    values = ranked_average_precisions(frames[pieces[0]], frames[pieces[1]], rank, v.truth[column], METRIC_THRESHOLDS[metric])
    return float(np.mean(values))


@dataclass(frozen=True)
class GateChoice:
    gate: float
    power: float
    total: float  # summed AP over the videos


class Calibrator:
    """Coordinate-ascent search on a set of prepared videos (see the module docstring).

    Filtered runs are cached per (video, label, threshold) and anatomy paths per (video, penalty), so
    folds of a cross-validation share the work.
    """

    def __init__(self, videos: Sequence[PreparedVideo], labels: Sequence[str], base: PostprocessConfig, search: SearchConfig) -> None:
        self.videos = list(videos)
        self.labels = tuple(labels)
        self.base = base
        self.search = search
        self._runs: dict[tuple[int, int, float], Runs] = {}
        self._paths: dict[tuple[int, float], np.ndarray] = {}

    def with_search(self, search: SearchConfig) -> Calibrator:
        """A calibrator with other search settings that shares this one's caches (same videos, same base)."""
        other = Calibrator(self.videos, self.labels, self.base, search)
        other._runs, other._paths = self._runs, self._paths
        return other

    # -- caches ----------------------------------------------------------------------------------------

    def runs(self, v: int, column: int, threshold: float) -> Runs:
        key = (v, column, threshold)
        if key not in self._runs:
            self._runs[key] = filter_runs(self.videos[v].video, column, threshold, self.base.temporal)
        return self._runs[key]

    def path(self, v: int, penalty: float) -> np.ndarray:
        key = (v, penalty)
        if key not in self._paths:
            columns = anatomy_columns(self.labels)
            self._paths[key] = anatomy_path(self.videos[v].video, columns, penalty, self.base.decoding.anatomy.eps)
        return self._paths[key]

    # -- the search ----------------------------------------------------------------------------------

    def fit(self, subset: Sequence[int]) -> PostprocessConfig:
        """Tuned post-processing for the videos `subset` (indices into the prepared videos)."""
        subset = list(subset)
        search, labels = self.search, self.labels
        n = len(labels)
        features = set(search.features)
        anatomy_cols = anatomy_columns(labels) if "anatomy" in features else None
        landmark_cols = [c for c, name in enumerate(labels) if name in LANDMARK_SECTIONS] if "landmarks" in features else []
        thresholds = list(f1_thresholds([self.videos[v] for v in subset]))
        gates = [0.0] * n
        powers = [0.0] * n
        penalty = AnatomyConfig().switch_penalty
        radius, max_events = LandmarksConfig().radius, LandmarksConfig().max_events
        length_power = 0.0
        # Current decided runs per video and label.
        decided = {v: [self.runs(v, c, thresholds[c]) for c in range(n)] for v in subset}
        if anatomy_cols is not None:
            self._set_anatomy(decided, subset, anatomy_cols, penalty, gates, powers)

        for _ in range(search.rounds):
            if anatomy_cols is not None:
                penalty = self._search_anatomy(decided, subset, anatomy_cols, gates, powers, length_power)
            plain = [c for c in range(n) if (anatomy_cols is None or c not in anatomy_cols) and c not in landmark_cols]
            for c in plain:
                thresholds[c], gates[c], powers[c] = self._search_label(decided, subset, c, length_power, landmark=None)
            if landmark_cols:
                radius, max_events = self._search_landmarks(decided, subset, landmark_cols, thresholds, gates, powers, length_power, anatomy_cols is not None, penalty)
        length_power = self._search_length_power(decided, subset)
        decoding = DecodingConfig(
            enabled=True,
            gating=GatingConfig(enabled="gating" in features, gates=tuple(gates), evidence_power=tuple(powers)),
            anatomy=AnatomyConfig(enabled=anatomy_cols is not None, switch_penalty=penalty, lag=self.base.decoding.anatomy.lag, eps=self.base.decoding.anatomy.eps),
            landmarks=LandmarksConfig(enabled=bool(landmark_cols), max_events=max_events, radius=radius),
            ranking=RankingConfig(tuple_cuts=True, length_power=length_power),
        )
        return dataclasses.replace(self.base, thresholds=tuple(thresholds), segmentation="label", order="confidence", decoding=decoding)

    def _cuts_without(self, runs: list[Runs], column: int) -> np.ndarray:
        return change_points([r for c, r in enumerate(runs) if c != column])

    def _gate_search(self, kept: np.ndarray, dropped: np.ndarray, evidence_by_power: dict[float, np.ndarray]) -> GateChoice:
        if "gating" not in self.search.features:
            return GateChoice(0.0, 0.0, float(kept.sum()))
        best = GateChoice(0.0, 0.0, -np.inf)
        for power, evidence in evidence_by_power.items():
            gate, total = best_gate(kept, dropped, evidence)
            if total > best.total + 1e-12:
                best = GateChoice(gate, power, total)
        return best

    def _evaluate_candidate(
        self, cuts: dict[int, np.ndarray], subset: list[int], column: int, candidate: dict[int, Runs], length_power: float
    ) -> tuple[np.ndarray, np.ndarray, dict[float, np.ndarray]]:
        """Per video: AP if kept, AP if dropped, best run evidence per power (other labels cut at `cuts`)."""
        kept, dropped = np.zeros(len(subset)), np.zeros(len(subset))
        evidence = {p: np.full(len(subset), -np.inf) for p in self.search.evidence_powers}
        for i, v in enumerate(subset):
            video = self.videos[v]
            runs = candidate[v]
            dropped[i] = 1.0 if video.absent(column) else 0.0
            if runs[0].size == 0:
                kept[i] = dropped[i]
                continue
            kept[i] = label_ap(video, column, runs, cuts[v], length_power, self.search.metric)
            means = video.video.run_means(column, runs)
            for p in evidence:
                evidence[p][i] = float(length_weighted(means, runs, p).max())
        return kept, dropped, evidence

    def _apply_gate(self, runs: Runs, video: PreparedVideo, column: int, gate: float, power: float) -> Runs:
        return gate_runs(runs, length_weighted(video.video.run_means(column, runs), runs, power), gate)

    def _search_label(
        self, decided: dict[int, list[Runs]], subset: list[int], column: int, length_power: float, landmark: tuple | None
    ) -> tuple[float, float, float]:
        """Best (threshold, gate, power) for one label; updates `decided`. `landmark`: (path penalty or
        None, radius, max_events) for a landmark label."""
        best: tuple[float, float, float, float] = (-np.inf, 0.5, 0.0, 0.0)  # total, threshold, gate, power
        cuts = {v: self._cuts_without(decided[v], column) for v in subset}
        for threshold in self.search.thresholds:
            candidate = {v: self._candidate_runs(v, column, threshold, landmark) for v in subset}
            kept, dropped, evidence = self._evaluate_candidate(cuts, subset, column, candidate, length_power)
            choice = self._gate_search(kept, dropped, evidence)
            if choice.total > best[0] + 1e-12:
                best = (choice.total, threshold, choice.gate, choice.power)
        _, threshold, gate, power = best
        for v in subset:
            decided[v][column] = self._apply_gate(self._candidate_runs(v, column, threshold, landmark), self.videos[v], column, gate, power)
        return threshold, gate, power

    def _candidate_runs(self, v: int, column: int, threshold: float, landmark: tuple | None) -> Runs:
        runs = self.runs(v, column, threshold)
        if landmark is None:
            return runs
        penalty, radius, max_events = landmark
        path = self.path(v, penalty) if penalty is not None else None
        return landmark_runs(self.videos[v].video, column, runs, self.labels[column], path, max_events, radius)

    def _set_anatomy(self, decided, subset, columns, penalty, gates, powers) -> None:
        for v in subset:
            for column, runs in zip(columns, section_runs(self.path(v, penalty), len(columns))):
                decided[v][column] = self._apply_gate(runs, self.videos[v], column, gates[column], powers[column])

    def _search_anatomy(self, decided, subset, columns, gates, powers, length_power) -> float:
        """The switch penalty (and the sections' gates) maximising the sections' summed AP."""
        best_total, best_penalty, best_gates = -np.inf, None, None
        # A section's neighbours begin and end where it does, so only the other labels cut it.
        others = [c for c in range(len(self.labels)) if c not in columns]
        cuts = {v: change_points([decided[v][c] for c in others]) for v in subset}
        for penalty in self.search.switch_penalties:
            sections = {v: section_runs(self.path(v, penalty), len(columns)) for v in subset}
            total, chosen = 0.0, []
            for k, column in enumerate(columns):
                candidate = {v: sections[v][k] for v in subset}
                kept, dropped, evidence = self._evaluate_candidate(cuts, subset, column, candidate, length_power)
                choice = self._gate_search(kept, dropped, evidence)
                total += choice.total
                chosen.append(choice)
            if total > best_total + 1e-12:
                best_total, best_penalty, best_gates = total, penalty, chosen
        for column, choice in zip(columns, best_gates):
            gates[column], powers[column] = choice.gate, choice.power
        self._set_anatomy(decided, subset, columns, best_penalty, gates, powers)
        return float(best_penalty)

    def _search_landmarks(self, decided, subset, columns, thresholds, gates, powers, length_power, with_path, penalty) -> tuple[int, int]:
        """Radius and event cap shared by the landmarks, per landmark its threshold and gate: thresholds
        at the default setting, then the setting at those thresholds, then thresholds again."""
        default = LandmarksConfig()
        radius, max_events = default.radius, default.max_events
        path_penalty = penalty if with_path else None
        for column in columns:
            thresholds[column], gates[column], powers[column] = self._search_label(decided, subset, column, length_power, (path_penalty, radius, max_events))
        best_total = -np.inf
        for r in self.search.radii if with_path else (radius,):
            for m in self.search.max_events:
                total = 0.0
                for column in columns:
                    cuts = {v: self._cuts_without(decided[v], column) for v in subset}
                    candidate = {v: self._candidate_runs(v, column, thresholds[column], (path_penalty, r, m)) for v in subset}
                    total += self._gate_search(*self._evaluate_candidate(cuts, subset, column, candidate, length_power)).total
                if total > best_total + 1e-12:
                    best_total, radius, max_events = total, r, m
        for column in columns:
            thresholds[column], gates[column], powers[column] = self._search_label(decided, subset, column, length_power, (path_penalty, radius, max_events))
        return int(radius), int(max_events)

    def _search_length_power(self, decided, subset) -> float:
        best_total, best_power = -np.inf, 0.0
        cuts = {v: change_points(decided[v]) for v in subset}
        for power in self.search.length_powers:
            total = sum(
                label_ap(self.videos[v], c, decided[v][c], cuts[v], power, self.search.metric)
                for v in subset
                for c in range(len(self.labels))
            )
            if total > best_total + 1e-12:
                best_total, best_power = total, power
        return float(best_power)


# --- cross-validation and reports --------------------------------------------------------------------


def fold_indices(count: int, folds: int, seed: int) -> list[list[int]]:
    """Videos 0..count-1 shuffled with `seed` and dealt into `folds` folds (at most `count`)."""
    order = np.random.default_rng(seed).permutation(count)
    folds = min(folds, count)
    return [sorted(order[f::folds].tolist()) for f in range(folds)]


def decode_videos(videos: Sequence[PreparedVideo], labels: Sequence[str], config: PostprocessConfig, scores: Mapping[str, VideoScores]) -> dict[str, list[Event]]:
    """Final-file events of `videos` with `config` (`tuning.decide_events`: what `postprocess` runs)."""
    return tuning.decide_events({v.video_id: scores[v.video_id] for v in videos}, labels, config)


def score_events(
    events: Mapping[str, Sequence[Event]], config: PostprocessConfig, gt: Mapping[str, Any], scores: Mapping[str, VideoScores], labels: Sequence[str]
) -> MapResult:
    """The scorer's mAP of events written as `config` writes them, on the videos of `events`
    (`tuning.score_events` with `fastmap.fast_evaluate`, which equals `metrics.temporal_map.evaluate`)."""
    return tuning.score_events(events, scores, {vid: gt[vid] for vid in events}, labels, config, fast_evaluate)


def cross_validated_events(
    prepared: Sequence[PreparedVideo], folds: list[list[int]], fit: Callable[[list[int]], PostprocessConfig],
    labels: Sequence[str], scores: Mapping[str, VideoScores],
) -> tuple[dict[str, list[Event]], list[PostprocessConfig]]:
    """Each fold decoded with settings fitted on the other folds: held-out events of every video."""
    events: dict[str, list[Event]] = {}
    configs = []
    for f, held_out in enumerate(folds):
        train = [i for g, fold in enumerate(folds) if g != f for i in fold]
        config = fit(train)
        configs.append(config)
        events.update(decode_videos([prepared[i] for i in held_out], labels, config, scores))
    return events, configs


@dataclass
class CalibrationReport:
    """The tuned settings and the figures beside them (all on the same videos)."""

    config: PostprocessConfig
    metric: str
    videos: int
    folds: int
    figures: dict[str, tuple[float, float]] = field(default_factory=dict)  # row -> (mAP@0.5, mAP@0.95)

    def table(self) -> str:
        rows = [f"| decoding ({self.videos} videos, {self.folds}-fold cross-validation over videos) | mAP@0.5 | mAP@0.95 | mean |", "|---|---:|---:|---:|"]
        for name, (m50, m95) in self.figures.items():
            rows.append(f"| {name} | {m50:.4f} | {m95:.4f} | {(m50 + m95) / 2:.4f} |")
        return "\n".join(rows)


def empty_result(gt: Mapping[str, Any], video_ids: Sequence[str], labels: Sequence[str]) -> MapResult:
    return fast_evaluate({vid: [] for vid in video_ids}, {vid: gt[vid] for vid in video_ids}, labels)


def calibrate(
    scores: Mapping[str, VideoScores], gt: Mapping[str, Sequence[Mapping[str, Any]]], labels: Sequence[str],
    base: PostprocessConfig, search: SearchConfig, where: str = "calibrate",
) -> CalibrationReport:
    """Tune on all videos; report the held-out figure from cross-validation beside the empty submission,
    the uncalibrated decoding (`base`) and the in-sample figure, all on the same videos."""
    prepared = prepare(scores, gt, labels, base.temporal.max_fill, where)
    if len(prepared) < search.folds:
        raise InputError(f"{where}: {len(prepared)} video(s) with ground-truth events; {search.folds}-fold cross-validation needs at least {search.folds}")
    calibrator = Calibrator(prepared, labels, base, search)
    folds = fold_indices(len(prepared), search.folds, search.seed)
    ids = [v.video_id for v in prepared]
    figures: dict[str, tuple[float, float]] = {}
    empty = empty_result(gt, ids, labels)
    figures["empty submission"] = (empty.map50, empty.map95)
    uncalibrated = score_events(decode_videos(prepared, labels, base, scores), base, gt, scores, labels)
    figures["uncalibrated (the given settings)"] = (uncalibrated.map50, uncalibrated.map95)
    held_out_events, _ = cross_validated_events(prepared, folds, calibrator.fit, labels, scores)
    final = calibrator.fit(list(range(len(prepared))))
    held_out = score_events(held_out_events, final, gt, scores, labels)
    figures["calibrated, held-out (cross-validated)"] = (held_out.map50, held_out.map95)
    in_sample = score_events(decode_videos(prepared, labels, final, scores), final, gt, scores, labels)
    figures["calibrated, in-sample (optimistic)"] = (in_sample.map50, in_sample.map95)
    return CalibrationReport(final, search.metric, len(prepared), len(folds), figures)

"""Metric-aware decoding: the filter's runs, tuple cuts, gates, landmarks, the composition and its config."""

from __future__ import annotations

import numpy as np
import pytest
from random import Random

from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vce_stream.config import from_dict
from vce_stream.postprocess.config import PostprocessConfig, TemporalConfig
from vce_stream.postprocess.config import DecodingConfig
from vce_stream.postprocess.decode import decode_events
from vce_stream.postprocess.fastmap import fast_average_precision, truth_by_label, TruthSegments
from vce_stream.postprocess.gating import PresenceGate, gate_runs
from vce_stream.postprocess.landmarks import boundary_row, select_landmark_runs
from vce_stream.postprocess.ranking import change_points, cut_runs
from vce_stream.postprocess.runs import densify, filter_runs, length_weighted
from vce_stream.postprocess.tuning import best_gate
from vce_stream.errors import ConfigError
from vce_stream.events.jsonio import frame_range_of, label_events_from_json, label_matrix, parse_submission, submission_dict
from vce_stream.labels import LABELS
from vce_stream.metrics.temporal_map import average_precision, evaluate
from vce_stream.postprocess.filters import offline_events
from vce_stream.postprocess.video import stream_events, video_events


# --- the filter's runs -----------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(1, 120), st.just(3)), elements=st.floats(0, 1, width=32)),
    st.lists(st.integers(1, 4), min_size=0, max_size=119),
    st.sampled_from([1, 3, 7]),
    st.integers(0, 6),
    st.integers(1, 5),
)
# float32(0.7) < 0.7: the reference drops it, and so must the decoding (no float32 comparison).
@example(np.full((1, 3), np.float32(0.7)), [], 1, 0, 1)
@example(np.full((4, 3), 0.7 + 1e-12), [1, 1, 1], 1, 0, 1)  # float64 input just above a threshold
def test_filter_runs_equal_the_offline_reference(probs, steps, window, gap, min_len):
    steps = (steps + [1] * probs.shape[0])[: probs.shape[0] - 1]
    frames = np.concatenate([[5], 5 + np.cumsum(steps)]).astype(np.int64)
    config = TemporalConfig(window=window, gap=gap, min_len=min_len, max_fill=2)
    thresholds = [0.3, 0.5, 0.7]
    labels = ["polyp", "ulcer", "blood"]
    video = densify(frames, probs, config.max_fill)
    got = []
    for c, label in enumerate(labels):
        starts, ends = filter_runs(video, c, thresholds[c], config)
        got += [(int(video.frames[s]), int(video.frames[e]), label) for s, e in zip(starts, ends)]
    expected = [(ev.start, ev.end, ev.label) for ev in offline_events(frames, probs, thresholds, config, labels)]
    assert sorted(got) == sorted(expected)


# --- tuple cuts ------------------------------------------------------------------------------------


def disjoint_runs(draw_lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    starts, ends, pos = [], [], 0
    for i, length in enumerate(draw_lengths):
        if i % 2 == 1:
            starts.append(pos)
            ends.append(pos + length - 1)
        pos += length
    return np.array(starts, np.int64), np.array(ends, np.int64)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, 8), max_size=12), st.lists(st.integers(0, 80), max_size=15))
def test_cut_runs_partition_each_run_at_interior_cuts(lengths, cut_list):
    runs = disjoint_runs(lengths)
    cuts = np.unique(np.array(cut_list, np.int64))
    pieces = cut_runs(runs, cuts)
    covered = {r for s, e in zip(*runs) for r in range(s, e + 1)}
    assert sorted(r for s, e in zip(*pieces) for r in range(s, e + 1)) == sorted(covered)  # same rows, no overlap
    run_starts = set(runs[0].tolist())
    for s in pieces[0].tolist():  # a piece starts at a run start or an interior cut
        assert s in run_starts or s in set(cuts.tolist())
    for c in cuts.tolist():  # no piece straddles a cut
        assert not any(s < c <= e for s, e in zip(*pieces))


def test_perfect_prediction_cut_at_tuple_boundaries_scores_one(official_gt):
    """Single-label events that keep tuple boundaries score exactly like the ground truth's tuple events."""
    video_ids = ["13", "2"]
    config = PostprocessConfig(
        thresholds=0.5,
        temporal=TemporalConfig(window=1, gap=0, min_len=1),
        segmentation="label",
        decoding=DecodingConfig(enabled=True),
    )
    events, ranges = {}, {}
    for vid in video_ids:
        first, last = frame_range_of(official_gt[vid])
        truth = label_matrix(label_events_from_json(official_gt[vid]), (first, last))
        probs = np.where(truth, 0.9, 0.1).astype(np.float32)
        events[vid] = video_events(np.arange(first, last + 1), probs, LABELS, config)
        ranges[vid] = (first, last)
    sub = parse_submission(submission_dict(events, segmentation="label", order="confidence", frame_ranges=ranges))
    result = evaluate(sub, {vid: official_gt[vid] for vid in video_ids})
    assert result.map50 == pytest.approx(1.0) and result.map95 == pytest.approx(1.0)
    # Without the cuts the same prediction loses the ground truth's tuple pieces.
    uncut = PostprocessConfig(**{**config.__dict__, "decoding": from_dict(DecodingConfig, {"enabled": True, "ranking": {"tuple_cuts": False}})})
    merged = {vid: video_events(np.arange(ranges[vid][0], ranges[vid][1] + 1),
                                np.where(label_matrix(label_events_from_json(official_gt[vid]), ranges[vid]), 0.9, 0.1),
                                LABELS, uncut) for vid in video_ids}
    sub = parse_submission(submission_dict(merged, segmentation="label", order="confidence", frame_ranges=ranges))
    assert evaluate(sub, {vid: official_gt[vid] for vid in video_ids}).map95 < 0.95


def test_change_points_are_the_rows_where_the_label_set_changes():
    a = (np.array([2]), np.array([5]))
    b = (np.array([4, 9]), np.array([6, 9]))
    assert change_points([a, b]).tolist() == [2, 4, 6, 7, 9, 10]


# --- gates -----------------------------------------------------------------------------------------


def test_gate_keeps_all_runs_or_none():
    runs = (np.array([0, 10]), np.array([3, 12]))
    evidence = np.array([0.4, 0.7])
    assert gate_runs(runs, evidence, 0.7)[0].tolist() == [0, 10]
    assert gate_runs(runs, evidence, 0.71)[0].size == 0
    assert length_weighted(np.array([0.5, 0.5]), runs, 1.0).tolist() == [2.0, 1.5]


def test_presence_gate_marks_runs_before_the_first_passing_one_provisional():
    gate = PresenceGate((0.6, 0.9))
    assert gate.observe(0, 0.5) is False  # provisional
    assert gate.observe(0, 0.65) is True
    assert gate.observe(0, 0.1) is True  # label present: later runs are final
    assert gate.observe(1, 0.8) is False


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.sampled_from([0.0, 1.0]), st.sampled_from([-np.inf, 0.1, 0.3, 0.5, 0.9])), min_size=1, max_size=12))
def test_best_gate_is_optimal_over_all_gates(rows):
    kept = np.array([r[0] for r in rows])
    dropped = np.array([r[1] for r in rows])
    evidence = np.array([r[2] for r in rows])
    kept = np.where(np.isfinite(evidence), kept, dropped)  # a video without runs scores the same either way
    gate, total = best_gate(kept, dropped, evidence)
    realised = float(np.where(evidence >= gate, kept, dropped).sum())
    assert realised == pytest.approx(total)
    candidates = [0.0, *evidence[np.isfinite(evidence)].tolist(), 10.0]
    best_possible = max(float(np.where(evidence >= g, kept, dropped).sum()) for g in candidates)
    assert total == pytest.approx(best_possible)


# --- landmarks -------------------------------------------------------------------------------------


def test_landmark_runs_near_the_boundary_most_confident_first():
    runs = (np.array([10, 100, 400, 520, 900]), np.array([12, 104, 405, 530, 905]))
    confidence = np.array([0.99, 0.6, 0.7, 0.8, 0.95])
    path = np.repeat([1, 2], [500, 1000])
    boundary = boundary_row(path, 2)
    assert boundary == 500
    kept = select_landmark_runs(runs, confidence, boundary, radius=120, max_events=2)
    assert kept[0].tolist() == [400, 520]  # within 120 rows; 10 and 900 are too far despite confidence
    kept = select_landmark_runs(runs, confidence, boundary, radius=120, max_events=1)
    assert kept[0].tolist() == [520]
    assert select_landmark_runs(runs, confidence, boundary_row(path, 3), radius=10_000, max_events=3)[0].size == 0
    assert select_landmark_runs(runs, confidence, None, radius=None, max_events=2)[0].tolist() == [10, 900]


# --- AP for searches -------------------------------------------------------------------------------


segment_lists = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 12)), max_size=10).map(
    lambda xs: [(s, s + d) for s, d in xs]
)


@settings(max_examples=300, deadline=None)
@given(segment_lists, segment_lists, st.sampled_from([0.3, 0.5, 0.7, 0.95]))
def test_fast_average_precision_equals_the_scorer(pred, truth, threshold):
    segs = TruthSegments(np.array([s for s, _ in truth], np.int64), np.array([e for _, e in truth], np.int64))
    fast = fast_average_precision((np.array([s for s, _ in pred], np.int64), np.array([e for _, e in pred], np.int64)), segs, threshold)
    assert fast == pytest.approx(average_precision(pred, truth, threshold), abs=1e-12)


def test_truth_by_label_reads_each_labels_segments(official_gt):
    truth = truth_by_label(official_gt["13"], LABELS)
    assert truth[LABELS.index("mouth")].count == 1
    assert truth[LABELS.index("mouth")].starts.tolist() == [96]


# --- composition and configuration ----------------------------------------------------------------


def test_default_decoding_is_off_and_the_paper_path_is_unchanged():
    rng = np.random.default_rng(0)
    probs = rng.random((400, len(LABELS))).astype(np.float32)
    frames = np.arange(400)
    config = PostprocessConfig()
    assert config.decoding.enabled is False
    assert video_events(frames, probs, LABELS, config) == stream_events(frames, probs, LABELS, config)


def test_decoding_requires_label_segmentation_and_reads_from_yaml_data():
    with pytest.raises(ConfigError, match="segmentation: label"):
        from_dict(PostprocessConfig, {"decoding": {"enabled": True}})
    config = from_dict(PostprocessConfig, {"segmentation": "label", "decoding": {"enabled": True, "gating": {"enabled": True, "gates": [0.5] * 17}}})
    assert config.decoding.gating.gates == (0.5,) * 17
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(PostprocessConfig, {"segmentation": "label", "decoding": {"enabled": True, "gatting": {}}})
    with pytest.raises(ConfigError, match="evidence_power"):
        from_dict(PostprocessConfig, {"decoding": {"gating": {"evidence_power": 3}}})


def test_decoding_keeps_anatomy_in_order_and_gates_absent_labels():
    rng = np.random.default_rng(2)
    n = 3000
    probs = np.clip(rng.normal(0.15, 0.1, (n, len(LABELS))), 0, 1).astype(np.float32)
    sections = np.repeat([0, 1, 2, 3, 4], [30, 40, 600, 1500, 830])
    probs[np.arange(n), sections] = np.clip(rng.normal(0.7, 0.25, n), 0, 1)
    polyp = LABELS.index("polyp")
    probs[1000:1040, polyp] = 0.95  # a convincing polyp
    ulcer = LABELS.index("ulcer")
    probs[2000:2010, ulcer] = 0.62  # a weak ulcer: below its gate
    gates = [0.0] * len(LABELS)
    gates[ulcer] = 0.8
    gates[polyp] = 0.8
    config = from_dict(PostprocessConfig, {
        "thresholds": 0.5, "segmentation": "label",
        "decoding": {"enabled": True, "anatomy": {"enabled": True, "switch_penalty": 10.0}, "gating": {"enabled": True, "gates": gates}},
    })
    events = decode_events(np.arange(n), probs, LABELS, config)
    by_label: dict[str, list] = {}
    for ev in events:
        by_label.setdefault(ev.label, []).append(ev)
    spans = [(min(e.start for e in by_label[s]), max(e.end for e in by_label[s])) for s in LABELS[:5]]
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))  # sections in order, not overlapping
    assert "ulcer" not in by_label
    assert [(e.start, e.end) for e in by_label["polyp"]] == [(1000, 1039)]
    # The small intestine's run is cut where the polyp begins and ends (tuple boundaries).
    assert {(e.start, e.end) for e in by_label["small intestine"]} >= {(1000, 1039)}


def test_fast_evaluate_equals_the_scorer_on_whole_submissions(official_gt):
    from vce_stream.postprocess.fastmap import fast_evaluate

    videos = ["13", "2", "9", "62"]
    gt = {vid: official_gt[vid] for vid in videos}
    shifted = {vid: [{**ev, "start": ev["start"] + 1, "end": ev["end"] + 1} for ev in gt[vid]] for vid in videos}
    rng = np.random.default_rng(0)
    jittered = {vid: [{**ev, "end": ev["end"] + int(rng.integers(-1, 2)) if ev["end"] > ev["start"] else ev["end"]} for ev in gt[vid]][::-1] for vid in videos}
    for pred in (gt, shifted, jittered, {vid: [] for vid in videos}):
        exact, fast = evaluate(pred, gt), fast_evaluate(pred, gt)
        assert fast.map50 == pytest.approx(exact.map50, abs=1e-12) and fast.map95 == pytest.approx(exact.map95, abs=1e-12)


def touching_segments(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Disjoint segments from (gap before, length) pairs; a gap of 0 makes neighbours touch."""
    out, pos = [], 0
    for gap, length in pairs:
        pos += gap
        out.append((pos, pos + length - 1))
        pos += length
    return out


pairs = st.lists(st.tuples(st.integers(0, 2), st.integers(1, 4)), max_size=16)


@settings(max_examples=400, deadline=None)
@given(pairs, pairs, st.randoms(use_true_random=False), st.sampled_from([0.5, 0.6, 0.95]))
@example([(0, 4)], [(0, 2), (0, 2)], Random(1), 0.5)  # two predictions tie on one ground truth
@example([(0, 2), (2, 2)], [(0, 4)], Random(2), 0.5)  # one prediction ties with two ground truths
def test_fast_average_precision_on_disjoint_segments_with_ties_equals_the_scorer(truth_pairs, pred_pairs, random, threshold):
    """Short touching segments make exact tIoU = 0.5 ties common (the greedy path)."""
    truth = touching_segments(truth_pairs)
    pred = touching_segments(pred_pairs)
    random.shuffle(pred)  # file order is the ranking
    random.shuffle(truth)
    segs = TruthSegments(np.array([s for s, _ in truth], np.int64), np.array([e for _, e in truth], np.int64))
    fast = fast_average_precision((np.array([s for s, _ in pred], np.int64), np.array([e for _, e in pred], np.int64)), segs, threshold)
    assert fast == pytest.approx(average_precision(pred, truth, threshold), abs=1e-12)

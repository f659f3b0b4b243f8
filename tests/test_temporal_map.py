"""Temporal mAP exactly as SPEC §3, against hand-worked cases and the published 80-video figures."""

import pytest

from vce_stream.errors import SubmissionError
from vce_stream.labels import LABELS
from vce_stream.metrics.temporal_map import average_precision, evaluate, tiou


def test_tiou_inclusive_intervals():
    assert tiou((0, 9), (0, 9)) == 1.0
    assert tiou((0, 9), (5, 14)) == pytest.approx(5 / 15)
    assert tiou((0, 0), (1, 1)) == 0.0
    assert tiou((3, 3), (3, 3)) == 1.0


def test_average_precision_greedy_first_fit_in_file_order():
    truth = [(0, 9), (100, 109)]
    # a false positive first costs precision at the later true positives
    assert average_precision([(50, 60), (0, 9), (100, 109)], truth, 0.5) == pytest.approx(0.5 * (1 / 2) + 0.5 * (2 / 3))
    # events after the last true positive cost nothing
    assert average_precision([(0, 9), (100, 109), (50, 60)], truth, 0.5) == pytest.approx(1.0)
    # a ground-truth segment matches at most once
    assert average_precision([(0, 9), (0, 9)], [(0, 9)], 0.5) == pytest.approx(1.0)
    assert average_precision([(0, 9), (0, 9)], [(0, 9), (0, 8)], 0.95) == pytest.approx(0.5)


def test_absent_label_rule():
    assert average_precision([], [], 0.5) == 1.0
    assert average_precision([(0, 0)], [], 0.5) == 0.0


def test_ground_truth_against_itself_is_perfect(official_gt):
    result = evaluate(official_gt, official_gt)
    assert result.map50 == 1.0 and result.map95 == 1.0
    assert len(result.videos) == 80


def test_empty_submission_scores_0_4243(official_gt):
    result = evaluate({vid: [] for vid in official_gt}, official_gt)
    assert round(result.map50, 4) == 0.4243 and round(result.map95, 4) == 0.4243


def test_one_frame_shift_scores_0_809_and_0_494(official_gt):
    shifted = {vid: [dict(e, start=e["start"] + 1, end=e["end"] + 1) for e in events] for vid, events in official_gt.items()}
    result = evaluate(shifted, official_gt)
    assert round(result.map50, 3) == 0.809 and round(result.map95, 3) == 0.494


def test_video_sets_must_match():
    with pytest.raises(SubmissionError, match="missing 1 video"):
        evaluate({}, {"1": [{"start": 0, "end": 1, "label": ["polyp"]}]})


def test_ground_truth_video_without_events_is_left_out():
    gt = {"1": [{"start": 0, "end": 9, "label": ["polyp"]}], "2": []}
    result = evaluate({"1": [{"start": 0, "end": 9, "label": ["polyp"]}], "2": []}, gt)
    assert result.skipped_videos == ["2"] and result.map50 == 1.0
    assert len(result.videos[0].ap[0.5]) == len(LABELS)

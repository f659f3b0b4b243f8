"""The RARE-VISION event JSON: exact tuple segmentation, ranking, atomic writes, scorer sanity checks."""

import json
import os

import pytest

from vce_stream.errors import SubmissionError
from vce_stream.events.event import Event
from vce_stream.events.jsonio import (
    frame_range_of,
    label_events_from_json,
    parse_submission,
    read_submission,
    submission_dict,
    tuple_segments,
    video_events_json,
    write_submission,
)


def test_round_trip_reproduces_all_80_ground_truth_videos(official_gt_path, official_gt, tmp_path):
    """Expand to per-frame labels and re-segment: byte-for-byte the same events, every video."""
    videos = {vid: label_events_from_json(events) for vid, events in official_gt.items()}
    ranges = {vid: frame_range_of(events) for vid, events in official_gt.items()}
    out = tmp_path / "round_trip.json"
    write_submission(out, videos, segmentation="tuple", order="time", frame_ranges=ranges, with_scores=False)
    assert len(official_gt) == 80
    assert json.loads(out.read_text()) == json.loads(official_gt_path.read_text())


def test_tuple_segmentation_sorts_labels_and_writes_empty_stretches():
    events = [Event(10, 19, "stomach", 0.9), Event(15, 16, "pylorus", 0.5), Event(25, 30, "stomach", 0.8)]
    segs = tuple_segments(events)
    assert [(s.start, s.end, s.labels) for s in segs] == [
        (10, 14, ("stomach",)),
        (15, 16, ("pylorus", "stomach")),
        (17, 19, ("stomach",)),
        (20, 24, ()),
        (25, 30, ("stomach",)),
    ]
    assert segs[1].score == pytest.approx(0.7)


def test_confidence_order_ranks_best_first_and_time_order_is_chronological():
    events = [Event(0, 9, "polyp", 0.6), Event(20, 29, "ulcer", 0.9), Event(40, 45, "polyp", 0.7)]
    by_conf = video_events_json(events, segmentation="label", order="confidence")
    assert [e["score"] for e in by_conf] == [0.9, 0.7, 0.6]
    by_time = video_events_json(events, segmentation="label", order="time")
    assert [e["start"] for e in by_time] == [0, 20, 40]
    assert all(isinstance(e["label"], list) for e in by_time)


def test_write_is_atomic_old_file_survives_a_failed_write(tmp_path):
    path = tmp_path / "events.json"
    write_submission(path, {"v": [Event(0, 3, "polyp", 0.5)]})
    before = path.read_text()

    with pytest.raises(Exception):
        write_submission(path, {"v": [Event(0, 3, "not-a-label", 0.5)]}, segmentation="tuple")
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["events.json"]  # no temporary left behind


def test_extra_keys_are_kept_and_ignored_by_the_reader(tmp_path):
    path = tmp_path / "e.json"
    write_submission(path, {"v": []}, extra={"vce_stream": {"incomplete": True, "stopped_at_frame": 7}})
    data = json.loads(path.read_text())
    assert data["vce_stream"]["stopped_at_frame"] == 7
    assert read_submission(path) == {"v": []}


@pytest.mark.parametrize(
    "data, message",
    [
        ({"videos": [{"video_id": "1", "events": [{"start": 0, "end": 1, "label": "polyp"}]}]}, "bare string"),
        ({"videos": [{"video_id": "1", "events": [{"start": 0, "end": 1, "label": ["polyps"]}]}]}, "unknown label 'polyps'"),
        ({"videos": [{"video_id": "1", "events": [{"start": 0.5, "end": 1, "label": []}]}]}, "integers"),
        ({"videos": [{"video_id": "1", "events": [{"start": 5, "end": 1, "label": []}]}]}, "before start"),
        ({"video": []}, '"videos" list'),
        ({"videos": [{"video_id": "1", "events": []}, {"video_id": "1", "events": []}]}, "twice"),
    ],
)
def test_scorer_sanity_failures_have_one_line_reasons(data, message):
    with pytest.raises(SubmissionError, match=message) as info:
        parse_submission(data, "pred.json")
    assert "\n" not in str(info.value) and str(info.value).startswith("pred.json")


def test_malformed_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"videos": [')
    with pytest.raises(SubmissionError, match="broken.json: not valid JSON"):
        read_submission(path)


def test_submission_dict_keeps_video_order():
    sub = submission_dict({"b": [], "a": []})
    assert [v["video_id"] for v in sub["videos"]] == ["b", "a"]


def test_written_files_get_a_normal_file_mode(tmp_path):
    path = tmp_path / "events.json"
    write_submission(path, {"v": []})
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask

"""Tuple segmentation and frame labelling work over event boundaries, not frame by frame (issue 12,
fault 8), and an event JSON a user hands to `evaluate` never causes a traceback (fault 9)."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vce_stream.events.event import Event
from vce_stream.events.jsonio import TupleEvent, label_matrix, labels_at_frames, tuple_segments
from vce_stream.labels import LABELS


def dense_tuple_segments(events, frame_range=None, labels=LABELS):
    """The dense implementation this project shipped before issue 12: one row per frame of the range."""
    if frame_range is None:
        if not events:
            return []
        frame_range = (min(ev.start for ev in events), max(ev.end for ev in events))
    first = frame_range[0]
    matrix = label_matrix(events, frame_range, labels)
    if matrix.shape[0] == 0:
        return []
    score_of = np.zeros(matrix.shape)
    rank = {label: i for i, label in enumerate(labels)}
    for ev in events:
        s, e = max(ev.start, first), min(ev.end, frame_range[1])
        if s <= e:
            score_of[s - first : e - first + 1, rank[ev.label]] = ev.score
    changes = np.flatnonzero(np.any(matrix[1:] != matrix[:-1], axis=1)) + 1
    starts = np.concatenate([[0], changes])
    ends = np.concatenate([changes - 1, [matrix.shape[0] - 1]])
    out = []
    for s, e in zip(starts.tolist(), ends.tolist()):
        active = np.flatnonzero(matrix[s])
        names = tuple(sorted(labels[i] for i in active))
        score = float(score_of[s, active].mean()) if active.size else 0.0
        out.append(TupleEvent(first + s, first + e, names, score))
    return out


SMALL_LABELS = LABELS[:4]


@st.composite
def event_lists(draw):
    count = draw(st.integers(0, 12))
    events = []
    for _ in range(count):
        start = draw(st.integers(0, 60))
        events.append(Event(start, start + draw(st.integers(0, 15)), draw(st.sampled_from(SMALL_LABELS)),
                            draw(st.sampled_from([0.1, 0.25, 0.5, 0.9]))))  # fmt: skip
    return events


@settings(max_examples=300, deadline=None)
@given(events=event_lists(), window=st.one_of(st.none(), st.tuples(st.integers(-5, 70), st.integers(-5, 90))))
def test_sparse_tuple_segments_equal_the_dense_reference(events, window):
    assert tuple_segments(events, window, SMALL_LABELS) == dense_tuple_segments(events, window, SMALL_LABELS)


@settings(max_examples=200, deadline=None)
@given(events=event_lists(), picks=st.lists(st.integers(0, 80), max_size=40, unique=True))
def test_labels_at_frames_equal_the_dense_matrix_rows(events, picks):
    frames = np.array(sorted(picks), dtype=np.int64)
    dense = label_matrix(events, (0, 80), SMALL_LABELS)
    np.testing.assert_array_equal(labels_at_frames(events, frames, SMALL_LABELS), dense[frames])


def test_a_billion_frame_gap_costs_no_memory():
    events = [Event(0, 10, "polyp", 0.7), Event(10**9, 10**9 + 10, "ulcer", 0.6), Event(5, 10**9 + 3, "colon", 0.9)]
    tracemalloc.start()
    segments = tuple_segments(events)
    rows = labels_at_frames(events, np.array([0, 7, 11, 10**9 + 2, 10**9 + 10]))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000  # a dense matrix over the range would need 17 GB
    assert [(s.start, s.end, s.labels) for s in segments] == [
        (0, 4, ("polyp",)), (5, 10, ("colon", "polyp")), (11, 10**9 - 1, ("colon",)),
        (10**9, 10**9 + 3, ("colon", "ulcer")), (10**9 + 4, 10**9 + 10, ("ulcer",)),
    ]  # fmt: skip
    assert rows[:, LABELS.index("colon")].tolist() == [False, True, True, True, False]


def evaluate(tmp_path, text):
    (tmp_path / "p.json").write_text(text)
    return subprocess.run([sys.executable, "-m", "vce_stream", "evaluate", tmp_path / "p.json", tmp_path / "p.json"],
                          capture_output=True, text=True)  # fmt: skip


def one_event(start, end):
    return json.dumps({"videos": [{"video_id": "1", "events": [{"start": start, "end": end, "label": ["polyp"]}]}]})


def test_evaluate_refuses_absurd_input_with_one_line(tmp_path):
    cases = {
        "integers beyond int64": (one_event(10**30, 10**30 + 1), "must lie in"),
        "start of 1e30": (one_event(1e30, 1e30), "integers"),
        "negative start": (one_event(-4, 3), "must lie in"),
        "100,000-deep JSON": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        "nested video id": (json.dumps({"videos": [{"video_id": [["a"]], "events": []}]}), "video_id must be a string"),
    }
    for name, (text, message) in cases.items():
        result = evaluate(tmp_path, text)
        assert result.returncode == 2, (name, result.stderr)
        assert result.stderr.startswith("vce-stream: error: ") and result.stderr.count("\n") == 1, (name, result.stderr)
        assert message in result.stderr, (name, result.stderr)


def test_evaluate_scores_events_a_billion_frames_apart(tmp_path):
    result = evaluate(tmp_path, json.dumps({"videos": [{"video_id": "1", "events": [
        {"start": 0, "end": 3, "label": ["polyp"]}, {"start": 10**9, "end": 10**9 + 3, "label": ["ulcer"]}]}]}))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1.0000" in result.stdout or "1.000" in result.stdout


def test_simulate_refuses_a_ground_truth_spanning_a_billion_frames(tmp_path):
    (tmp_path / "gt.json").write_text(json.dumps({"videos": [{"video_id": "1", "events": [
        {"start": 0, "end": 3, "label": ["polyp"]}, {"start": 10**9, "end": 10**9 + 3, "label": ["ulcer"]}]}]}))  # fmt: skip
    result = subprocess.run([sys.executable, "-m", "vce_stream", "simulate", tmp_path / "gt.json", "--out", tmp_path / "s.npz"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "more than the 20,000,000" in result.stderr
    assert not (tmp_path / "s.npz").exists()

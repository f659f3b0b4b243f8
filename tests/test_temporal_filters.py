"""The offline reference (SPEC §6) as small functions, checked against scipy and by hand."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.ndimage import median_filter

from vce_stream.postprocess.config import TemporalConfig
from vce_stream.errors import FrameOrderError
from vce_stream.postprocess.filters import (
    drop_short_runs,
    fill_missing_frames,
    median_filter_binary,
    merge_gaps,
    offline_events,
    run_bounds,
)

import pytest


@settings(max_examples=200, deadline=None)
@given(x=arrays(bool, st.tuples(st.integers(1, 60), st.integers(1, 4))), window=st.sampled_from([1, 3, 5, 7, 9]))
def test_median_equals_scipy_nearest(x, window):
    expected = median_filter(x.astype(np.uint8), size=(window, 1), mode="nearest").astype(bool)
    np.testing.assert_array_equal(median_filter_binary(x, window), expected)


def col(bits: str) -> np.ndarray:
    return np.array([[c == "1"] for c in bits])


def test_merge_gaps_fills_only_inner_holes_up_to_gap():
    assert "".join("1" if v else "0" for v in merge_gaps(col("0011000110000001100"), 3)[:, 0]) == "0011111110000001100"
    # leading and trailing zeros are never gaps
    assert not merge_gaps(col("0001000"), 5)[:3, 0].any()
    assert not merge_gaps(col("0001000"), 5)[4:, 0].any()


def test_drop_short_runs():
    out = drop_short_runs(col("1101110111100"), 3)
    assert "".join("1" if v else "0" for v in out[:, 0]) == "0001110111100"


def test_run_bounds_inclusive():
    starts, ends = run_bounds(np.array([1, 1, 0, 1, 0, 0, 1], bool))
    assert starts.tolist() == [0, 3, 6] and ends.tolist() == [1, 3, 6]


def test_offline_events_paper_defaults_worked_example():
    # 20 frames of one class: a 2-frame blip (removed by the median), then two runs 4 apart (merged).
    p = np.zeros((40, 1))
    p[2:4] = 0.9
    p[10:16] = 0.8
    p[20:26] = 0.6
    events = offline_events(np.arange(40) + 100, p, [0.5], TemporalConfig(), ["polyp"])
    assert [(e.start, e.end, e.label) for e in events] == [(110, 125, "polyp")]
    assert events[0].score == pytest.approx(p[10:26, 0].mean())


def test_missing_frames_short_holes_filled_long_holes_split():
    idx = np.array([0, 1, 3, 4, 20, 21])
    probs = np.arange(6, dtype=float)[:, None]
    segments = fill_missing_frames(idx, probs, max_fill=2)
    assert [first for first, _ in segments] == [0, 20]
    assert segments[0][1][:, 0].tolist() == [0, 1, 1, 2, 3]  # frame 2 takes frame 1's probabilities
    with pytest.raises(FrameOrderError, match="frame index 3 follows 4"):
        fill_missing_frames(np.array([4, 3]), np.zeros((2, 1)), 2)

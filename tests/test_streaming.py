"""`MedianGapState` equals the offline reference on any input, batch split and missing-frame pattern."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vce_stream.postprocess.config import TemporalConfig
from vce_stream.errors import FrameOrderError
from vce_stream.postprocess.filters import offline_events
from vce_stream.postprocess.streaming import MedianGapState

LABELS = ("a", "b", "c")


@st.composite
def streams(draw, max_len=120):
    """Probabilities (sometimes temporally correlated), frame indices with holes, thresholds, config, batch cuts."""
    n = draw(st.integers(0, max_len))
    classes = draw(st.integers(1, len(LABELS)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if draw(st.booleans()):
        probs = rng.random((n, classes))
    else:  # runs and flicker, like a real classifier
        walk = np.cumsum(rng.normal(size=(n, classes)), axis=0)
        probs = np.clip((walk > 0) * 0.7 + rng.random((n, classes)) * 0.4 - 0.1, 0, 1)
    steps = rng.choice([1, 1, 1, 1, 1, 2, 3, 4, 9], size=n) if draw(st.booleans()) else np.ones(n, int)
    first = draw(st.integers(0, 1000))
    indices = first + np.cumsum(steps) - (steps[0] if n else 0)
    thresholds = [draw(st.floats(0.0, 1.0)) for _ in range(classes)]
    config = TemporalConfig(
        window=draw(st.sampled_from([1, 3, 5, 7, 9])),
        gap=draw(st.integers(0, 7)),
        min_len=draw(st.integers(1, 5)),
        max_fill=draw(st.integers(0, 3)),
    )
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=12)))
    return indices.astype(np.int64), probs, thresholds, config, LABELS[:classes], cuts


def run_streaming(indices, probs, thresholds, config, labels, cuts, record=None):
    state = MedianGapState(labels, thresholds, config)
    events = []
    bounds = [0, *cuts, len(indices)]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        out = state.push(indices[lo:hi], probs[lo:hi])
        if record is not None and hi > lo:
            record.extend((ev, int(indices[hi - 1])) for ev in out)
        events.extend(out)
    events.extend(state.flush())
    return events, state


def key(ev):
    return (ev.start, ev.label)


@settings(max_examples=400, deadline=None)
@given(streams())
def test_streaming_equals_offline_reference(case):
    indices, probs, thresholds, config, labels, cuts = case
    expected = sorted(offline_events(indices, probs, thresholds, config, labels), key=key)
    got, _ = run_streaming(indices, probs, thresholds, config, labels, cuts)
    got = sorted(got, key=key)
    assert [(e.start, e.end, e.label) for e in got] == [(e.start, e.end, e.label) for e in expected]
    # Scores are mean probabilities: equal up to float summation order.
    np.testing.assert_allclose([e.score for e in got], [e.score for e in expected], rtol=0, atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(streams(max_len=200))
def test_events_are_emitted_within_the_latency_bound(case):
    indices, probs, thresholds, config, labels, _ = case
    indices = np.arange(len(indices), dtype=np.int64) + 7  # contiguous: a hole can delay any decision
    record = []
    run_streaming(indices, probs, thresholds, config, labels, list(range(1, len(indices))), record)
    bound = config.window // 2 + config.gap + 1
    assert config.lag == bound
    for event, last_pushed in record:
        assert last_pushed - event.end <= bound
    # The bound (window//2 + gap + min_len - 1) follows whenever min_len >= 2.
    if config.min_len >= 2:
        assert bound <= config.window // 2 + config.gap + config.min_len - 1


def test_state_stays_bounded_on_a_long_stream():
    rng = np.random.default_rng(1)
    config = TemporalConfig()
    state = MedianGapState(LABELS, [0.5] * 3, config)
    for start in range(0, 50_000, 500):
        state.push(np.arange(start, start + 500), rng.random((500, 3)))
        assert state._pad.shape[0] <= config.window - 1
        assert state._pending_probs.shape[0] <= config.window // 2
    assert state.frames_seen == 50_000


def test_backwards_or_repeated_indices_are_an_error():
    state = MedianGapState(LABELS, [0.5] * 3, TemporalConfig())
    state.push(np.array([10, 11, 12]), np.zeros((3, 3)))
    with pytest.raises(FrameOrderError, match="frame index 12 follows 12"):
        state.push(np.array([12]), np.zeros((1, 3)))
    with pytest.raises(FrameOrderError, match="frame index 3 follows 5"):
        MedianGapState(LABELS, [0.5] * 3, TemporalConfig()).push(np.array([4, 5, 3]), np.zeros((3, 3)))


def test_missing_frame_policy_is_counted_and_never_shifts_indices():
    config = TemporalConfig(window=1, gap=0, min_len=1, max_fill=2)
    state = MedianGapState(("a",), [0.5], config)
    ones = np.ones((1, 1))
    events = state.push(np.array([100, 101]), np.ones((2, 1)))
    events += state.push(np.array([104]), ones)  # hole of 2: filled -> one event 100..104
    events += state.push(np.array([110, 111]), np.ones((2, 1)))  # hole of 5: break
    events += state.flush()
    assert [(e.start, e.end) for e in events] == [(100, 104), (110, 111)]
    assert state.frames_filled == 2 and state.breaks == 1 and state.frames_seen == 5

"""Monotone Viterbi over the anatomy sections: optimal, monotone, and the online form agrees."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vce_stream.postprocess.anatomy import (
    OnlineMonotoneViterbi,
    monotone_viterbi,
    path_score,
    section_emissions,
    section_runs,
)


def brute_force_best(emissions: np.ndarray, penalty: float) -> float:
    n, k = emissions.shape
    best = -np.inf
    for path in itertools.product(range(k), repeat=n):
        if all(a <= b for a, b in zip(path, path[1:])):
            best = max(best, path_score(emissions, np.array(path), penalty))
    return best


emission_arrays = st.integers(1, 6).flatmap(
    lambda n: st.integers(1, 3).flatmap(
        lambda k: arrays(np.float64, (n, k), elements=st.floats(-5, 5, allow_nan=False, width=32))
    )
)


@settings(max_examples=150, deadline=None)
@given(emission_arrays, st.floats(0, 6))
def test_offline_path_is_monotone_and_optimal(emissions, penalty):
    path = monotone_viterbi(emissions, penalty)
    assert path.shape == (emissions.shape[0],)
    assert np.all(np.diff(path) >= 0)
    assert path_score(emissions, path, penalty) == pytest.approx(brute_force_best(emissions, penalty), abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(emission_arrays, st.floats(0, 6), st.integers(1, 4))
def test_online_with_lag_beyond_the_video_gives_the_offline_path_or_an_equal_scoring_tie(emissions, penalty, batch):
    online = OnlineMonotoneViterbi(emissions.shape[1], penalty, lag=emissions.shape[0] + 1)
    parts = [online.push(emissions[i : i + batch]) for i in range(0, emissions.shape[0], batch)]
    parts.append(online.flush())
    online_path, offline_path = np.concatenate(parts), monotone_viterbi(emissions, penalty)
    assert np.all(np.diff(online_path) >= 0)
    if not np.array_equal(online_path, offline_path):
        # Only a tie within rounding may be broken differently (the two forms sum in different orders).
        assert path_score(emissions, online_path, penalty) == pytest.approx(path_score(emissions, offline_path, penalty), rel=0, abs=1e-9)


def noisy_sections(rng: np.random.Generator, lengths: list[int], noise: float) -> tuple[np.ndarray, np.ndarray]:
    truth = np.repeat(np.arange(len(lengths)), lengths)
    probs = np.full((truth.size, len(lengths)), 0.1)
    probs[np.arange(truth.size), truth] = 0.8
    probs = np.clip(probs + rng.normal(0, noise, probs.shape), 0, 1)
    return truth, probs


def test_offline_path_recovers_sections_through_noise_where_argmax_flickers():
    rng = np.random.default_rng(0)
    truth, probs = noisy_sections(rng, [40, 30, 300, 900, 500], noise=0.3)
    argmax = probs.argmax(axis=1)
    assert np.count_nonzero(np.diff(argmax)) > 100  # the frame-wise decision flickers
    path = monotone_viterbi(section_emissions(probs, 1e-4), penalty=10.0)
    assert np.all(np.diff(path) >= 0)
    assert np.mean(path == truth) > 0.97
    runs = section_runs(path, 5)
    assert all(r[0].size == 1 for r in runs)  # each section is one contiguous run


def test_online_fixed_lag_is_monotone_and_close_to_offline():
    rng = np.random.default_rng(1)
    truth, probs = noisy_sections(rng, [20, 50, 400, 1200, 600], noise=0.35)
    emissions = section_emissions(probs, 1e-4)
    offline = monotone_viterbi(emissions, 10.0)
    online = OnlineMonotoneViterbi(5, 10.0, lag=100)
    decided = [online.push(emissions[i : i + 64]) for i in range(0, len(emissions), 64)]
    first_batches = np.concatenate(decided)
    # Row r is final once row r + lag has arrived, never earlier.
    assert first_batches.size == len(emissions) - 100
    path = np.concatenate([first_batches, online.flush()])
    assert path.size == len(emissions)
    assert np.all(np.diff(path) >= 0)
    assert np.mean(path == offline) > 0.99


def test_skipped_sections_have_no_run():
    probs = np.full((100, 5), 0.02)
    probs[:50, 2] = 0.95
    probs[50:, 3] = 0.95
    path = monotone_viterbi(section_emissions(probs, 1e-4), 5.0)
    runs = section_runs(path, 5)
    assert [r[0].size for r in runs] == [0, 0, 1, 1, 0]
    assert (runs[2][0][0], runs[2][1][0], runs[3][0][0], runs[3][1][0]) == (0, 49, 50, 99)

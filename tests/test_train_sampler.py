"""The square-root frequency sampler: weights, draw frequencies, and exact resumption."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from train.sampler import SqrtFrequencySampler, sqrt_frequency_weights


def test_weights_follow_the_rarest_active_label_by_hand():
    targets = np.array(
        [
            [1, 0, 0],  # label 0 occurs on 4 frames -> 1/2
            [1, 1, 0],  # rarest active: label 1 (2 frames) -> 1/sqrt(2)
            [1, 1, 1],  # rarest active: label 2 (1 frame) -> 1
            [1, 0, 0],
            [0, 0, 0],  # no label: the 2 label-less frames form a group -> 1/sqrt(2)
            [0, 0, 0],
        ]
    )
    weights = sqrt_frequency_weights(targets)
    assert weights.tolist() == pytest.approx([0.5, 1 / math.sqrt(2), 1.0, 0.5, 1 / math.sqrt(2), 1 / math.sqrt(2)])


@settings(max_examples=50, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 30), st.integers(1, 6)), elements=st.integers(0, 1)))
def test_weights_equal_a_frame_by_frame_computation(targets):
    counts = targets.sum(axis=0)
    empty = int((targets.sum(axis=1) == 0).sum())
    for row, weight in zip(targets, sqrt_frequency_weights(targets)):
        active = [counts[c] for c in range(targets.shape[1]) if row[c]]
        assert weight == pytest.approx(1 / math.sqrt(min(active) if active else empty))


def test_draw_frequencies_match_the_weights():
    targets = np.zeros((3, 2), dtype=np.uint8)
    targets[0, 0] = targets[1, 0] = 1  # weight 1/sqrt(2) each
    targets[2, 1] = 1  # weight 1
    sampler = SqrtFrequencySampler(sqrt_frequency_weights(targets), num_samples=60_000, seed=3)
    positions = np.array([p for p, _ in sampler])
    share = np.bincount(positions, minlength=3) / positions.size
    expected = np.array([1 / math.sqrt(2), 1 / math.sqrt(2), 1.0])
    expected /= expected.sum()
    assert np.abs(share - expected).max() < 0.01  # ~5 standard errors at 60k draws


def test_resuming_inside_an_epoch_yields_the_rest_of_the_same_draw():
    sampler = SqrtFrequencySampler(np.linspace(1, 2, 50), num_samples=40, seed=11)
    sampler.set_epoch(2)
    whole = list(sampler)
    sampler.set_epoch(2, start=17)
    assert list(sampler) == whole[17:] and len(sampler) == 23
    sampler.set_epoch(3)
    assert list(sampler) != whole  # a new epoch, a new draw
    again = SqrtFrequencySampler(np.linspace(1, 2, 50), num_samples=40, seed=11)
    again.set_epoch(2)
    assert list(again) == whole  # the draw depends only on (seed, epoch)


def test_bad_weights_are_refused():
    with pytest.raises(ValueError):
        SqrtFrequencySampler(np.array([0.0, 0.0]), 5, 0)
    with pytest.raises(ValueError):
        SqrtFrequencySampler(np.array([1.0, np.nan]), 5, 0)

"""Validation maths: frame metrics against their definitions, the threshold search, temporal mAP
through the runtime's post-processing, and the per-video presence rule."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vce_stream.postprocess.config import PostprocessConfig, TemporalConfig
from vce_stream.labels import LABELS
from vce_stream.postprocess import tuning
from vce_stream.postprocess.video import video_events

from train.config import ThresholdSearchConfig
from train.data import VideoFrames
from train import validate as val

scores_and_targets = st.lists(
    st.tuples(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.5, 0.7, 0.9, 1.0]), st.booleans()), min_size=1, max_size=25
)


def ap_by_definition(y, s):
    """Mean over positives of precision among frames scored >= that positive's score (ties together)."""
    y, s = np.asarray(y, bool), np.asarray(s, float)
    return float(np.mean([(y & (s >= t)).sum() / (s >= t).sum() for t in s[y]]))


@settings(max_examples=80, deadline=None)
@given(scores_and_targets)
def test_average_precision_matches_its_definition(pairs):
    s, y = zip(*pairs)
    got = val.average_precision(y, s)
    if not any(y):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(ap_by_definition(y, s))


@settings(max_examples=80, deadline=None)
@given(scores_and_targets)
def test_auc_is_the_share_of_correctly_ordered_pairs(pairs):
    s, y = zip(*pairs)
    pos = [a for a, b in pairs if b]
    neg = [a for a, b in pairs if not b]
    got = val.roc_auc(y, s)
    if not pos or not neg:
        assert np.isnan(got)
    else:
        wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
        assert got == pytest.approx(wins / (len(pos) * len(neg)))


@settings(max_examples=60, deadline=None)
@given(scores_and_targets)
def test_f1_curve_equals_f1_at_each_threshold(pairs):
    s, y = zip(*pairs)
    grid = ThresholdSearchConfig(low=0.05, high=0.95, step=0.05).grid()
    curve = tuning.f1_curve(np.array(y), np.array(s, dtype=np.float32), grid)
    for t, f1 in zip(grid, curve):
        assert f1 == pytest.approx(val.precision_recall_f1(y, np.array(s, dtype=np.float32), t)[2])


def test_threshold_grid_is_the_configured_range():
    grid = ThresholdSearchConfig().grid()
    assert grid[0] == 0.05 and grid[-1] == 0.95 and len(grid) == 91


def test_threshold_search_maximises_f1_per_class_and_defaults_without_positives():
    rng = np.random.default_rng(0)
    y = np.zeros((400, 3), dtype=np.uint8)
    y[:40, 0] = 1
    y[:200, 1] = 1
    s = rng.uniform(0, 0.3, size=(400, 3))
    s[:40, 0] = rng.uniform(0.12, 0.2, size=40)  # rare class separable only at a low threshold
    s[:200, 1] = rng.uniform(0.6, 1.0, size=200)
    cfg = ThresholdSearchConfig()
    thresholds = val.search_thresholds(y, s, cfg)
    grid = cfg.grid()
    for c in (0, 1):
        best = max(val.precision_recall_f1(y[:, c], s[:, c], t)[2] for t in grid)
        assert val.precision_recall_f1(y[:, c], s[:, c], thresholds[c])[2] == pytest.approx(best)
    assert thresholds[0] < 0.2 and thresholds[2] == cfg.default


def test_hold_to_full_rate_repeats_each_sampled_prediction():
    sampled = np.array([0, 5, 10])
    probs = np.array([[0.1], [0.2], [0.3]])
    full = np.arange(0, 13)
    held = val.hold_to_full_rate(sampled, probs, full)[:, 0]
    assert held.tolist() == [0.1] * 5 + [0.2] * 5 + [0.3] * 3


def make_video(video_id: str, targets: np.ndarray) -> VideoFrames:
    n = targets.shape[0]
    return VideoFrames(video_id, np.arange(n, dtype=np.int64), tuple(f"f{i}" for i in range(n)), targets.astype(np.uint8))


def test_perfect_predictions_score_temporal_map_one_through_the_real_evaluator():
    targets = np.zeros((200, len(LABELS)), dtype=np.uint8)
    targets[:120, LABELS.index("stomach")] = 1
    targets[120:, LABELS.index("small intestine")] = 1
    targets[42:73, LABELS.index("polyp")] = 1  # boundaries off the every-5th grid
    videos = {"v1": make_video("v1", targets)}
    predictions = {"v1": (videos["v1"].index, targets.astype(np.float32))}
    result = val.temporal_map(predictions, videos, LABELS, PostprocessConfig(thresholds=0.5))
    assert result.map50 == pytest.approx(1.0) and result.map95 == pytest.approx(1.0)
    # Every 5th frame held to full rate: the polyp becomes 45..74 against 42..72 (tIoU 28/33), so every
    # segment still matches at 0.5 but not all at 0.95.
    sampled = videos["v1"].every_kth(5)
    coarse = val.temporal_map({"v1": (sampled.index, sampled.targets.astype(np.float32))}, videos, LABELS,
                              PostprocessConfig(thresholds=0.5))
    assert coarse.map50 == pytest.approx(1.0) and coarse.map95 < 0.95


def test_presence_search_gates_a_weak_false_label_through_the_runtime_decoding():
    n = 120
    targets = np.zeros((n, len(LABELS)), dtype=np.uint8)
    targets[:, LABELS.index("colon")] = 1
    targets[30:60, LABELS.index("ulcer")] = 1
    probs = targets.astype(np.float32) * 0.9
    truth_b = targets.copy()
    truth_b[:, LABELS.index("ulcer")] = 0  # video b has no ulcer...
    probs_b = probs.copy()
    probs_b[30:60, LABELS.index("ulcer")] = 0.55  # ...but a weak false ulcer run
    videos = {"a": make_video("a", targets), "b": make_video("b", truth_b)}
    predictions = {"a": (videos["a"].index, probs), "b": (videos["b"].index, probs_b)}
    post = PostprocessConfig(thresholds=0.5, temporal=TemporalConfig())
    found = val.search_presence(predictions, videos, LABELS, post)
    assert found.map50_without < 1.0 and found.improves and found.map50_with == pytest.approx(1.0)
    assert set(found.gates) == {"ulcer"} and 0.55 < found.gates["ulcer"] <= 0.9
    gating = found.post.decoding.gating
    assert found.post.decoding.enabled and gating.enabled and found.post.segmentation == "label"
    assert gating.gates[LABELS.index("ulcer")] == found.gates["ulcer"]
    # The shipped config is what the runtime applies: its events drop the ulcer in b only.
    labels_b = {ev.label for ev in video_events(videos["b"].index, probs_b, LABELS, found.post)}
    labels_a = {ev.label for ev in video_events(videos["a"].index, probs, LABELS, found.post)}
    assert labels_b == {"colon"} and labels_a == {"colon", "ulcer"}
    assert val.temporal_map(predictions, videos, LABELS, found.post).map50 == pytest.approx(found.map50_with)


def test_presence_search_keeps_the_configured_post_processing_when_gates_do_not_help():
    targets = np.zeros((80, len(LABELS)), dtype=np.uint8)
    targets[:, LABELS.index("stomach")] = 1
    videos = {"a": make_video("a", targets)}
    predictions = {"a": (videos["a"].index, targets.astype(np.float32))}
    post = PostprocessConfig(thresholds=0.5)
    found = val.search_presence(predictions, videos, LABELS, post)
    assert not found.improves and found.post == post and found.gates == {}

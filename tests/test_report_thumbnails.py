"""KeyFrameCollector: streaming top-K key frames equal the whole-exam reference, in bounded memory."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vce_stream.labels import LABELS
from vce_stream.report.thumbnails import KeyFrameCollector, KeyFrameSettings, needed_frames, select_key_frames

SIZE = 8  # tiny frames: the property is about ranking, not pixels


def frames_for(indices: np.ndarray) -> np.ndarray:
    """One solid colour per frame, derived from its index (so a thumbnail tells which frame it shows)."""
    colours = np.stack([(indices * 37) % 256, (indices * 91) % 256, (indices * 13) % 256], axis=1).astype(np.uint8)
    return np.broadcast_to(colours[:, None, None, :], (indices.size, SIZE, SIZE, 3)).copy()


def feed(collector: KeyFrameCollector, indices: np.ndarray, probs: np.ndarray, cuts: list[int]) -> int:
    """Push in batches split at `cuts`; return the largest number of thumbnails held after any push."""
    peak = 0
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < indices.size)), indices.size]
    for a, b in zip(bounds[:-1], bounds[1:]):
        collector.push(indices[a:b], frames_for(indices[a:b]), probs[a:b])
        peak = max(peak, collector.stored_thumbnails)
    return peak


@st.composite
def exams(draw):
    n = draw(st.integers(1, 120))
    labels = LABELS[: draw(st.sampled_from([5, 9, 17]))]
    steps = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    indices = np.cumsum(steps).astype(np.int64) + draw(st.integers(0, 50))
    # Few distinct values, so ties (equal probabilities) are common and tie-breaking is exercised.
    levels = np.array([0.0, 0.25, 0.5, 0.5, 0.75, 0.9, 1.0], dtype=np.float32)
    seed = draw(st.integers(0, 2**32 - 1))
    probs = levels[np.random.default_rng(seed).integers(0, levels.size, size=(n, len(labels)))]
    cuts = draw(st.lists(st.integers(0, n), max_size=8))
    config = KeyFrameSettings(top_k=draw(st.integers(0, 5)), top_n=draw(st.integers(0, 12)), thumb_size=SIZE)
    return labels, indices, probs, cuts, config


@settings(max_examples=80, deadline=None)
@given(exams())
def test_collector_equals_the_whole_exam_top_lists_for_any_batch_split(exam):
    labels, indices, probs, cuts, config = exam
    collector = KeyFrameCollector(labels, config)
    peak = feed(collector, indices, probs, cuts)
    result = collector.result()
    per_label, overall, firsts = select_key_frames(indices, probs, labels, config)
    assert {name: [(k.frame, k.score) for k in kfs] for name, kfs in result.per_label.items()} == per_label
    assert [(k.frame, k.score, k.label) for k in result.overall] == overall
    assert {name: k.frame for name, k in result.firsts.items()} == firsts
    assert peak <= collector.capacity
    # Every listed frame carries the thumbnail of its own image.
    for kf in [*result.overall, *result.firsts.values(), *(k for kfs in result.per_label.values() for k in kfs)]:
        assert kf.thumbnail is not None
        pixel = np.asarray(Image.open(io.BytesIO(kf.thumbnail)).convert("RGB"))[SIZE // 2, SIZE // 2].astype(int)
        expected = frames_for(np.array([kf.frame]))[0, 0, 0].astype(int)
        assert np.abs(pixel - expected).max() <= 12  # JPEG rounding


def test_thumbnails_held_stay_within_capacity_on_a_long_exam():
    rng = np.random.default_rng(0)
    config = KeyFrameSettings(top_k=3, top_n=10, thumb_size=SIZE)
    collector = KeyFrameCollector(LABELS, config)
    peak = 0
    for start in range(0, 20_000, 500):  # rising probabilities: every batch displaces older key frames
        indices = np.arange(start, start + 500, dtype=np.int64)
        probs = (rng.random((500, len(LABELS))) * 0.5 + start / 40_000).astype(np.float32)
        collector.push(indices, frames_for(indices), probs)
        peak = max(peak, collector.stored_thumbnails)
    assert peak <= collector.capacity == 3 * 17 + 10 + 17
    assert collector.stored_thumbnails >= 3  # it does keep images
    assert all(k.frame >= 19_000 for k in collector.result().per_label["polyp"])


def test_pinned_frames_get_thumbnails_and_needed_frames_cover_every_list():
    indices = np.arange(100, 160, dtype=np.int64)
    probs = np.random.default_rng(1).random((60, 17)).astype(np.float32)
    config = KeyFrameSettings(top_k=2, top_n=4, thumb_size=SIZE)
    collector = KeyFrameCollector(LABELS, config, pinned=[105, 999])
    collector.push(indices, frames_for(indices), probs)
    result = collector.result()
    assert set(result.pinned) == {105}
    assert result.thumbnail_of(105) is not None and result.thumbnail_of(999) is None
    listed = {k.frame for k in result.overall} | {k.frame for kfs in result.per_label.values() for k in kfs} | {k.frame for k in result.firsts.values()}
    assert needed_frames(indices, probs, LABELS, config) == listed


def test_collector_accepts_torch_frames_and_refuses_indices_that_go_back():
    torch = pytest.importorskip("torch")
    indices = np.arange(10, dtype=np.int64)
    probs = np.full((10, 17), 0.5, np.float32)
    collector = KeyFrameCollector(LABELS, KeyFrameSettings(top_k=1, top_n=1, thumb_size=SIZE))
    collector.push(indices, torch.from_numpy(frames_for(indices)), probs)
    assert collector.result().per_label["polyp"][0].frame == 0  # ties go to the earliest frame
    with pytest.raises(ValueError, match="increase"):
        collector.push(indices, frames_for(indices), probs)

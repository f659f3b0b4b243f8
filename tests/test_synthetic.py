"""The synthetic exam generator: a well-formed plan, its ground truth JSON, videos and frame folders."""

from __future__ import annotations

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vce_stream.postprocess.config import TemporalConfig
from vce_stream.errors import ConfigError
from vce_stream.events.jsonio import read_submission
from vce_stream.labels import ANATOMY_ORDER, LABEL_INDEX, LANDMARKS, PATHOLOGIES
from vce_stream.sources.galar import read_galar_index
from vce_stream.synthetic import BOUNDARY_LANDMARKS, PaletteScorer, SyntheticConfig, make_exam, plan_exam, render_frames
from vce_stream.postprocess.filters import run_bounds

ANATOMY = [LABEL_INDEX[name] for name in ANATOMY_ORDER]


@settings(max_examples=40, deadline=None)
@given(st.integers(100, 20_000), st.integers(0, 10_000), st.floats(0, 20))
def test_plans_pass_the_sections_in_order_with_landmarks_at_the_boundaries(frames, seed, rate):
    plan = plan_exam(SyntheticConfig(frames=frames, seed=seed, lesion_rate=rate))
    truth = plan.truth
    assert truth.shape == (frames, 17)
    assert (truth[:, ANATOMY].sum(axis=1) == 1).all()  # exactly one section per frame
    section = truth[:, ANATOMY].argmax(axis=1)
    assert (np.diff(section) >= 0).all() and set(section.tolist()) == set(range(5))  # in order, none skipped
    for landmark, (_, _, end) in zip(BOUNDARY_LANDMARKS, plan.sections[1:4]):
        starts, ends = run_bounds(truth[:, LABEL_INDEX[landmark]])
        assert len(starts) == 1 and starts[0] <= end < ends[0] + 1


@settings(max_examples=40, deadline=None)
@given(st.integers(100, 20_000), st.integers(0, 10_000))
def test_events_are_long_and_far_apart_enough_to_survive_the_temporal_filter(frames, seed):
    config = SyntheticConfig(frames=frames, seed=seed, lesion_rate=10)
    plan = plan_exam(config)
    temporal = TemporalConfig()
    marked = plan.truth[:, [LABEL_INDEX[n] for n in (*LANDMARKS, *PATHOLOGIES)]]
    assert (marked.sum(axis=1) <= 1).all()  # one marker at a time
    for c in range(17):
        starts, ends = run_bounds(plan.truth[:, c])
        assert ((ends - starts + 1) >= temporal.window // 2 + 1).all()
        assert (starts[1:] - ends[:-1] - 1 > temporal.gap).all()


def test_the_same_seed_gives_the_same_exam():
    a, b = plan_exam(SyntheticConfig(frames=500, seed=9)), plan_exam(SyntheticConfig(frames=500, seed=9))
    assert np.array_equal(a.truth, b.truth) and a.markers == b.markers
    assert not np.array_equal(a.truth, plan_exam(SyntheticConfig(frames=500, seed=10)).truth)


def test_the_ground_truth_json_is_a_valid_tuple_segmented_submission(tmp_path):
    plan = make_exam(tmp_path / "v.mkv", SyntheticConfig(frames=300, width=64, height=64), gt_path=tmp_path / "gt.json")
    events = read_submission(tmp_path / "gt.json")["v"]
    covered = [i for e in events for i in range(e["start"], e["end"] + 1)]
    assert covered == list(range(300))  # tuple events tile the exam in time order
    for e in events:
        active = {name for name, column in LABEL_INDEX.items() if plan.truth[e["start"], column]}
        assert e["label"] == sorted(active)


def test_videos_have_the_requested_length_size_and_codec(tmp_path):
    path = tmp_path / "exam.avi"
    make_exam(path, SyntheticConfig(frames=120, width=80, height=64, fps=5))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "mjpeg" and (stream.width, stream.height) == (80, 64)
        assert sum(1 for _ in container.decode(stream)) == 120


def test_frame_folders_follow_the_galar_layout_and_csv(tmp_path):
    folder, csv = tmp_path / "12", tmp_path / "12.csv"
    make_exam(folder, SyntheticConfig(frames=100, width=48, height=48), digits=6, start=10, step=5, ext="PNG", labels_csv=csv)
    names = sorted(p.name for p in folder.iterdir())
    assert names[0] == "frame_000010.PNG" and names[-1] == f"frame_{10 + 5 * 99:06d}.PNG" and len(names) == 100
    assert read_galar_index(csv) == {10 + 5 * i: i for i in range(100)}


def test_the_palette_scorer_reads_the_rendered_frames_back(tmp_path):
    import torch

    from vce_stream.sources.preprocess import PreprocessConfig
    from vce_stream.sources.preprocess import prepare_frame

    plan = plan_exam(SyntheticConfig(frames=300, width=128, height=128, seed=2))
    frames = [
        prepare_frame(av.VideoFrame.from_ndarray(image, format="rgb24"), PreprocessConfig(size=64))
        for image in render_frames(plan)
    ]
    probs = PaletteScorer().score(torch.from_numpy(np.stack(frames)))
    assert probs.shape == (300, 17) and probs.dtype == np.float32
    assert np.array_equal(probs >= 0.5, plan.truth)


def test_bad_synthetic_settings_are_config_errors():
    with pytest.raises(ConfigError):
        SyntheticConfig(frames=10)
    with pytest.raises(ConfigError):
        SyntheticConfig(width=33)
    with pytest.raises(ConfigError, match="fps must be >= 1"):
        SyntheticConfig(fps=0)

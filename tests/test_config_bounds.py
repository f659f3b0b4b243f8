"""Every size that comes from a setting is bounded, and a configuration file a user hands in never
causes a traceback (issue 12, faults 8 and 9)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vce_stream.engine.profile import BatchProfile
from train.config import DataConfig, TrainConfig
from vce_stream.config import from_dict, load_yaml
from vce_stream.postprocess.config import PostprocessConfig, TemporalConfig
from vce_stream.sources.preprocess import PreprocessConfig
from vce_stream.postprocess.calibrate import SearchConfig
from vce_stream.postprocess.config import AnatomyConfig, LandmarksConfig
from vce_stream.errors import ConfigError
from vce_stream.labels import LABELS
from vce_stream.limits import MAX_BATCH, MAX_WINDOW
from vce_stream.model.config import ArchConfig
from vce_stream.scores import save_scores
from vce_stream.sources.base import SourceConfig
from vce_stream.synthetic import SyntheticConfig

HUGE = 100_000_001
TOO_LARGE = [
    (TemporalConfig, {"window": HUGE}, "temporal.window"),
    (TemporalConfig, {"gap": HUGE}, "temporal.gap"),
    (TemporalConfig, {"min_len": HUGE}, "temporal.min_len"),
    (TemporalConfig, {"max_fill": HUGE}, "temporal.max_fill"),
    (PreprocessConfig, {"size": HUGE}, "preprocess.size"),
    (AnatomyConfig, {"lag": HUGE}, "decoding.anatomy.lag"),
    (LandmarksConfig, {"radius": HUGE}, "decoding.landmarks.radius"),
    (LandmarksConfig, {"max_events": HUGE}, "decoding.landmarks.max_events"),
    (ArchConfig, {"img_size": 224 * 10**6, "patch_size": 16}, "arch.img_size"),
    (ArchConfig, {"depth": HUGE}, "arch.depth"),
    (BatchProfile, {"min": 1, "opt": 16, "max": HUGE}, "batch profile max"),
    (TrainConfig, {"batch_size": HUGE}, "batch_size"),
    (TrainConfig, {"eval_batch_size": HUGE}, "eval_batch_size"),
    (DataConfig, {"num_workers": HUGE}, "data.num_workers"),
    (SearchConfig, {"radii": (50, HUGE)}, "radii"),
    (SyntheticConfig, {"frames": 10**10}, "synthetic frames"),
]


@pytest.mark.parametrize("cls, fields, name", TOO_LARGE, ids=[n for _, _, n in TOO_LARGE])
def test_absurd_sizes_are_refused_with_one_line_naming_the_setting(cls, fields, name):
    with pytest.raises(ConfigError, match=rf"{name} must be at most") as info:
        cls(**fields)
    assert "\n" not in str(info.value)


@settings(max_examples=200, deadline=None)
@given(window=st.integers(1, 3 * MAX_WINDOW), batch=st.integers(1, 3 * MAX_BATCH))
def test_bounds_accept_everything_up_to_the_maximum_and_nothing_beyond(window, batch):
    window |= 1  # the window is odd
    if window <= MAX_WINDOW:
        assert TemporalConfig(window=window).window == window
    else:
        with pytest.raises(ConfigError, match="temporal.window"):
            TemporalConfig(window=window)
    if batch <= MAX_BATCH:
        assert BatchProfile(1, batch, batch).max == batch
    else:
        with pytest.raises(ConfigError, match="batch profile"):
            BatchProfile(1, batch, batch)


@pytest.mark.parametrize("value", [99999999999999999999, -99999999999999999999, 2**63])
def test_whole_numbers_beyond_int64_in_a_file_are_refused(value):
    with pytest.raises(ConfigError, match=r"source\.frame_offset: .*beyond any sensible setting"):
        from_dict(SourceConfig, {"frame_offset": value}, where="source")


def postprocess(tmp_path, config_bytes: bytes):
    save_scores(tmp_path / "s.npz", {"v": (np.arange(50), np.full((50, 17), 0.2, np.float32))}, LABELS)
    (tmp_path / "c.yaml").write_bytes(config_bytes)
    return subprocess.run(
        [sys.executable, "-m", "vce_stream", "postprocess", tmp_path / "s.npz", "--config", tmp_path / "c.yaml", "--out", tmp_path / "e.json"],
        capture_output=True, text=True,
    )  # fmt: skip


@pytest.mark.parametrize(
    "text, message",
    [
        (b"postprocess:\n  temporal:\n    window: 100000001\n", "temporal.window must be at most"),
        (b"postprocess:\n  temporal:\n    gap: 99999999999999999999\n", "beyond any sensible setting"),
        (b"postprocess:\n  order: \xff\xfetime\n", "not UTF-8 text"),
        ("postprocess:\n  order: zeit\n".encode("utf-16"), "not UTF-8 text"),
        (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
    ],
    ids=["window", "int beyond int64", "latin-1 bytes", "utf-16", "deep nesting"],
)
def test_bad_config_files_are_one_line_with_status_2(tmp_path, text, message):
    result = postprocess(tmp_path, text)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("vce-stream: error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr and str(tmp_path / "c.yaml") in result.stderr
    assert not (tmp_path / "e.json").exists()


def test_load_yaml_names_a_directory(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_yaml(tmp_path)


def test_defaults_are_within_bounds():
    for cls in (TemporalConfig, PreprocessConfig, PostprocessConfig, AnatomyConfig, LandmarksConfig, ArchConfig, BatchProfile, TrainConfig, DataConfig, SearchConfig, SyntheticConfig):
        cls()

"""Saved scores, `vce-stream postprocess` and `vce-stream evaluate` as a user runs them (real subprocesses)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from vce_stream.postprocess.config import PostprocessConfig
from vce_stream.errors import InputError
from vce_stream.events.jsonio import read_submission, submission_dict
from vce_stream.labels import LABELS
from vce_stream.scores import load_scores, save_scores
from vce_stream.postprocess.filters import offline_events


def cli(*args, check=True):
    return subprocess.run([sys.executable, "-m", "vce_stream", *map(str, args)], capture_output=True, text=True, check=check)


def fake_scores(seed=0, n=600):
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(size=(n, len(LABELS))), axis=0)
    return ((walk > 4) * 0.6 + rng.random((n, len(LABELS))) * 0.4).astype(np.float32)


def test_scores_round_trip(tmp_path):
    videos = {"a": (np.arange(10, 610), fake_scores(0)), "b": (np.arange(0, 1200, 2), fake_scores(1))}
    save_scores(tmp_path / "s.npz", videos, LABELS)
    labels, loaded = load_scores(tmp_path / "s.npz")
    assert labels == LABELS and list(loaded) == ["a", "b"]
    np.testing.assert_array_equal(loaded["b"][0], videos["b"][0])
    np.testing.assert_array_equal(loaded["a"][1], videos["a"][1])


def test_load_scores_rejects_other_files(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="x.npz: not a readable scores file"):
        load_scores(tmp_path / "x.npz")


def test_postprocess_equals_offline_reference_and_evaluates(tmp_path):
    frames, probs = np.arange(100, 700), fake_scores(2)
    save_scores(tmp_path / "s.npz", {"v": (frames, probs)}, LABELS)
    cli("postprocess", tmp_path / "s.npz", "--out", tmp_path / "e.json", "--thresholds", "0.55", "--order", "time")
    config = PostprocessConfig(thresholds=0.55, order="time")
    reference = offline_events(frames, probs, config.thresholds_for(17), config.temporal, LABELS)
    expected = submission_dict({"v": reference}, order="time", frame_ranges={"v": (100, 699)})
    assert read_submission(tmp_path / "e.json") == {"v": [{k: e[k] for k in ("start", "end", "label")} for e in expected["videos"][0]["events"]]}
    result = cli("evaluate", tmp_path / "e.json", tmp_path / "e.json", "--json", tmp_path / "m.json")
    assert "overall (1)" in result.stdout
    assert json.loads((tmp_path / "m.json").read_text())["overall"]["mAP@0.5"] == pytest.approx(1.0)


def test_evaluate_rejects_bad_submission_with_status_2(tmp_path, official_gt_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"videos": [{"video_id": "1", "events": [{"start": 0, "end": 3, "label": "polyp"}]}]}))
    result = cli("evaluate", bad, official_gt_path, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "bare string" in result.stderr


def test_evaluate_known_empty_submission_figure(tmp_path, official_gt_path, official_gt):
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"videos": [{"video_id": v, "events": []} for v in official_gt]}))
    result = cli("evaluate", empty, official_gt_path, "--quiet")
    assert result.stdout.strip() == "mAP@0.5=0.4243 mAP@0.95=0.4243"


def test_postprocess_missing_file_is_one_line_error(tmp_path):
    result = cli("postprocess", tmp_path / "nope.npz", "--out", tmp_path / "e.json", check=False)
    assert result.returncode == 2 and "nope.npz: file not found" in result.stderr
    assert not (tmp_path / "e.json").exists()

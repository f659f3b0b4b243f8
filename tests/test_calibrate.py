"""`vce-stream calibrate`: tuned settings that `postprocess` and bundles accept, with honest figures."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from vce_stream.cli import main
from vce_stream.postprocess.config import PostprocessConfig
from vce_stream.postprocess.calibrate import Calibrator, SearchConfig, calibrate, fold_indices, prepare
from vce_stream.errors import InputError
from vce_stream.events.jsonio import read_submission
from vce_stream.labels import LABELS
from vce_stream.metrics.temporal_map import evaluate
from vce_stream.scores import save_scores
from vce_stream.simulate import SimulatorConfig, simulate_scores

# Six short videos of the published ground truth (4,000 to 6,300 frames each).
VIDEOS = ("13", "9", "4", "62", "2", "14")
SIMULATOR = SimulatorConfig(auc_anatomy=0.98, auc_landmark=0.95, auc_pathology=0.95, correlation_frames=25, seed=1)
SMALL_SEARCH = dict(folds=2, rounds=1, thresholds=(0.1, 0.3, 0.5, 0.7, 0.9, 0.98), switch_penalties=(1.0, 10.0), radii=(200, 2000), max_events=(1, 3))


@pytest.fixture(scope="module")
def small_set(official_gt):
    gt = {vid: official_gt[vid] for vid in VIDEOS}
    return gt, simulate_scores(gt, SIMULATOR)


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return exit_info.value.code


def test_calibrated_decoding_beats_the_papers_postprocessing_on_held_out_videos(small_set):
    gt, scores = small_set
    report = calibrate(scores, gt, LABELS, PostprocessConfig(), SearchConfig(**SMALL_SEARCH))
    empty = report.figures["empty submission"]
    assert empty == pytest.approx((evaluate({v: [] for v in gt}, gt).map50,) * 2)
    held_out = report.figures["calibrated, held-out (cross-validated)"]
    uncalibrated = report.figures["uncalibrated (the given settings)"]
    assert held_out[0] > uncalibrated[0] + 0.2 and held_out[1] > uncalibrated[1] + 0.2
    config = report.config
    assert config.decoding.enabled and config.segmentation == "label" and config.order == "confidence"
    assert config.decoding.gating.enabled and config.decoding.anatomy.enabled and config.decoding.landmarks.enabled


def test_cross_validation_tunes_each_fold_without_its_own_videos(small_set):
    gt, scores = small_set
    folds = fold_indices(len(VIDEOS), 3, seed=0)
    assert sorted(i for f in folds for i in f) == list(range(len(VIDEOS)))
    prepared = prepare(scores, gt, LABELS, max_fill=2)
    calibrator = Calibrator(prepared, LABELS, PostprocessConfig(), SearchConfig(features=("gating",), **SMALL_SEARCH))
    seen: list[list[int]] = []
    original = calibrator.fit

    def spy(subset):
        seen.append(sorted(subset))
        return original(subset)

    calibrator.fit = spy
    from vce_stream.postprocess.calibrate import cross_validated_events

    events, configs = cross_validated_events(prepared, folds, calibrator.fit, LABELS, scores)
    assert set(events) == set(VIDEOS)
    for held_out, train in zip(folds, seen):
        assert not set(held_out) & set(train)
    assert all(not c.decoding.anatomy.enabled and c.decoding.gating.enabled for c in configs)


def test_calibrate_refuses_mismatched_videos(small_set):
    gt, scores = small_set
    with pytest.raises(InputError, match="different videos"):
        calibrate({vid: scores[vid] for vid in VIDEOS[:3]}, gt, LABELS, PostprocessConfig(), SearchConfig(**SMALL_SEARCH))


@pytest.fixture
def input_files(tmp_path, small_set):
    """The small set as the command reads it: (scores .npz, ground-truth JSON)."""
    gt, scores = small_set
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps({"videos": [{"video_id": v, "events": gt[v]} for v in VIDEOS]}))
    scores_path = tmp_path / "scores.npz"
    save_scores(scores_path, scores, LABELS)
    return scores_path, gt_path


def test_calibrate_command_writes_settings_postprocess_reproduces(tmp_path, input_files, capsys):
    scores_path, gt_path = input_files
    calib = tmp_path / "calib.yaml"
    code = run_cli(["calibrate", str(scores_path), str(gt_path), "--out", str(calib), "--folds", "2", "--rounds", "1", "--metric", "map50"])
    assert code == 0
    table = capsys.readouterr().out
    in_sample = re.search(r"\| calibrated, in-sample \(optimistic\) \| ([0-9.]+) \| ([0-9.]+) \|", table)
    assert in_sample and "held-out (cross-validated)" in table and "empty submission" in table
    text = calib.read_text()
    assert text.startswith("# vce-stream calibrate") and "postprocess:" in text

    events = tmp_path / "events.json"
    assert run_cli(["postprocess", str(scores_path), "--out", str(events), "--config", str(calib)]) == 0
    result = evaluate(read_submission(events), read_submission(gt_path))
    assert result.map50 == pytest.approx(float(in_sample.group(1)), abs=1e-4)
    assert result.map95 == pytest.approx(float(in_sample.group(2)), abs=1e-4)


def test_calibrate_writes_into_a_bundle_that_still_loads(tmp_path, input_files, capsys):
    from vce_stream.model.bundle import load_bundle
    from vce_stream.model.random_bundle import create_random_bundle

    scores_path, gt_path = input_files
    bundle_dir = create_random_bundle(tmp_path / "bundle", arch="tiny", seed=0)
    before = load_bundle(bundle_dir)
    code = run_cli(["calibrate", str(scores_path), str(gt_path), "--out", str(tmp_path / "c.yaml"), "--bundle", str(bundle_dir),
                    "--folds", "2", "--rounds", "1", "--without", "landmarks"])
    assert code == 0
    after = load_bundle(bundle_dir)
    assert after.content_hash == before.content_hash  # weights untouched: engines stay valid
    assert after.postprocess.decoding.enabled and not after.postprocess.decoding.landmarks.enabled
    assert after.postprocess.thresholds != before.postprocess.thresholds


def test_calibrate_command_bad_input_is_one_line_status_2(tmp_path, capsys):
    gt_path = tmp_path / "gt.json"
    gt_path.write_text('{"videos": [{"video_id": "1", "events": [{"start": 0, "end": 5, "label": ["mouth"]}]}]}')
    code = run_cli(["calibrate", str(tmp_path / "missing.npz"), str(gt_path), "--out", str(tmp_path / "c.yaml")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vce-stream: error:") and "missing.npz" in err and "\n" not in err
    assert not (tmp_path / "c.yaml").exists()
    save_scores(tmp_path / "s.npz", {"1": (np.arange(6), np.full((6, len(LABELS)), 0.5, np.float32))}, LABELS)
    code = run_cli(["calibrate", str(tmp_path / "s.npz"), str(gt_path), "--out", str(tmp_path / "c.yaml")])
    assert code == 2
    assert "cross-validation needs at least 5" in capsys.readouterr().err


def test_calibrate_refuses_a_bundle_of_other_labels_before_searching(tmp_path, input_files, capsys):
    from vce_stream.model.bundle import MANIFEST_NAME
    from vce_stream.model.random_bundle import create_random_bundle

    scores_path, gt_path = input_files
    bundle_dir = create_random_bundle(tmp_path / "bundle", labels=["polyp", "ulcer"])
    manifest = (bundle_dir / MANIFEST_NAME).read_bytes()
    code = run_cli(["calibrate", str(scores_path), str(gt_path), "--out", str(tmp_path / "c.yaml"), "--bundle", str(bundle_dir)])
    assert code == 2
    assert "labels differ" in capsys.readouterr().err
    assert not (tmp_path / "c.yaml").exists() and (bundle_dir / MANIFEST_NAME).read_bytes() == manifest

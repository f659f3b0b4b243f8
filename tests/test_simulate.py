"""The score simulator: its separability, error correlation and per-video seeding are what it documents."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from vce_stream.cli import main
from vce_stream.errors import ConfigError
from vce_stream.events.jsonio import frame_range_of, label_events_from_json, label_matrix
from vce_stream.labels import LABELS
from vce_stream.scores import load_scores
from vce_stream.simulate import SimulatorConfig, ar1_noise, separation, simulate_scores, simulate_video


def frame_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    u = mannwhitneyu(scores[truth], scores[~truth]).statistic
    return float(u / (truth.sum() * (~truth).sum()))


def test_frames_cover_the_ground_truth_range_and_probabilities_are_valid(official_gt):
    frames, probs = simulate_video("13", official_gt["13"], SimulatorConfig())
    first, last = frame_range_of(official_gt["13"])
    assert frames[0] == first and frames[-1] == last and np.all(np.diff(frames) == 1)
    assert probs.shape == (frames.size, len(LABELS)) and probs.dtype == np.float32
    assert np.all((probs >= 0) & (probs <= 1))


@pytest.mark.parametrize("auc", [0.7, 0.9, 0.97])
def test_frame_auc_matches_the_target_without_video_offsets(official_gt, auc):
    config = SimulatorConfig(auc_anatomy=auc, correlation_frames=0, video_offset_sd=0.0, seed=3)
    frames, probs = simulate_video("9", official_gt["9"], config)
    truth = label_matrix(label_events_from_json(official_gt["9"]), (int(frames[0]), int(frames[-1])))
    column = LABELS.index("small intestine")
    assert frame_auc(probs[:, column], truth[:, column]) == pytest.approx(auc, abs=0.015)


def test_errors_are_correlated_over_the_configured_number_of_frames():
    rng = np.random.default_rng(0)
    noise = ar1_noise(rng, 200_000, 2, correlation_frames=20.0)
    assert noise.std() == pytest.approx(1.0, abs=0.05)
    lag1 = np.corrcoef(noise[1:, 0], noise[:-1, 0])[0, 1]
    lag20 = np.corrcoef(noise[20:, 0], noise[:-20, 0])[0, 1]
    assert lag1 == pytest.approx(np.exp(-1 / 20), abs=0.01)
    assert lag20 == pytest.approx(np.exp(-1), abs=0.05)
    white = ar1_noise(rng, 100_000, 1, correlation_frames=0.0)
    assert abs(np.corrcoef(white[1:, 0], white[:-1, 0])[0, 1]) < 0.02


def test_separation_gives_the_auc_of_two_unit_normals():
    from scipy.stats import norm

    for auc in (0.6, 0.85, 0.99):
        assert norm.cdf(separation(auc) / np.sqrt(2)) == pytest.approx(auc)


def test_a_videos_scores_do_not_depend_on_the_other_videos(official_gt):
    config = SimulatorConfig(seed=7)
    together = simulate_scores({vid: official_gt[vid] for vid in ("13", "9")}, config)
    alone = simulate_scores({"9": official_gt["9"]}, config)
    assert np.array_equal(together["9"][1], alone["9"][1])
    other_seed = simulate_scores({"9": official_gt["9"]}, SimulatorConfig(seed=8))
    assert not np.array_equal(other_seed["9"][1], alone["9"][1])


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="auc_pathology"):
        SimulatorConfig(auc_pathology=1.0)
    with pytest.raises(ConfigError, match="unknown labels"):
        SimulatorConfig(auc_overrides={"polyps": 0.9})


def test_simulate_command_writes_a_scores_file(tmp_path, official_gt_path, official_gt, capsys):
    gt = tmp_path / "gt.json"
    gt.write_text('{"videos": [{"video_id": "13", "events": [{"start": 0, "end": 9, "label": ["mouth"]}, {"start": 10, "end": 99, "label": ["stomach"]}]}]}')
    config = tmp_path / "sim.yaml"
    config.write_text("auc_pathology: 0.9\ncorrelation_frames: 5\n")
    out = tmp_path / "scores.npz"
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", str(gt), "--out", str(out), "--config", str(config), "--seed", "2"])
    assert exit_info.value.code == 0
    labels, videos = load_scores(out)
    assert labels == LABELS and list(videos) == ["13"]
    assert videos["13"][0].tolist() == list(range(100))
    config.write_text("auc_pathologies: 0.9\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", str(gt), "--out", str(out), "--config", str(config)])
    assert exit_info.value.code == 2
    assert "unknown key" in capsys.readouterr().err

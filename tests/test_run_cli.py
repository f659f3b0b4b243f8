"""`vce-stream run` as users call it: a tiny random model bundle, real files, pipes and exit statuses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vce_stream.cli import main
from vce_stream.events.jsonio import read_submission
from vce_stream.model.random_bundle import create_random_bundle
from vce_stream.synthetic import SyntheticConfig, make_exam


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return create_random_bundle(tmp_path_factory.mktemp("bundle") / "tiny", "tiny", seed=0)


@pytest.fixture(scope="module")
def exam(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("exam")
    make_exam(root / "exam_02.ts", SyntheticConfig(frames=160, width=96, height=96, seed=2), gt_path=root / "gt.json")
    return root / "exam_02.ts"


def cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_run_then_postprocess_on_the_saved_scores_gives_the_identical_json(bundle, exam, tmp_path, capsys):
    out, scores, again = tmp_path / "events.json", tmp_path / "scores.npz", tmp_path / "again.json"
    code, _, err = cli(["run", exam, "--model", bundle, "--out", out, "--save-scores", scores, "--device", "cpu"], capsys)
    assert code == 0
    assert "exam_02: 160 frames" in err and "frames/s" in err
    code, _, _ = cli(["postprocess", scores, "--out", again], capsys)
    assert code == 0
    assert out.read_bytes() == again.read_bytes()
    assert list(read_submission(out)) == ["exam_02"]


def test_options_reach_the_output(bundle, exam, tmp_path, capsys):
    out = tmp_path / "events.json"
    code, follow, err = cli(
        ["run", exam, "--model", bundle, "--out", out, "--video-id", "ukdd_navi_00051", "--segmentation", "label", "--order", "time", "--thresholds", "0.45", "--batch-size", "8", "--follow", "--quiet"],
        capsys,
    )
    assert code == 0 and err == ""
    events = read_submission(out)["ukdd_navi_00051"]
    assert all(len(e["label"]) == 1 for e in events)
    assert [e["start"] for e in events] == sorted(e["start"] for e in events)
    lines = [json.loads(line) for line in follow.splitlines()]
    assert len(lines) == len(events) and all(line["video_id"] == "ukdd_navi_00051" for line in lines)


@pytest.mark.parametrize(
    "make_input,message",
    [
        (lambda d: d / "nope.mp4", "nope.mp4: file not found"),
        (lambda d: (d / "notes.mkv").write_text("not a video\n" * 100) and d / "notes.mkv", "notes.mkv: not a readable video"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "empty: no frame files"),
    ],
)
def test_inputs_that_cannot_start_exit_2_with_one_line_and_no_output(bundle, tmp_path, capsys, make_input, message):
    out = tmp_path / "events.json"
    code, _, err = cli(["run", make_input(tmp_path), "--model", bundle, "--out", out], capsys)
    assert code == 2
    assert err.startswith("vce-stream: error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_a_truncated_video_exits_3_after_writing_flagged_partial_events(bundle, tmp_path, capsys):
    video = tmp_path / "long.mkv"
    make_exam(video, SyntheticConfig(frames=200, width=96, height=96, seed=4))
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    out = tmp_path / "events.json"
    code, _, err = cli(["run", cut, "--model", bundle, "--out", out], capsys)
    assert code == 3
    assert "INCOMPLETE" in err and "vce-stream: error: " in err and "truncated" in err
    data = json.loads(out.read_text())
    assert data["vce_stream"]["incomplete"] is True and 0 < data["vce_stream"]["stopped_at_frame"] < 200
    read_submission(out)  # still a valid submission


@pytest.mark.parametrize(
    "option,message",
    [
        (["--device", "gpu"], "--device gpu: not a device"),
        (["--out", "{exam}/events.json"], "cannot write the event JSON there"),
    ],
)
def test_a_bad_device_or_output_path_exits_2_with_one_line(bundle, exam, tmp_path, capsys, option, message):
    args = ["run", exam, "--model", bundle, "--out", tmp_path / "events.json"] + [o.format(exam=exam) for o in option]
    code, _, err = cli(args, capsys)
    assert code == 2 and err.startswith("vce-stream: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "events.json").exists()


def test_a_missing_bundle_is_bad_input(exam, tmp_path, capsys):
    code, _, err = cli(["run", exam, "--model", tmp_path / "no_bundle", "--out", tmp_path / "e.json"], capsys)
    assert code == 2 and "no_bundle" in err


def test_a_stream_on_stdin_is_scored(bundle, exam, tmp_path):
    out = tmp_path / "events.json"
    with open(exam, "rb") as stdin:
        result = subprocess.run(
            [sys.executable, "-m", "vce_stream", "run", "-", "--format", "mpegts", "--model", str(bundle), "--out", str(out), "--video-id", "live"],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 0, result.stderr
    assert "live: 160 frames" in result.stderr
    assert list(read_submission(out)) == ["live"]


def test_synth_command_writes_an_exam_and_its_ground_truth(tmp_path, capsys):
    code, _, err = cli(["synth", tmp_path / "demo.mkv", "--frames", "120", "--size", "64x48"], capsys)
    assert code == 0 and "120 frames 64x48" in err
    assert list(read_submission(tmp_path / "demo.gt.json")) == ["demo"]


def test_a_config_file_sets_pipeline_and_postprocess_and_typos_are_refused(bundle, exam, tmp_path, capsys):
    good, bad, out = tmp_path / "run.yaml", tmp_path / "bad.yaml", tmp_path / "events.json"
    good.write_text("pipeline:\n  batch_size: 16\n  source:\n    max_damaged_run: 10\npostprocess:\n  order: time\n")
    code, _, _ = cli(["run", exam, "--model", bundle, "--out", out, "--config", good, "--quiet"], capsys)
    assert code == 0
    starts = [e["start"] for e in read_submission(out)["exam_02"]]
    assert starts == sorted(starts)  # order: time
    bad.write_text("pipeline:\n  batch_sise: 16\n")
    code, _, err = cli(["run", exam, "--model", bundle, "--out", tmp_path / "x.json", "--config", bad], capsys)
    assert code == 2 and "unknown key(s) ['batch_sise']" in err


def test_run_with_decoding_writes_what_postprocess_decides_and_marks_live_events(bundle, exam, tmp_path, capsys):
    """With `postprocess.decoding` on, the final file is the whole-video decision (as `postprocess`), and
    `--follow` lines say whether each live event is still provisional."""
    config = tmp_path / "decoding.yaml"
    config.write_text(
        "postprocess:\n  segmentation: label\n  thresholds: 0.45\n  decoding:\n    enabled: true\n"
        "    gating: {enabled: true, gates: 0.5}\n    anatomy: {enabled: true}\n    landmarks: {enabled: true}\n"
    )
    out, scores, again = tmp_path / "events.json", tmp_path / "scores.npz", tmp_path / "again.json"
    code, follow, _ = cli(["run", exam, "--model", bundle, "--out", out, "--save-scores", scores, "--config", config, "--follow", "--quiet"], capsys)
    assert code == 0
    code, _, _ = cli(["postprocess", scores, "--out", again, "--config", config], capsys)
    assert code == 0
    assert out.read_bytes() == again.read_bytes()
    live = [json.loads(line) for line in follow.splitlines()]
    assert live and all(isinstance(r["provisional"], bool) for r in live)
    # Anatomy is one monotone path: each section's events (cut at tuple boundaries) join into one stretch.
    sections = ("mouth", "esophagus", "stomach", "small intestine", "colon")
    pieces: dict[str, list[tuple[int, int]]] = {}
    for e in read_submission(out)["exam_02"]:
        if e["label"][0] in sections:
            pieces.setdefault(e["label"][0], []).append((e["start"], e["end"]))
    assert pieces
    for spans in pieces.values():
        spans.sort()
        assert all(b[0] == a[1] + 1 for a, b in zip(spans, spans[1:]))

"""`vce-stream report` on a real synthetic exam (PyAV decoding, the real pipeline's events and scores)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import av
import pytest

from vce_stream.cli import main
from vce_stream.labels import LANDMARKS, PATHOLOGIES
from vce_stream.synthetic import scored_synthetic_exam
from vce_stream.synthetic import SyntheticConfig, plan_exam, render_frames

EXAM = dict(frames=400, size=96, seed=3)


@pytest.fixture(scope="module")
def exam(tmp_path_factory):
    return scored_synthetic_exam(tmp_path_factory.mktemp("report"), **EXAM)


def plan():
    return plan_exam(SyntheticConfig(frames=EXAM["frames"], width=EXAM["size"], height=EXAM["size"], seed=EXAM["seed"], lesion_rate=8.0))


def cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    return info.value.code, capsys.readouterr().err


def data_of(html: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1))


def test_report_of_a_finished_exam_shows_its_events_and_key_frames(exam, tmp_path, capsys):
    out = tmp_path / "report.html"
    code, err = cli(["report", str(exam.events), str(exam.scores), str(exam.video), "--out", str(out), "--top", "12"], capsys)
    assert code == 0, err
    html = out.read_text()
    data = data_of(html)
    lesions = {(e.start, e.end, e.label) for e in plan().events() if e.label in PATHOLOGIES}
    shown = {(s, e, lane["label"]) for lane in data["lanes"] for s, e, _ in lane["events"]}
    assert lesions and shown == lesions  # the PaletteScorer's events are the ground truth
    landmarks = {(e.start, e.label) for e in plan().events() if e.label in LANDMARKS}
    assert {(m["start"], m["label"]) for m in data["landmarks"]} == landmarks
    assert [s["label"] for s in data["sections"]] == ["mouth", "esophagus", "stomach", "small intestine", "colon"]
    top = re.search(r'<div class="grid" id="top-grid">(.*?)</div>', html, re.S).group(1)
    assert top.count('<img src="data:image/jpeg;base64,') == 12
    assert "times from the source" in html and "no image" not in html


def test_unwritable_output_is_refused_before_any_work(exam, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "report.html"  # its folder would have to be a file
    code, err = cli(["report", str(tmp_path / "missing.json"), str(exam.scores), str(exam.video), "--out", str(out)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "cannot write the report" in err and "missing.json" not in err  # checked first
    code, err = cli(["report", str(exam.events), str(exam.scores), str(exam.video), "--out", str(tmp_path)], capsys)
    assert code == 2 and "is a folder" in err and err.count("\n") == 1


def test_exam_without_events_says_nothing_was_found_and_keeps_the_anatomy_bar(exam, tmp_path, capsys):
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"videos": [{"video_id": "exam", "events": []}]}))
    out = tmp_path / "report.html"
    code, err = cli(["report", str(empty), str(exam.scores), str(exam.video), "--out", str(out)], capsys)
    assert code == 0, err
    html = out.read_text()
    assert "Nothing was found" in html
    assert len(data_of(html)["sections"]) == 5


def test_a_pipe_without_timestamps_gives_frame_indices_only(exam, tmp_path):
    raw = tmp_path / "exam.h264"  # a raw H.264 elementary stream carries no timestamps
    with av.open(str(raw), "w", format="h264") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = EXAM["size"]
        stream.pix_fmt = "yuv420p"
        for image in render_frames(plan()):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    out = tmp_path / "pipe.html"
    with raw.open("rb") as stdin:
        done = subprocess.run(
            [sys.executable, "-m", "vce_stream.cli", "report", str(exam.events), str(exam.scores), "-", "--format", "h264", "--out", str(out)],
            stdin=stdin, capture_output=True, text=True, timeout=120,
        )
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    assert "frame indices only" in html and "times from the source" not in html
    assert "<stdin>" not in html and "&lt;stdin&gt;" in html
    assert "no image" not in html  # decode-order indices match the file's


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda e, s: (e.with_name("nope.json"), s), "file not found"),
        (lambda e, s: (e, e), "not a readable scores file"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(exam, tmp_path, capsys, change, message):
    events, scores = change(exam.events, exam.scores)
    out = tmp_path / "r.html"
    code, err = cli(["report", str(events), str(scores), str(exam.video), "--out", str(out)], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not out.exists()


def test_video_id_absent_from_the_scores_is_refused(exam, tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"videos": [{"video_id": "someone-else", "events": []}]}))
    code, err = cli(["report", str(other), str(exam.scores), str(exam.video), "--out", str(tmp_path / "r.html")], capsys)
    assert code == 2 and "no scores for video 'someone-else'" in err


def test_input_that_breaks_part_way_still_gives_the_page_and_exit_3(exam, tmp_path, capsys):
    cut = tmp_path / "cut.mkv"
    data = exam.video.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])  # the header announces 400 frames; about 240 are there
    out = tmp_path / "cut.html"
    code, err = cli(["report", str(exam.events), str(exam.scores), str(cut), "--out", str(out)], capsys)
    assert code == 3 and "truncated" in err and err.count("\n") == 2  # the summary line, then the error
    html = out.read_text()
    assert "the input broke part way" in html and "no image" in html  # key frames after the cut have none

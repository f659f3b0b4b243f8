"""`vce-stream batch` end to end: a tiny random model bundle, generated exams, real files and processes.

Most runs score in the test process (`--workers 0`) to keep the module fast; the kill test runs the
real command with its worker pool as a subprocess, SIGKILLs it part way, and runs it again.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vce_stream.batch.journal import DONE, FAILED, INCOMPLETE, STARTED, read_journal
from vce_stream.cli import main
from vce_stream.errors import EXIT_BAD_INPUT, EXIT_SOME_FAILED
from vce_stream.events.jsonio import read_submission
from vce_stream.model.bundle import load_bundle
from vce_stream.model.random_bundle import create_random_bundle
from vce_stream.pipeline.run import RunOptions, run_exam
from vce_stream.synthetic import SyntheticConfig, make_exam
from vce_stream.engine.backends.pytorch import torch_scorer

SMALL = {"width": 64, "height": 64}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return create_random_bundle(tmp_path_factory.mktemp("bundle") / "tiny", "tiny", seed=0)


def truncate(path: Path, share: float = 0.6) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * share)])
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Three good exams (two videos, one frame folder), one unreadable file, one truncated video."""
    root = tmp_path_factory.mktemp("archive")
    make_exam(root / "site_a" / "exam_1.mkv", SyntheticConfig(frames=120, seed=1, **SMALL))
    make_exam(root / "site_b" / "exam_2", SyntheticConfig(frames=100, seed=2, **SMALL))
    make_exam(root / "exam_3.mp4", SyntheticConfig(frames=150, seed=3, **SMALL))
    (root / "broken.mp4").write_bytes(b"\x00not a video" * 200)
    make_exam(root / "cut.mkv", SyntheticConfig(frames=150, seed=4, **SMALL))
    truncate(root / "cut.mkv")
    return root


GOOD = {"site_a/exam_1.mkv": "exam_1", "site_b/exam_2": "exam_2", "exam_3.mp4": "exam_3"}


def cli(args: list, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def batch(archive: Path, bundle: Path, out: Path, capsys, *extra) -> tuple[int, str, str]:
    return cli(["batch", archive, "--model", bundle, "--out", out, "--workers", 0, "--threads", 1, *extra], capsys)


def outputs(out: Path) -> dict[str, bytes]:
    """Every output a batch leaves for users, by relative path (the journal and timings aside)."""
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in (out / "exams").iterdir()}
    files["submission.json"] = (out / "submission.json").read_bytes()
    return files


def summary_rows(out: Path) -> dict[str, dict]:
    with open(out / "summary.csv", newline="") as handle:
        return {row["exam"]: row for row in csv.DictReader(handle)}


def starts(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in read_journal(out):
        if record["event"] == STARTED:
            counts[record["exam"]] = counts.get(record["exam"], 0) + 1
    return counts


@pytest.fixture(scope="module")
def first_run(archive, bundle, tmp_path_factory):
    """One batch over the archive, shared by the tests that only read its outputs."""
    out = tmp_path_factory.mktemp("first") / "out"
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in ["batch", archive, "--model", bundle, "--out", out, "--workers", 0, "--threads", 1]])
    return out, info.value.code


def test_good_exams_are_written_and_the_broken_ones_reported(first_run, capsys):
    out, code = first_run
    assert code == EXIT_SOME_FAILED
    rows = summary_rows(out)
    assert {k: rows[k]["status"] for k in rows} == {**dict.fromkeys(GOOD, DONE), "broken.mp4": FAILED, "cut.mkv": INCOMPLETE}
    assert "not a readable video" in rows["broken.mp4"]["error"] and "truncated" in rows["cut.mkv"]["error"]
    for key, video_id in GOOD.items():
        assert list(read_submission(out / "exams" / f"{video_id}.json")) == [video_id]
        assert int(rows[key]["frames"]) == {"exam_1": 120, "exam_2": 100, "exam_3": 150}[video_id]
    assert not (out / "exams" / "broken.json").exists()
    combined = json.loads((out / "submission.json").read_text())
    assert list(read_submission(out / "submission.json")) == ["cut", "exam_3", "exam_1", "exam_2"]  # archive order
    assert combined["vce_stream"] == {"failed": ["broken"], "incomplete": ["cut"]}
    cut = json.loads((out / "exams" / "cut.json").read_text())
    assert cut["vce_stream"]["incomplete"] is True  # the partial events are flagged as `run` flags them


def test_the_combined_submission_copies_each_exam_verbatim(first_run):
    out, _ = first_run
    combined = json.loads((out / "submission.json").read_text())["videos"]
    for video in combined:
        (alone,) = json.loads((out / "exams" / f"{video['video_id']}.json").read_text())["videos"]
        assert video == alone  # same events, same order (the ranking), same scores


def test_an_exam_scored_by_batch_equals_vce_stream_run(first_run, archive, bundle, tmp_path):
    out, _ = first_run
    model = load_bundle(bundle)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scorer = torch_scorer(model, "cpu")
        options = RunOptions(video_id="exam_1", preprocess=model.preprocess, postprocess=model.postprocess)
        run_exam(archive / "site_a" / "exam_1.mkv", scorer, tmp_path / "run.json", options)
    finally:
        torch.set_num_threads(threads)
    assert (tmp_path / "run.json").read_bytes() == (out / "exams" / "exam_1.json").read_bytes()


def test_a_rerun_keeps_finished_exams_and_retries_the_others(archive, bundle, tmp_path, capsys):
    out = tmp_path / "out"
    assert batch(archive, bundle, out, capsys)[0] == EXIT_SOME_FAILED
    first = outputs(out)
    code, table, err = batch(archive, bundle, out, capsys)
    assert code == EXIT_SOME_FAILED
    assert "3 kept from earlier runs, 2 to score" in err
    assert starts(out) == {**dict.fromkeys(GOOD, 1), "broken.mp4": 2, "cut.mkv": 2}
    assert outputs(out) == first
    assert "exam_3.mp4" in table and "failed" in table
    code, _, err = batch(archive, bundle, out, capsys, "--no-retry-failed")
    assert code == EXIT_SOME_FAILED and "5 kept from earlier runs, 0 to score" in err
    assert starts(out) == {**dict.fromkeys(GOOD, 1), "broken.mp4": 2, "cut.mkv": 2}
    assert outputs(out) == first


def test_a_deleted_or_edited_output_is_scored_again(archive, bundle, tmp_path, capsys):
    out = tmp_path / "out"
    batch(archive, bundle, out, capsys)
    first = outputs(out)
    (out / "exams" / "exam_2.json").unlink()
    (out / "exams" / "exam_3.json").write_text('{"videos": []}\n')
    batch(archive, bundle, out, capsys, "--no-retry-failed")
    assert starts(out) == {"site_a/exam_1.mkv": 1, "site_b/exam_2": 2, "exam_3.mp4": 2, "broken.mp4": 1, "cut.mkv": 1}
    assert outputs(out) == first
    reasons = {r["exam"]: r["reason"] for r in read_journal(out) if r["event"] == STARTED}
    assert reasons["site_b/exam_2"] == reasons["exam_3.mp4"] == "output missing or changed"


def test_changed_settings_or_a_changed_exam_are_scored_again(archive, bundle, tmp_path, capsys):
    work = tmp_path / "archive"
    make_exam(work / "a.mkv", SyntheticConfig(frames=100, seed=5, **SMALL))
    make_exam(work / "b.mkv", SyntheticConfig(frames=100, seed=6, **SMALL))
    out = tmp_path / "out"
    assert batch(work, bundle, out, capsys)[0] == 0
    assert batch(work, bundle, out, capsys, "--thresholds", "0.3")[0] == 0
    make_exam(work / "b.mkv", SyntheticConfig(frames=110, seed=7, **SMALL))
    os.utime(work / "b.mkv", ns=(1, 1))  # a different mtime even on coarse clocks
    assert batch(work, bundle, out, capsys, "--thresholds", "0.3")[0] == 0
    reasons = [(r["exam"], r["reason"]) for r in read_journal(out) if r["event"] == STARTED]
    assert reasons == [("a.mkv", "new"), ("b.mkv", "new"), ("a.mkv", "settings changed"), ("b.mkv", "settings changed"), ("b.mkv", "input changed")]
    assert summary_rows(out)["b.mkv"]["frames"] == "110"


def test_an_archive_without_exams_a_bad_bundle_or_device_is_refused_before_anything_runs(bundle, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = batch(tmp_path / "empty", bundle, tmp_path / "out", capsys)
    assert code == EXIT_BAD_INPUT and "no exams found" in err
    code, _, err = batch(tmp_path / "empty", tmp_path / "no_bundle", tmp_path / "out2", capsys)
    assert code == EXIT_BAD_INPUT and "no_bundle" in err and not (tmp_path / "out2").exists()
    code, _, err = batch(tmp_path / "empty", bundle, tmp_path / "out3", capsys, "--device", "gpu")
    assert code == EXIT_BAD_INPUT and "--device gpu: not a device" in err and not (tmp_path / "out3").exists()


def test_hostile_exam_names_stay_inside_outdir(bundle, tmp_path, capsys):
    work = tmp_path / "archive"
    make_exam(work / "..evil.mkv", SyntheticConfig(frames=100, seed=8, **SMALL))
    make_exam(work / "we ird;$(rm -rf x)" / "frames", SyntheticConfig(frames=100, seed=9, **SMALL))
    make_exam(work / "-rf.mkv", SyntheticConfig(frames=100, seed=10, **SMALL))
    out = tmp_path / "out"
    assert batch(work, bundle, out, capsys)[0] == 0
    written = sorted(p.name for p in (out / "exams").iterdir())
    assert len(written) == 2  # "..evil.mkv" is hidden and ignored; the other two are written
    assert all(not n.startswith((".", "-")) and set(n) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") for n in written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archive", "out"]
    assert set(read_submission(out / "submission.json")) == {"-rf", "frames"}


def test_a_killed_batch_resumes_to_the_outputs_of_an_uninterrupted_run(bundle, tmp_path, capsys):
    work = tmp_path / "archive"
    for i in range(5):
        make_exam(work / f"exam_{i}.mkv", SyntheticConfig(frames=200, width=96, height=96, seed=20 + i))
    reference = tmp_path / "reference"
    assert batch(work, bundle, reference, capsys)[0] == 0
    out = tmp_path / "out"
    command = [sys.executable, "-m", "vce_stream", "batch", str(work), "--model", str(bundle), "--out", str(out), "--workers", "1", "--threads", "1", "-q"]
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while not any(r["event"] == DONE for r in _records(out)):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no exam finished in time"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # the driver, as `kill -9` would
        proc.wait(30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its worker, if still busy with an exam
    done_before = {r["exam"] for r in read_journal(out) if r["event"] == DONE}
    assert 1 <= len(done_before) < 5, "the kill did not land part way"
    for path in (out / "exams").glob("*.json"):
        read_submission(path)  # whatever is there is whole
    code, _, err = batch(work, bundle, out, capsys)  # the same command again (in this process: faster)
    assert code == 0, err
    assert outputs(out) == outputs(reference)
    assert not list(out.rglob(".*.tmp"))
    counts = starts(out)
    assert all(counts[key] == 1 for key in done_before)  # finished exams were not scored again
    second_run = read_journal(out)[[i for i, r in enumerate(read_journal(out)) if r["event"] == "run"][1] :]
    assert {r["exam"] for r in second_run if r["event"] == STARTED} == {f"exam_{i}.mkv" for i in range(5)} - done_before
    assert {r["reason"] for r in second_run if r["event"] == STARTED} <= {"new", "unfinished"}  # the one in hand, and the rest


def _records(out: Path) -> list[dict]:
    try:
        return read_journal(out)
    except FileNotFoundError:
        return []


def test_batch_writes_a_review_page_and_embeddings_per_exam_and_a_report_index(archive, bundle, tmp_path, capsys):
    from vce_stream.embeddings.store import read_embeddings

    out = tmp_path / "out"
    code, _, _ = batch(archive, bundle, out, capsys, "--report", "--save-embeddings")
    assert code == EXIT_SOME_FAILED  # the archive holds a broken and a truncated exam
    frames = {row["video_id"]: int(row["frames"]) for row in summary_rows(out).values()}
    for exam in ("exam_1", "exam_2", "exam_3"):
        assert "reading aid" in (out / "reports" / f"{exam}.html").read_text(encoding="utf-8").lower()
        embeddings = read_embeddings(out / "embeddings" / f"{exam}.emb")
        assert len(embeddings) == frames[exam] > 0 and embeddings.complete
    assert not (out / "reports" / "broken.html").exists()
    index = (out / "reports" / "index.html").read_text(encoding="utf-8")
    assert all(f'href="{exam}.html"' in index for exam in ("exam_1", "exam_2", "exam_3"))
    assert "broken" in index and 'href="broken.html"' not in index

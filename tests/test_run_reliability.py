"""Issue 12, faults 2, 3, 6 and 7 as a user meets them through `vce-stream run`: an output that would
destroy an input, a model that returns NaN, a run killed with SIGTERM, an output that cannot be written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vce_stream.cli import main
from vce_stream.errors import OutputError
from vce_stream.model.random_bundle import create_random_bundle
from vce_stream.pipeline.run import RunOptions, run_exam
from vce_stream.sinks import Sink
from vce_stream.synthetic import PaletteScorer, SyntheticConfig, make_exam


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return create_random_bundle(tmp_path_factory.mktemp("bundle") / "tiny", "tiny", seed=0)


@pytest.fixture(scope="module")
def exams(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exams")
    video, folder, stream = root / "exam.mkv", root / "frames", root / "live.ts"
    make_exam(video, SyntheticConfig(frames=120, width=64, height=64, seed=1), gt_path=root / "video.gt.json")
    make_exam(folder, SyntheticConfig(frames=100, width=64, height=64, seed=2), gt_path=root / "folder.gt.json")
    make_exam(stream, SyntheticConfig(frames=200, width=64, height=64, seed=3), gt_path=root / "stream.gt.json")
    return {"video": video, "folder": folder, "stream": stream}


def cli(args: list, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return info.value.code, capsys.readouterr().err


def snapshot(path: Path) -> dict[str, bytes]:
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


@pytest.mark.parametrize(
    "case",
    ["out is the video", "out is a link to the video", "out inside the frame folder", "scores inside the bundle", "out equals scores"],
)
def test_an_output_that_would_overwrite_an_input_or_another_output_is_refused_before_the_model_loads(case, bundle, exams, tmp_path, capsys):
    video, folder = exams["video"], exams["folder"]
    link = tmp_path / "link.mkv"
    link.symlink_to(video)
    same = tmp_path / "same.json"
    exam, out, scores = {
        "out is the video": (video, video, None),
        "out is a link to the video": (video, link, None),
        "out inside the frame folder": (folder, folder / "frame_000003.png", None),
        "scores inside the bundle": (video, tmp_path / "e.json", bundle / "weights.safetensors"),
        "out equals scores": (video, same, same),
    }[case]
    before = {name: snapshot(p) for name, p in (("video", video), ("folder", folder), ("bundle", bundle))}
    args = ["run", exam, "--model", bundle, "--out", out, "--quiet"] + (["--save-scores", scores] if scores else [])
    code, err = cli(args, capsys)
    assert code == 2 and err.startswith("vce-stream: error: ") and err.count("\n") == 1
    assert {name: snapshot(p) for name, p in (("video", video), ("folder", folder), ("bundle", bundle))} == before
    assert not same.exists()


def test_an_output_folder_that_cannot_take_a_file_is_refused_before_scoring(bundle, exams, capsys):
    # /proc refuses new files even to root, as a read-only mount or a full disk would.
    code, err = cli(["run", exams["video"], "--model", bundle, "--out", "/proc/self/vce-events.json", "--quiet"], capsys)
    assert code == 2 and "cannot write the event JSON there" in err and err.count("\n") == 1


def nan_bundle(tmp_path: Path) -> Path:
    """A valid tiny bundle whose classifier weights are NaN: a broken model, saved as any bundle is."""
    from vce_stream.model.bundle import save_bundle
    from vce_stream.model.classifier import build_classifier
    from vce_stream.model.config import arch_preset

    arch = arch_preset("tiny")
    model = build_classifier(arch, seed=0).eval()
    weight = dict(model.named_parameters())[[n for n, _ in model.named_parameters()][-2]]
    with torch.no_grad():
        weight.fill_(float("nan"))
    return save_bundle(tmp_path / "nan-bundle", model, arch)


def test_a_model_that_returns_nan_stops_the_exam_with_exit_3_naming_the_frame(bundle, exams, tmp_path, capsys):
    broken = nan_bundle(tmp_path)
    out = tmp_path / "events.json"
    code, err = cli(["run", exams["video"], "--model", broken, "--out", out, "--quiet"], capsys)
    assert code == 3 and "frame 0:" in err and "finite numbers in [0, 1]" in err and err.count("\n") == 1
    block = json.loads(out.read_text())["vce_stream"]
    assert block["incomplete"] and block["stopped_at_frame"] == 0


class BreaksAtFrameScorer(PaletteScorer):
    """A model double (the palette scorer) that returns a probability above 1 from frame `bad` on."""

    def __init__(self, bad: int) -> None:
        super().__init__()
        self.bad, self.seen = bad, 0

    def score(self, frames):
        probs = np.array(super().score(frames))
        rows = np.arange(self.seen, self.seen + len(probs))
        probs[rows >= self.bad] = 1.5
        self.seen += len(probs)
        return probs


def test_a_scorer_output_outside_0_1_keeps_the_events_decided_before_it(exams, tmp_path):
    out = tmp_path / "events.json"
    outcome = run_exam(exams["video"], BreaksAtFrameScorer(bad=40), out, RunOptions())
    # The message names the first bad frame; its whole batch (32..63) is refused, so the exam stops at 32.
    assert outcome.incomplete and outcome.exit_code == 3 and "frame 40:" in outcome.error and "is 1.5" in outcome.error
    data = json.loads(out.read_text())
    assert data["vce_stream"]["stopped_at_frame"] == 32
    assert all(e["end"] < 32 for e in data["videos"][0]["events"])


class DiskFullSink(Sink):
    """Simulated full disk (a condition this machine cannot create): its write fails with ENOSPC."""

    what = "extra output"

    def __init__(self, path: Path) -> None:
        self.path = path

    def targets(self):
        return (self.path,)

    def close(self, result):
        raise OSError(28, "No space left on device")


def test_a_write_that_fails_at_the_end_is_one_error_and_the_other_outputs_are_kept_simulated_disk_full(exams, tmp_path):
    out = tmp_path / "events.json"
    with pytest.raises(OutputError) as info:
        run_exam(exams["video"], PaletteScorer(), out, RunOptions(), extra_sinks=[DiskFullSink(tmp_path / "extra.bin")])
    assert "No space left on device" in str(info.value) and info.value.exit_code == 5
    assert json.loads(out.read_text())["videos"][0]["video_id"] == "exam"


def test_sigterm_keeps_the_decided_events_like_sigint_and_exits_143(bundle, exams, tmp_path):
    """A live pipe that stops feeding, then SIGTERM (what kill, timeout and schedulers send)."""
    out = tmp_path / "events.json"
    data = exams["stream"].read_bytes()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [sys.executable, "-m", "vce_stream", "run", "-", "--format", "mpegts", "--model", str(bundle), "--out", str(out), "--batch-size", "8"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    process.stdin.write(data[: len(data) * 3 // 4])
    process.stdin.flush()
    # "engine: ..." is printed once the model is loaded and the exam starts streaming.
    first_line = process.stderr.readline()
    assert first_line.startswith(b"engine:"), first_line
    time.sleep(4)  # the part-filled batches of the paused pipe are scored after pipeline.flush_after (1 s)
    process.send_signal(signal.SIGTERM)
    rest = process.stderr.read()
    process.wait(timeout=120)
    assert process.returncode == 143, rest.decode()
    assert b"terminated" in rest
    block = json.loads(out.read_text())["vce_stream"]
    assert block["incomplete"] and block["frames"] > 0


def _workers_die_after(monkeypatch, frames: int) -> None:
    """Every frame prepared after the first `frames` raises MemoryError (simulated)."""
    import threading

    import vce_stream.pipeline.reader as reader_module

    real, lock, calls = reader_module.prepare_frame, threading.Lock(), 0

    def dies(frame, cfg, *args, **kwargs):
        nonlocal calls
        with lock:
            calls += 1
            failing = calls > frames
        if failing:
            raise MemoryError("simulated: the worker ran out of memory")
        return real(frame, cfg, *args, **kwargs)

    monkeypatch.setattr(reader_module, "prepare_frame", dies)


def test_a_decode_worker_that_dies_on_the_first_frame_exits_2_and_writes_nothing_simulated(bundle, exams, tmp_path, capsys, monkeypatch):
    _workers_die_after(monkeypatch, 0)
    out = tmp_path / "events.json"
    code, err = cli(["run", exams["folder"], "--model", bundle, "--out", out, "--workers", 2, "--quiet"], capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert ": frame 0: the decode worker failed (MemoryError: simulated" in err and not out.exists()


def test_a_decode_worker_that_dies_mid_exam_exits_3_naming_the_frame_and_keeps_the_events_simulated(bundle, exams, tmp_path, capsys, monkeypatch):
    _workers_die_after(monkeypatch, 50)
    out = tmp_path / "events.json"
    code, err = cli(["run", exams["folder"], "--model", bundle, "--out", out, "--workers", 2, "--quiet"], capsys)
    assert code == 3 and err.count("\n") == 1 and "Traceback" not in err
    assert "the decode worker failed (MemoryError: simulated: the worker ran out of memory)" in err
    named = int(err.split(": frame ")[1].split(":")[0])
    block = json.loads(out.read_text())["vce_stream"]
    assert block["incomplete"] and block["stopped_at_frame"] == named and 0 < named <= 50  # the first frame not scored

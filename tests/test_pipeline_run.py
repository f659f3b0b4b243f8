"""`run_exam` end to end on synthetic exams with a real (colour-reading) scorer."""

from __future__ import annotations

import io
import json
import signal
from pathlib import Path

import numpy as np
import pytest

from vce_stream.config import from_dict
from vce_stream.postprocess.config import PostprocessConfig
from vce_stream.errors import EXIT_BAD_INPUT, InputError
from vce_stream.events.jsonio import read_submission, submission_dict
from vce_stream.metrics.temporal_map import evaluate
from vce_stream.pipeline.run import PipelineConfig, RunOptions, run_exam
from vce_stream.scores import load_scores
from vce_stream.synthetic import PaletteScorer, SyntheticConfig, make_exam
from vce_stream.postprocess.filters import offline_events


@pytest.fixture(scope="module")
def exam(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("exam")
    video, gt = root / "exam_01.mkv", root / "exam_01.gt.json"
    make_exam(video, SyntheticConfig(frames=400, width=160, height=160, seed=3, lesion_rate=8), gt_path=gt)
    return video, gt


def tuple_events(path: Path) -> dict[str, set]:
    return {vid: {(e["start"], e["end"], tuple(e["label"])) for e in events} for vid, events in read_submission(path).items()}


def test_run_reproduces_the_ground_truth_of_a_synthetic_exam(exam, tmp_path):
    video, gt = exam
    out = tmp_path / "events.json"
    summary = run_exam(video, PaletteScorer(), out)
    assert summary.frames == 400 and not summary.incomplete and summary.exit_code == 0
    assert tuple_events(out) == tuple_events(gt)
    result = evaluate(read_submission(out), read_submission(gt))
    assert result.map50 == 1.0 and result.map95 == 1.0
    assert "vce_stream" not in json.loads(out.read_text())  # complete runs carry no incomplete block


def test_events_equal_the_offline_reference_on_the_saved_scores(exam, tmp_path):
    video, _ = exam
    out, scores = tmp_path / "events.json", tmp_path / "scores.npz"
    post = PostprocessConfig(order="time", segmentation="label")
    run_exam(video, PaletteScorer(), out, RunOptions(save_scores=str(scores), postprocess=post))
    labels, videos = load_scores(scores)
    frames, probs = videos["exam_01"]
    assert frames.tolist() == list(range(400)) and probs.shape == (400, 17)
    reference = offline_events(frames, probs, post.thresholds_for(17), post.temporal, labels)
    expected = submission_dict({"exam_01": reference}, segmentation="label", order="time", frame_ranges={"exam_01": (0, 399)}, labels=labels)
    assert json.loads(out.read_text()) == json.loads(json.dumps(expected))


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_the_batch_size_does_not_change_the_output(exam, tmp_path, batch_size):
    video, gt = exam
    out = tmp_path / "events.json"
    run_exam(video, PaletteScorer(), out, RunOptions(pipeline=PipelineConfig(batch_size=batch_size, queue_depth=1)))
    assert tuple_events(out) == tuple_events(gt)


class CountingScorer(PaletteScorer):
    """PaletteScorer that counts the frames it has scored (to see when events come out)."""

    scored = 0

    def score(self, frames):
        self.scored += frames.shape[0]
        return super().score(frames)


class RecordingStream(io.StringIO):
    def __init__(self, scorer: CountingScorer) -> None:
        super().__init__()
        self.scorer = scorer
        self.scored_at_write: list[int] = []

    def write(self, text: str) -> int:
        self.scored_at_write.append(self.scorer.scored)
        return super().write(text)


def test_follow_prints_each_event_while_the_exam_streams(exam, tmp_path):
    video, _ = exam
    scorer = CountingScorer()
    stream = RecordingStream(scorer)
    out = tmp_path / "events.json"
    run_exam(video, scorer, out, RunOptions(pipeline=PipelineConfig(batch_size=16), postprocess=PostprocessConfig(segmentation="label")), follow=stream)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    written = read_submission(out)["exam_01"]
    assert sorted((e["start"], e["end"], e["label"][0]) for e in lines) == sorted((e["start"], e["end"], e["label"][0]) for e in written)
    assert all(line["video_id"] == "exam_01" for line in lines)
    assert min(stream.scored_at_write) < 100  # the first event came out long before the exam ended


def test_a_truncated_exam_writes_its_decided_events_flagged_incomplete(exam, tmp_path):
    video, _ = exam
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(video.read_bytes()[: int(video.stat().st_size * 0.5)])
    out, scores = tmp_path / "events.json", tmp_path / "scores.npz"
    summary = run_exam(cut, PaletteScorer(), out, RunOptions(save_scores=str(scores)))
    assert summary.incomplete and summary.exit_code == 3 and "truncated" in summary.error
    data = json.loads(out.read_text())
    block = data["vce_stream"]
    assert block["incomplete"] is True and block["stopped_at_frame"] == summary.last_frame + 1
    assert 0 < summary.frames <= summary.last_frame + 1 < 400
    assert "cut.mkv" in block["error"]
    _, videos = load_scores(scores)
    frames, probs = videos["cut"]
    post = PostprocessConfig()
    reference = offline_events(frames, probs, post.thresholds_for(17), post.temporal, PaletteScorer().labels)
    expected = submission_dict({"cut": reference}, frame_ranges={"cut": (int(frames[0]), int(frames[-1]))})
    assert data["videos"] == json.loads(json.dumps(expected))["videos"]
    assert "INCOMPLETE, stopped at frame" in summary.line()


class InterruptingScorer(PaletteScorer):
    """PaletteScorer that sends this process a real SIGINT (a user's Ctrl-C) at its third batch."""

    calls = 0

    def score(self, frames):
        self.calls += 1
        if self.calls == 3:
            signal.raise_signal(signal.SIGINT)
        return super().score(frames)


def test_an_interrupted_run_still_writes_what_it_decided(exam, tmp_path):
    video, _ = exam
    out = tmp_path / "events.json"
    with pytest.raises(KeyboardInterrupt):
        run_exam(video, InterruptingScorer(), out, RunOptions(pipeline=PipelineConfig(batch_size=50)))
    block = json.loads(out.read_text())["vce_stream"]
    assert block["incomplete"] and block["frames"] == 100 and block["stopped_at_frame"] == 100


def test_decoding_without_saved_scores_writes_the_same_events_as_with_them(exam, tmp_path):
    """The whole-video decision keeps the probabilities in memory whether or not they are also saved."""
    video, _ = exam
    post = from_dict(PostprocessConfig, {"segmentation": "label", "decoding": {"enabled": True}}, where="test")
    plain, saved = tmp_path / "plain.json", tmp_path / "saved.json"
    run_exam(video, PaletteScorer(), plain, RunOptions(postprocess=post))
    run_exam(video, PaletteScorer(), saved, RunOptions(postprocess=post, save_scores=str(tmp_path / "scores.npz")))
    assert plain.read_bytes() == saved.read_bytes()
    assert read_submission(plain)["exam_01"]


@pytest.mark.parametrize("target", ["events", "scores"])
def test_an_output_that_cannot_be_written_is_refused_before_scoring(exam, tmp_path, target):
    video, _ = exam
    blocker = tmp_path / "a_file"
    blocker.write_text("in the way")
    scorer = CountingScorer()
    out = blocker / "events.json" if target == "events" else tmp_path / "events.json"
    options = RunOptions(save_scores=str(blocker / "scores.npz") if target == "scores" else None)
    with pytest.raises(InputError, match="a_file/.*: cannot write the .* there") as info:
        run_exam(video, scorer, out, options)
    assert info.value.exit_code == EXIT_BAD_INPUT and scorer.scored == 0


def test_a_frame_folder_with_a_galar_csv_runs_on_csv_indices(tmp_path):
    folder, gt, csv = tmp_path / "7", tmp_path / "7.gt.json", tmp_path / "7.csv"
    make_exam(folder, SyntheticConfig(frames=150, width=96, height=96, seed=5), gt_path=gt, step=5, ext="PNG", labels_csv=csv)
    out = tmp_path / "events.json"
    summary = run_exam(folder, PaletteScorer(), out, RunOptions(labels_csv=str(csv)))
    assert (summary.first_frame, summary.last_frame) == (0, 149)
    assert tuple_events(out) == tuple_events(gt)


def test_an_input_without_frames_writes_nothing_and_is_bad_input(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "events.json"
    with pytest.raises(InputError) as info:
        run_exam(tmp_path / "empty", PaletteScorer(), out)
    assert info.value.exit_code == EXIT_BAD_INPUT and not out.exists()


def test_video_id_option_names_the_video(exam, tmp_path):
    video, _ = exam
    out = tmp_path / "events.json"
    summary = run_exam(video, PaletteScorer(), out, RunOptions(video_id="ukdd_navi_00051"))
    assert summary.video_id == "ukdd_navi_00051" and list(read_submission(out)) == ["ukdd_navi_00051"]
    assert np.isfinite(summary.fps) and summary.fps > 0


def test_events_come_out_while_the_pipe_is_still_open(tmp_path):
    """A live recording: the first events are printed before the writer has sent the rest of the exam."""
    import os
    import threading

    from vce_stream.pipeline.run import stream_exam
    from vce_stream.sources import SourceConfig, VideoSource

    video = tmp_path / "live.ts"
    make_exam(video, SyntheticConfig(frames=300, width=96, height=96, seed=1))
    data = video.read_bytes()
    first_event = threading.Event()
    pipe_closed = threading.Event()
    read_fd, write_fd = os.pipe()

    def record() -> None:  # the recorder: 60% of the exam, then wait until an event shows up, then the rest
        with open(write_fd, "wb") as writer:
            writer.write(data[: int(len(data) * 0.6)])
            writer.flush()
            first_event.wait(timeout=60)
            writer.write(data[int(len(data) * 0.6) :])
        pipe_closed.set()

    class Follow(io.StringIO):
        open_at_first_line: bool | None = None

        def write(self, text: str) -> int:
            if self.open_at_first_line is None:
                self.open_at_first_line = not pipe_closed.is_set()
            first_event.set()
            return super().write(text)

    follow = Follow()
    threading.Thread(target=record, daemon=True).start()
    with open(read_fd, "rb") as stdin:
        source = VideoSource("-", SourceConfig(container_format="mpegts"), stdin=stdin)
        summary = stream_exam(source, PaletteScorer(), tmp_path / "events.json", RunOptions(pipeline=PipelineConfig(batch_size=8)), follow=follow)
    assert follow.open_at_first_line is True
    assert summary.frames == 300 and not summary.incomplete

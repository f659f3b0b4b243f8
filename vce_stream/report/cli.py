"""`vce-stream report EVENTS.json SCORES.npz INPUT --out OUT.html`: the review page of a finished exam.

The events come from the event JSON `run` wrote, the per-frame probabilities from its `--save-scores`
file, and the images from INPUT, decoded once. Since every probability is known before decoding starts,
the frames that can appear in the page are known too (`thumbnails.needed_frames`, plus the first frame
of each decoded section and each landmark event), and only those are prepared and encoded; the others
are decoded and dropped. The same `KeyFrameCollector` that `run --report` feeds while streaming makes
the lists, fed with just those frames (a top-K over a subset that holds the whole exam's top K is the
same top K).

Bad input, before any work: an output that cannot be written (exit 2, nothing read), an event or scores
file that is missing or malformed, a video id in one and not the other. A pipe or a source without
timestamps gives a page with frame indices only (it says so); an exam without events gives a page that
says nothing was found and still shows the anatomy bar. An INPUT that breaks part way still gives the
page (key frames after the break have no image), exit 3.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from vce_stream.errors import EXIT_INCOMPLETE, InputError, SubmissionError, VceError
from vce_stream.events.event import Event
from vce_stream.labels import RARE_VISION
from vce_stream.output_paths import check_outputs
from vce_stream.report.thumbnails import KeyFrameCollector, KeyFrames, KeyFrameSettings, needed_frames

PUSH_BATCH = 32  # prepared frames handed to the collector at once


def read_exam_events(path: str | os.PathLike[str], video_id: str | None) -> tuple[str, list[Event], dict]:
    """(video id, its single-label events with scores, the file's `vce_stream` block or {}) from an event JSON.

    The file is checked as the scorer checks it (`parse_submission`); `score` keys are kept where present.
    """
    from vce_stream.events.jsonio import parse_submission

    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise SubmissionError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SubmissionError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise SubmissionError(f"{path}: cannot read ({exc.strerror or exc})") from None
    videos = parse_submission(data, str(path))
    if video_id is None:
        if len(videos) != 1:
            raise SubmissionError(f"{path}: holds {len(videos)} videos; choose one with --video-id ({', '.join(list(videos)[:5])})")
        video_id = next(iter(videos))
    if video_id not in videos:
        raise SubmissionError(f"{path}: no video {video_id!r} (it holds {', '.join(list(videos)[:5]) or 'none'})")
    raw = next(v for v in data["videos"] if str(v["video_id"]) == video_id)["events"]
    events = []
    for item in raw:
        score = item.get("score", 0.0)
        score = float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) and np.isfinite(score) else 0.0
        for name in item["label"]:
            events.append(Event(int(item["start"]), int(item["end"]), name, score))
    block = data.get("vce_stream") if isinstance(data.get("vce_stream"), dict) else {}
    return video_id, events, block


def anatomy_path_of(probs: np.ndarray, labels: Sequence[str]) -> np.ndarray | None:
    """The decoded monotone section path of every row (the decoder's default settings), or None without the five sections."""
    from vce_stream.postprocess.anatomy import monotone_viterbi, section_emissions
    from vce_stream.postprocess.config import AnatomyConfig
    from vce_stream.postprocess.decode import anatomy_columns

    columns = anatomy_columns(labels)
    if columns is None or probs.shape[0] == 0:
        return None
    settings = AnatomyConfig()
    return monotone_viterbi(section_emissions(probs[:, columns], settings.eps), settings.switch_penalty)


def section_starts(path: np.ndarray | None, frames: np.ndarray) -> list[int]:
    if path is None or path.size == 0:
        return []
    rows = np.concatenate([[0], np.flatnonzero(np.diff(path)) + 1])
    return [int(frames[r]) for r in rows]


@dataclass(frozen=True)
class ImageScan:
    """What decoding INPUT gave: the key frames, the source's counts, its frame rate, and a break."""

    key_frames: KeyFrames
    found: int  # wanted frames seen in INPUT
    wanted: int
    damaged: int
    missing: int
    untimed: int
    fps: float | None
    error: str | None


def scan_images(
    input: str,
    frames: np.ndarray,
    probs: np.ndarray,
    labels: Sequence[str],
    settings: KeyFrameSettings,
    pinned: Sequence[int],
    *,
    source_config=None,
    labels_csv: str | None = None,
    preprocess=None,
) -> ImageScan:
    """Decode INPUT once; prepare and hand to a KeyFrameCollector only the frames the page can show."""
    from vce_stream.sources.preprocess import PreprocessConfig
    from vce_stream.sources import FrameFolderSource, SourceConfig, StreamBroken, open_source
    from vce_stream.sources.preprocess import prepare_frame

    preprocess = preprocess or PreprocessConfig()
    source = open_source(input, source_config or SourceConfig(), labels_csv=labels_csv)
    wanted = needed_frames(frames, probs, labels, settings) | set(pinned)
    row_of = {int(f): r for r, f in enumerate(frames.tolist()) if int(f) in wanted}
    collector = KeyFrameCollector(labels, settings, pinned=pinned)
    batch_rows: list[int] = []
    batch_images: list[np.ndarray] = []
    found = 0
    first_timed: tuple[int, float] | None = None  # (index, seconds) of the first timed frame
    last_timed: tuple[int, float] | None = None
    all_timed = not isinstance(source, FrameFolderSource)
    error: str | None = None

    def push() -> None:
        if batch_rows:
            collector.push(frames[batch_rows], np.stack(batch_images), probs[batch_rows])
            batch_rows.clear()
            batch_images.clear()

    try:
        for index, frame in source.frames():
            if all_timed:
                if frame.time is None:
                    all_timed = False
                else:
                    last_timed = (index, float(frame.time))
                    first_timed = first_timed or last_timed
            row = row_of.get(index)
            if row is None:
                continue
            found += 1
            batch_rows.append(row)
            batch_images.append(prepare_frame(frame, preprocess))
            if len(batch_rows) >= PUSH_BATCH:
                push()
    except StreamBroken as exc:
        error = str(exc)
    finally:
        source.close()
    push()
    stats = source.stats
    fps = None
    if all_timed and stats.untimed == 0 and first_timed and last_timed and last_timed[1] > first_timed[1]:
        fps = (last_timed[0] - first_timed[0]) / (last_timed[1] - first_timed[1])
    return ImageScan(collector.result(), found, len(row_of), stats.damaged, stats.missing, stats.untimed, fps, error)


def make_report(
    events_path: str,
    scores_path: str,
    input: str,
    out: str,
    *,
    video_id: str | None = None,
    settings: KeyFrameSettings = KeyFrameSettings(),
    source_config=None,
    labels_csv: str | None = None,
) -> tuple[Path, str | None]:
    """Write the report of a finished exam; returns (its path, why INPUT broke part way or None)."""
    from vce_stream.report.page import ReportFacts, render_report
    from vce_stream.scores import load_scores

    target = Path(out)
    check_outputs([("report", target)], inputs=[events_path, scores_path, input])
    video_id, events, block = read_exam_events(events_path, video_id)
    labels, videos = load_scores(scores_path)
    if video_id not in videos:
        raise InputError(f"{scores_path}: no scores for video {video_id!r} (it holds {', '.join(list(videos)[:5]) or 'none'})")
    frames, probs = videos[video_id]
    if frames.size == 0:
        raise InputError(f"{scores_path}: video {video_id!r} has no scored frames")
    unknown = sorted({ev.label for ev in events} - set(labels))
    if unknown:
        raise InputError(f"{events_path}: label {unknown[0]!r} is not among the scores' labels")
    path = anatomy_path_of(probs, labels)
    landmark_starts = [ev.start for ev in events if ev.label in RARE_VISION.landmark_sections]
    pinned = sorted(set(section_starts(path, frames)) | set(landmark_starts))
    scan = scan_images(input, frames, probs, labels, settings, pinned, source_config=source_config, labels_csv=labels_csv)
    notes = [f"events from {events_path}; probabilities and key-frame ranking from {scores_path}"]
    if scan.found < scan.wanted:
        notes.append(f"{scan.wanted - scan.found} of the {scan.wanted} frames to show were not in {input}: shown without image")
    if scan.error:
        notes.append(f"the input broke part way: {scan.error}")
    offset = source_config.frame_offset if source_config is not None else 0
    facts = ReportFacts(
        input=str(input) if input != "-" else "<stdin>",
        video_id=video_id,
        frames=int(frames.size),
        first_frame=int(frames[0]),
        last_frame=int(frames[-1]),
        damaged=scan.damaged,
        missing=max(0, int(frames[-1] - frames[0] + 1 - frames.size)),
        untimed=scan.untimed,
        fps=scan.fps,
        frame_offset=offset,
        decoding="anatomy bar: monotone Viterbi over the saved section probabilities (switch penalty 30); events as in the event JSON",
        incomplete=bool(block.get("incomplete")),
        stopped_at_frame=block.get("stopped_at_frame") if isinstance(block.get("stopped_at_frame"), int) else None,
        notes=tuple(notes),
    )
    render_report(target, facts=facts, labels=labels, events=events, frame_indices=frames, probs=probs, key_frames=scan.key_frames, anatomy_path=path)
    return target, scan.error


@click.command("report")
@click.argument("events", type=click.Path(dir_okay=False))
@click.argument("scores", type=click.Path(dir_okay=False))
@click.argument("input")
@click.option("--out", required=True, type=click.Path(), help="The HTML file to write.")
@click.option("--top", "top_n", default=100, show_default=True, type=click.IntRange(0, 1000), help="Frames in the overall top list.")
@click.option("--per-label", "top_k", default=8, show_default=True, type=click.IntRange(0, 100), help="Key frames per label.")
@click.option("--video-id", help="The video in EVENTS and SCORES (needed when they hold several).")
@click.option("--labels-csv", type=click.Path(dir_okay=False), help="Galar label CSV of a frame folder INPUT (as for run).")
@click.option("--allow-gaps", is_flag=True, help="Accept a frame folder with holes in its numbering (as for run).")
@click.option("--format", "container_format", help="FFmpeg container of a pipe INPUT, e.g. mpegts (as for run).")
@click.option("--frame-offset", type=int, default=0, show_default=True, help="Added to video frame indices (as for run).")
@click.option("--quiet", "-q", is_flag=True, help="No summary line.")
def report_command(events, scores, input, out, top_n, top_k, video_id, labels_csv, allow_gaps, container_format, frame_offset, quiet) -> None:
    """Write the review page OUT of a finished exam: EVENTS (run's event JSON), SCORES (its --save-scores
    file) and INPUT (the exam, decoded once for the key frames' thumbnails; - for stdin).

    Exit status: 0 written; 2 an unusable input or output (nothing written); 3 INPUT broke part way (the
    page is written, key frames after the break without image).
    """
    from vce_stream.sources import SourceConfig

    source_config = SourceConfig(frame_offset=frame_offset, allow_gaps=allow_gaps, container_format=container_format)
    settings = KeyFrameSettings(top_k=top_k, top_n=top_n)
    target, error = make_report(events, scores, input, out, video_id=video_id, settings=settings, source_config=source_config, labels_csv=labels_csv)
    if not quiet:
        click.echo(f"report: {target} ({target.stat().st_size / 1024:.0f} kB)", err=True)
    if error:
        raise VceError(f"{error} (report written to {target}, key frames after the break without image)", exit_code=EXIT_INCOMPLETE)


__all__ = ["anatomy_path_of", "make_report", "read_exam_events", "report_command", "scan_images"]

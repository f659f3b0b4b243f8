"""The review report: one self-contained HTML file a reader opens from disk (no network, no server).

What it shows: the exam timeline (anatomy sections as a colour bar from the decoded monotone path,
landmark markers, one lane per finding with a tick per event, a per-frame probability curve of any label
on hover or on demand, zoomable down to single frames); the ranked key frames (overall top N across
findings, then per finding); the first frame of each section and each landmark; the exam's facts; and,
at the top, the line that this is a reading aid, not a diagnosis.

Choices, and why:
- Jinja2 for the page (autoescape on for every template): a small, well-kept template engine, already
  installed with torch; every value from a file or a user (paths, video ids, labels) is escaped, and the
  data for the script is embedded with Jinja's `tojson` filter, which escapes `<`, `>`, `&` and `'` so
  nothing in it can end the `<script>` element.
- Plain inline SVG drawn by about 250 lines of inline JavaScript (no library, no CDN): the timeline is a
  handful of rectangles, ticks and one path, and a charting library inlined into the file would be 10 to
  100 times that size and one more thing to audit. The key-frame lists are plain HTML rendered by the
  template, so they print and read without script.
- Thumbnails are JPEG `data:` URIs (Pillow, about 3-5 kB each at 112 px), so the file carries its images.
- Probability curves are downsampled before they go into the file: per label at most `max_points` buckets
  of equal frame width, each keeping its minimum and maximum (so a one-frame spike survives), quantised
  to a byte and base64-encoded. 17 labels x 1,500 buckets is about 70 kB whatever the exam's length;
  zoomed in beyond one bucket per pixel the curve is that envelope.
- Print CSS: controls hidden, the timeline kept whole, thumbnails never split across pages.
Times are shown when the source had timestamps (`ReportFacts.fps`); otherwise the page says that it
shows frame indices only.
"""

from __future__ import annotations

import base64
import datetime as _dt
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vce_stream import __version__
from vce_stream.atomic import atomic_write_text
from vce_stream.events.event import Event
from vce_stream.labels import ANATOMY_ORDER, LABEL_KINDS, LANDMARKS, LabelKind
from vce_stream.report.thumbnails import KeyFrame, KeyFrames

# Okabe-Ito colours: told apart by colour-blind readers and in grey print.
SECTION_COLOURS: dict[str, str] = {
    "mouth": "#E69F00",
    "esophagus": "#56B4E9",
    "stomach": "#009E73",
    "small intestine": "#F0E442",
    "colon": "#0072B2",
}
MAX_CURVE_POINTS = 1500
ANY_FINDING = "any finding"  # the curve of the highest finding probability per frame (the default curve)


@dataclass(frozen=True)
class ReportFacts:
    """The exam's facts as the page states them.

    fps: frames per second when the source had timestamps (a frame's time is (frame - frame_offset) /
        fps), None for frame folders and untimed pipes: the page then says "frame indices only".
    thresholds: label -> threshold used for the events, when known. decoding: the decoding settings in
        words. bundle, engine: what scored the exam (None: not recorded). notes: extra lines shown as is.
    """

    input: str
    video_id: str
    frames: int
    first_frame: int
    last_frame: int
    damaged: int = 0
    missing: int = 0
    untimed: int = 0
    fps: float | None = None
    frame_offset: int = 0
    bundle: str | None = None
    engine: str | None = None
    thresholds: Mapping[str, float] | None = None
    decoding: str | None = None
    incomplete: bool = False
    stopped_at_frame: int | None = None
    notes: tuple[str, ...] = ()
    created: str = field(default_factory=lambda: _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))


def format_time(seconds: float) -> str:
    """h:mm:ss (m:ss under an hour)."""
    total = int(math.floor(seconds + 1e-9))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def curve_envelope(frame_indices: np.ndarray, values: np.ndarray, first: int, last: int, max_points: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Per bucket of `width` frames over [first, last]: (width, minimum, maximum) of `values`.

    At most `max_points` buckets; a bucket without frames has minimum > maximum (min = +inf, max = -inf).
    """
    span = max(1, last - first + 1)
    width = max(1, math.ceil(span / max(1, max_points)))
    count = math.ceil(span / width)
    lo = np.full(count, np.inf)
    hi = np.full(count, -np.inf)
    frames = np.asarray(frame_indices, dtype=np.int64)
    keep = (frames >= first) & (frames <= last)
    buckets = (frames[keep] - first) // width
    vals = np.asarray(values, dtype=np.float64)[keep]
    np.minimum.at(lo, buckets, vals)
    np.maximum.at(hi, buckets, vals)
    return width, lo, hi


def _quantise(values: np.ndarray, empty: int) -> str:
    """Probabilities as base64 bytes 0..250 (0.004 steps); `empty` marks a bucket without frames."""
    q = np.where(np.isfinite(values), np.clip(np.round(np.nan_to_num(values) * 250), 0, 250), empty).astype(np.uint8)
    return base64.b64encode(q.tobytes()).decode("ascii")


def section_spans(path: np.ndarray | None, frame_indices: np.ndarray) -> list[dict[str, Any]]:
    """Sections of a monotone path over rows as frame ranges [{label, start, end, colour}] (end inclusive)."""
    if path is None or len(path) == 0:
        return []
    path = np.asarray(path, dtype=np.int64)
    frames = np.asarray(frame_indices, dtype=np.int64)
    changes = np.flatnonzero(np.diff(path)) + 1
    starts = np.concatenate([[0], changes])
    ends = np.concatenate([changes - 1, [path.size - 1]])
    out = []
    for s, e in zip(starts.tolist(), ends.tolist()):
        name = ANATOMY_ORDER[int(path[s])]
        out.append({"label": name, "start": int(frames[s]), "end": int(frames[e]), "colour": SECTION_COLOURS[name]})
    return out


def merge_touching(events: Sequence[Event]) -> list[Event]:
    """Per label, events that overlap or touch (end + 1 == next start) as one event, score length-weighted.

    Tuple segmentation cuts one label's stretch wherever another label starts or stops; a reader wants
    the stretch.
    """
    out: list[Event] = []
    for ev in sorted(events, key=lambda e: (e.label, e.start, e.end)):
        prev = out[-1] if out else None
        if prev is not None and prev.label == ev.label and ev.start <= prev.end + 1:
            end = max(prev.end, ev.end)
            weight = prev.length + ev.length
            out[-1] = Event(prev.start, end, ev.label, (prev.score * prev.length + ev.score * ev.length) / weight)
        else:
            out.append(ev)
    return out


def _data_uri(jpeg: bytes | None) -> str | None:
    return None if jpeg is None else "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def _template(name: str = "report.html.j2"):
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("vce_stream.report", "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template(name)


def build_context(
    *,
    facts: ReportFacts,
    labels: Sequence[str],
    events: Sequence[Event],
    frame_indices: np.ndarray,
    probs: np.ndarray,
    key_frames: KeyFrames,
    anatomy_path: np.ndarray | None = None,
    max_curve_points: int = MAX_CURVE_POINTS,
) -> dict[str, Any]:
    """Everything the template needs (plain values; the template escapes them)."""
    labels = list(labels)
    frames = np.asarray(frame_indices, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float32)
    first, last = facts.first_frame, facts.last_frame

    def when(frame: int) -> str | None:
        return format_time((frame - facts.frame_offset) / facts.fps) if facts.fps else None

    def card(kf: KeyFrame, rank: int | None = None) -> dict[str, Any]:
        thumb = kf.thumbnail if kf.thumbnail is not None else key_frames.thumbnail_of(kf.frame)
        return {"frame": kf.frame, "score": kf.score, "label": kf.label, "rank": rank, "time": when(kf.frame), "src": _data_uri(thumb)}

    findings = [name for name in labels if LABEL_KINDS.get(name) is LabelKind.PATHOLOGY]
    by_label: dict[str, list[Event]] = {name: [] for name in labels}
    for ev in merge_touching(events):
        by_label.setdefault(ev.label, []).append(ev)
    for evs in by_label.values():
        evs.sort(key=lambda e: (e.start, e.end))
    sections = section_spans(anatomy_path, frames)
    landmark_marks = [
        {"label": ev.label, "start": ev.start, "end": ev.end, "score": round(ev.score, 4)}
        for name in LANDMARKS
        for ev in by_label.get(name, [])
    ]
    curves = {}
    columns = {name: probs[:, c] for c, name in enumerate(labels)}
    finding_columns = [c for c, name in enumerate(labels) if name in findings]
    if finding_columns:
        columns = {ANY_FINDING: probs[:, finding_columns].max(axis=1), **columns}
    for name, values in columns.items():
        width, lo, hi = curve_envelope(frames, values, first, last, max_curve_points)
        curves[name] = {"lo": _quantise(lo, 255), "hi": _quantise(hi, 0), "width": width}
    data = {
        "first": first,
        "last": last,
        "fps": facts.fps,
        "offset": facts.frame_offset,
        "sections": sections,
        "landmarks": landmark_marks,
        "lanes": [
            {"label": name, "events": [[ev.start, ev.end, round(ev.score, 4)] for ev in by_label[name]]} for name in findings
        ],
        "labels": list(curves),
        "curves": curves,
    }
    section_rows = []
    for span in sections:
        thumb = key_frames.thumbnail_of(span["start"])
        section_rows.append({**span, "time": when(span["start"]), "src": _data_uri(thumb)})
    landmark_cards = []
    for name in LANDMARKS:
        for ev in by_label.get(name, []):
            thumb = key_frames.thumbnail_of(ev.start)
            landmark_cards.append({"label": name, "frame": ev.start, "end": ev.end, "score": ev.score, "time": when(ev.start), "src": _data_uri(thumb), "source": "event"})
        if not by_label.get(name) and name in key_frames.firsts:
            kf = key_frames.firsts[name]
            landmark_cards.append({**card(kf), "end": kf.frame, "source": "first frame over threshold"})
    per_finding = []
    for name in findings:
        evs = by_label[name]
        per_finding.append(
            {
                "label": name,
                "events": [
                    {"start": ev.start, "end": ev.end, "score": ev.score, "time": when(ev.start), "length": ev.length}
                    for ev in sorted(evs, key=lambda e: (-e.score, e.start))
                ],
                "frames": [card(kf, i + 1) for i, kf in enumerate(key_frames.per_label.get(name, []))],
            }
        )
    finding_events = sum(len(by_label[name]) for name in findings)
    return {
        "facts": facts,
        "version": __version__,
        "times": facts.fps is not None,
        "duration": when(last + 1) if facts.fps else None,
        "thresholds": dict(facts.thresholds or {}),
        "total_events": len(events),
        "finding_events": finding_events,
        "found_labels": [name for name in findings if by_label[name]],
        "sections": section_rows,
        "landmarks": landmark_cards,
        "overall": [card(kf, i + 1) for i, kf in enumerate(key_frames.overall)],
        "per_finding": per_finding,
        "data": data,
        "section_colours": SECTION_COLOURS,
    }


def render_html(**kwargs: Any) -> str:
    """The report as a string (see `render_report` for the arguments)."""
    return _template().render(**build_context(**kwargs))


def render_report(
    out_path: str | os.PathLike[str],
    *,
    facts: ReportFacts,
    labels: Sequence[str],
    events: Sequence[Event],
    frame_indices: np.ndarray,
    probs: np.ndarray,
    key_frames: KeyFrames,
    anatomy_path: np.ndarray | None = None,
) -> None:
    """Write the report to `out_path` atomically.

    labels: column names of `probs`. events: the exam's single-label events (tuple events split per label).
    frame_indices, probs: every scored frame, (N,) int64 and (N, labels) float32. key_frames: from a
    KeyFrameCollector. anatomy_path: the decoded section of every row of `probs` (0..4, monotone), or None
    (no anatomy bar; the page says so).
    """
    atomic_write_text(
        Path(out_path),
        render_html(
            facts=facts,
            labels=labels,
            events=events,
            frame_indices=frame_indices,
            probs=probs,
            key_frames=key_frames,
            anatomy_path=anatomy_path,
        ),
    )


__all__ = ["ReportFacts", "build_context", "merge_touching", "curve_envelope", "format_time", "render_html", "render_report", "section_spans"]


def render_index(entries: Sequence[Mapping[str, Any]]) -> str:
    """The index page of a batch's reports: one row per exam (exam, video id, status, frames, events,
    `page`: the review page's file name beside the index, or None when the exam has none)."""
    return _template("index.html.j2").render(entries=list(entries), created=_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))

"""The RARE-VISION event JSON (SPEC §2): writing (tuple or per-label events, ranked) and reading.

In that format the order of events in the file *is* the ranking, so `order="confidence"` writes the
most confident events first. Tuple segmentation reproduces the ground-truth generator exactly: walk the
frames, start a new event whenever the set of active labels changes, labels sorted alphabetically,
stretches with no label written as `label: []`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vce_stream.atomic import atomic_write_text
from vce_stream.errors import SubmissionError
from vce_stream.events.event import Event
from vce_stream.labels import LABELS
from vce_stream.limits import MAX_EVENTS, MAX_FRAME_INDEX, MAX_VIDEOS

FrameRange = tuple[int, int]  # first and last frame index, inclusive


@dataclass(frozen=True)
class TupleEvent:
    """A ground-truth style event: a maximal stretch with one set of labels (sorted alphabetically)."""

    start: int
    end: int
    labels: tuple[str, ...]
    score: float


def label_matrix(events: Sequence[Event], frame_range: FrameRange, labels: Sequence[str] = LABELS) -> np.ndarray:
    """(frames, labels) bool: which labels are active on each frame of `frame_range` (events clipped to it).

    Dense over the whole range: for tools that need every frame (the simulator). Anything that follows
    gaps in the frame indices uses `labels_at_frames` or `tuple_segments`, which are sparse.
    """
    first, last = frame_range
    rank = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((max(0, last - first + 1), len(labels)), dtype=bool)
    for ev in events:
        s, e = max(ev.start, first), min(ev.end, last)
        if s <= e:
            matrix[s - first : e - first + 1, rank[ev.label]] = True
    return matrix


def labels_at_frames(events: Sequence[Event], frames: np.ndarray, labels: Sequence[str] = LABELS) -> np.ndarray:
    """(len(frames), labels) bool: which labels are active on each of the given frame indices.

    Sparse: costs O(frames + events) whatever the gaps between the indices (a 10^9-frame gap costs
    nothing), unlike `label_matrix`, which is dense over a whole range.
    """
    frames = np.asarray(frames, dtype=np.int64)
    rank = {label: i for i, label in enumerate(labels)}
    # Per label, +1 at the first frame position an event covers and -1 after its last one.
    delta = np.zeros((frames.size + 1, len(labels)), dtype=np.int64)
    for ev in events:
        lo = int(np.searchsorted(frames, ev.start, side="left"))
        hi = int(np.searchsorted(frames, ev.end, side="right"))
        if lo < hi:
            delta[lo, rank[ev.label]] += 1
            delta[hi, rank[ev.label]] -= 1
    return np.cumsum(delta[:-1], axis=0) > 0


def tuple_segments(
    events: Sequence[Event], frame_range: FrameRange | None = None, labels: Sequence[str] = LABELS
) -> list[TupleEvent]:
    """Tuple segmentation of per-label events over `frame_range` (default: from the first start to the last end).

    A tuple event's score is the mean score of the label events it is cut from (0 for `label: []`);
    where events of one label overlap, the later one in `events` gives the score.

    Works on the stretches between event boundaries, never frame by frame: time and memory grow with
    the number of events, not with the length of the range (a 10^9-frame gap costs nothing).
    """
    if frame_range is None:
        if not events:
            return []
        frame_range = (min(ev.start for ev in events), max(ev.end for ev in events))
    first, last = frame_range
    if last < first:
        return []
    rank = {label: i for i, label in enumerate(labels)}
    inside = [(max(ev.start, first), min(ev.end, last), ev) for ev in events if max(ev.start, first) <= min(ev.end, last)]
    # Stretch k covers frames bounds[k] .. bounds[k + 1] - 1; within one, no label switches on or off.
    bounds = np.unique(np.array([first, last + 1, *(s for s, _, _ in inside), *(e + 1 for _, e, _ in inside)], dtype=np.int64))
    count = bounds.size - 1
    active = np.zeros((count, len(labels)), dtype=bool)
    score_of = np.zeros((count, len(labels)))  # per stretch and label: the score of the covering event
    for s, e, ev in inside:  # in list order, so a later event's score wins where events overlap
        lo, hi = int(np.searchsorted(bounds, s)), int(np.searchsorted(bounds, e + 1))
        active[lo:hi, rank[ev.label]] = True
        score_of[lo:hi, rank[ev.label]] = ev.score
    changes = np.flatnonzero(np.any(active[1:] != active[:-1], axis=1)) + 1
    starts = np.concatenate([[0], changes]).astype(np.int64)
    ends = np.concatenate([changes, [count]]).astype(np.int64)  # exclusive, in stretches
    out = []
    for s, e in zip(starts.tolist(), ends.tolist()):
        on = np.flatnonzero(active[s])
        names = tuple(sorted(labels[i] for i in on))
        score = float(score_of[s, on].mean()) if on.size else 0.0
        out.append(TupleEvent(int(bounds[s]), int(bounds[e]) - 1, names, score))
    return out


def video_events_json(
    events: Sequence[Event],
    *,
    segmentation: str = "tuple",
    order: str = "confidence",
    frame_range: FrameRange | None = None,
    labels: Sequence[str] = LABELS,
    with_scores: bool = True,
) -> list[dict[str, Any]]:
    """The `events` list of one video in the submission format, ranked by `order`."""
    if segmentation == "tuple":
        items = [(t.start, t.end, list(t.labels), t.score) for t in tuple_segments(events, frame_range, labels)]
    elif segmentation == "label":
        items = [(ev.start, ev.end, [ev.label], ev.score) for ev in events]
    else:
        raise ValueError(f"unknown segmentation {segmentation!r}")
    rank = {label: i for i, label in enumerate(labels)}

    def time_key(item: tuple) -> tuple:
        return (item[0], [rank[name] for name in item[2]])

    if order == "time":
        items.sort(key=time_key)
    elif order == "confidence":
        items.sort(key=lambda item: (-item[3], *time_key(item)))
    else:
        raise ValueError(f"unknown order {order!r}")
    out = []
    for start, end, names, score in items:
        entry: dict[str, Any] = {"start": int(start), "end": int(end), "label": names}
        if with_scores:
            entry["score"] = round(float(score), 6)
        out.append(entry)
    return out


def submission_dict(
    videos: Mapping[str, Sequence[Event]],
    *,
    segmentation: str = "tuple",
    order: str = "confidence",
    frame_ranges: Mapping[str, FrameRange] | None = None,
    labels: Sequence[str] = LABELS,
    with_scores: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole submission object; `extra` adds top-level keys (the scorer ignores them)."""
    frame_ranges = frame_ranges or {}
    result: dict[str, Any] = {
        "videos": [
            {
                "video_id": str(video_id),
                "events": video_events_json(
                    events,
                    segmentation=segmentation,
                    order=order,
                    frame_range=frame_ranges.get(video_id),
                    labels=labels,
                    with_scores=with_scores,
                ),
            }
            for video_id, events in videos.items()
        ]
    }
    if extra:
        result.update(extra)
    return result


def dump_submission(submission: Mapping[str, Any]) -> str:
    """Compact but line-per-event text: diffable and small."""
    lines = ['{"videos": [']
    for i, video in enumerate(submission["videos"]):
        lines.append(f'  {{"video_id": {json.dumps(video["video_id"])}, "events": [')
        events = [f"    {json.dumps(ev)}" for ev in video["events"]]
        lines.append(",\n".join(events))
        lines.append("  ]}" + ("," if i + 1 < len(submission["videos"]) else ""))
    lines.append("]")
    rest = {k: v for k, v in submission.items() if k != "videos"}
    text = "\n".join(line for line in lines if line)
    if rest:
        text += ",\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in rest.items())
    return text + "}\n"


def write_submission(path: str | Path, videos: Mapping[str, Sequence[Event]], **options: Any) -> dict[str, Any]:
    """Write the submission atomically (a reader never sees half a file); return what was written."""
    submission = submission_dict(videos, **options)
    atomic_write_text(path, dump_submission(submission))
    return submission


def read_submission(path: str | Path, labels: Sequence[str] = LABELS) -> dict[str, list[dict[str, Any]]]:
    """Read and sanity-check an event JSON: video id -> list of events (start, end, label list).

    Raises SubmissionError with a one-line reason naming the file for anything the scorer rejects.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise SubmissionError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise SubmissionError(f"{path}: is a directory, not an event JSON") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SubmissionError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise SubmissionError(f"{path}: JSON nested too deeply to be an event file") from None
    except OSError as exc:
        raise SubmissionError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return parse_submission(data, str(path), labels)


def parse_submission(data: Any, where: str = "submission", labels: Sequence[str] = LABELS) -> dict[str, list[dict[str, Any]]]:
    """Validate a loaded submission object (see `read_submission`)."""
    known = set(labels)
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
        raise SubmissionError(f'{where}: expected an object with a "videos" list')
    if len(data["videos"]) > MAX_VIDEOS:
        raise SubmissionError(f"{where}: {len(data['videos']):,} videos, more than the {MAX_VIDEOS:,} an event file may hold")
    total = sum(len(v["events"]) for v in data["videos"] if isinstance(v, dict) and isinstance(v.get("events"), list))
    if total > MAX_EVENTS:
        raise SubmissionError(f"{where}: {total:,} events, more than the {MAX_EVENTS:,} an event file may hold")
    videos: dict[str, list[dict[str, Any]]] = {}
    for v, video in enumerate(data["videos"]):
        if not isinstance(video, dict) or "video_id" not in video or not isinstance(video.get("events"), list):
            raise SubmissionError(f'{where}: videos[{v}] needs "video_id" and an "events" list')
        if not isinstance(video["video_id"], (str, int)) or isinstance(video["video_id"], bool):
            raise SubmissionError(f"{where}: videos[{v}].video_id must be a string, got {type(video['video_id']).__name__}")
        video_id = str(video["video_id"])
        if video_id in videos:
            raise SubmissionError(f"{where}: video {video_id!r} appears twice")
        events = []
        for e, event in enumerate(video["events"]):
            at = f"{where}: video {video_id!r} event {e}"
            if not isinstance(event, dict):
                raise SubmissionError(f"{at}: not an object")
            start, end, label = event.get("start"), event.get("end"), event.get("label")
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in (start, end)):
                raise SubmissionError(f"{at}: start and end must be integers, got {start!r}, {end!r}")
            if not 0 <= start <= MAX_FRAME_INDEX or not 0 <= end <= MAX_FRAME_INDEX:
                raise SubmissionError(f"{at}: start and end must lie in [0, {MAX_FRAME_INDEX:,}], got {start}, {end}")
            if end < start:
                raise SubmissionError(f"{at}: end {end} before start {start}")
            if isinstance(label, str):
                raise SubmissionError(f"{at}: label must be a list of strings, got the bare string {label!r}")
            if not isinstance(label, list) or not all(isinstance(x, str) for x in label):
                raise SubmissionError(f"{at}: label must be a list of strings, got {label!r}")
            unknown = [x for x in label if x not in known]
            if unknown:
                raise SubmissionError(f"{at}: unknown label {unknown[0]!r}")
            events.append({"start": start, "end": end, "label": list(label)})
        videos[video_id] = events
    return videos


def label_events_from_json(events: Sequence[Mapping[str, Any]]) -> list[Event]:
    """Per-label events from submission events (a tuple event gives one event per label), file order kept."""
    out = []
    for event in events:
        for name in event["label"]:
            out.append(Event(int(event["start"]), int(event["end"]), name, float(event.get("score", 0.0))))
    return out


def frame_range_of(events: Sequence[Mapping[str, Any]]) -> FrameRange | None:
    """First and last frame covered by any event (empty-label events included)."""
    if not events:
        return None
    return min(int(e["start"]) for e in events), max(int(e["end"]) for e in events)


__all__ = [
    "TupleEvent",
    "dump_submission",
    "frame_range_of",
    "label_events_from_json",
    "label_matrix",
    "labels_at_frames",
    "parse_submission",
    "read_submission",
    "submission_dict",
    "tuple_segments",
    "video_events_json",
    "write_submission",
]

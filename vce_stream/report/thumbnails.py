"""Key frames for the review report, captured while the exam streams, in bounded memory.

A reviewer looks first at the frames the model is most sure about: per label its top K frames by
probability, an overall "top N" across the findings (the pathology labels; a frame counts once, with its
most probable finding), and the first frame of each anatomy section and landmark. `KeyFrameCollector`
sees every batch once (`push`) and keeps only what can still enter one of those lists:

- per label a min-heap of at most K entries keyed by (probability, -frame index): a new frame enters
  when its key beats the heap's smallest, which it then replaces; ties go to the earlier frame;
- one such heap of at most N entries for the overall list, keyed by the frame's best finding;
- "firsts": per section the first frame whose most probable section it is with probability >=
  `threshold`, per landmark the first frame with probability >= `threshold` (streaming cannot wait for
  the decoded anatomy path; a caller that knows the path, like `vce-stream report`, passes its section
  starts as `pinned` frames instead);
- `pinned`: frame indices the caller wants whatever their scores (bounded by the caller).

A thumbnail is kept only for a frame that actually enters a list, shared by every list holding the
frame, so at most K x labels + N + firsts + pinned thumbnails are alive at any time, whatever the
exam's length (`capacity`; `stored_thumbnails` counts them). While streaming it is kept raw, box-filtered
down by a whole factor towards `thumb_size` (37 kB for a 224 px frame, a few microseconds); the JPEG (Pillow,
`thumb_size` px on its long side) is encoded once, in `result()`, for the frames the lists hold at the
end, not for every frame that passed through them. Per batch, a vectorised pre-filter against each heap's
current minimum leaves only a handful of rows to look at once the heaps are full.

`select_key_frames` is the whole-exam reference (a sort, no heaps): the property tests check that the
collector returns exactly its lists for any split into batches, and `vce-stream report` uses it to
decode-and-prepare only the frames that can appear in the page.
"""

from __future__ import annotations

import heapq
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from vce_stream.labels import ANATOMY_ORDER, LANDMARKS, PATHOLOGIES

# One heap entry: (score, -frame, frame, label column). Ordering on the first two gives "higher score,
# then earlier frame, is better"; the last two are payload.
_Entry = tuple[float, int, int, int]


@dataclass(frozen=True)
class KeyFrame:
    """One frame in a key-frame list: its index, the score it is ranked by, for which label, and its image.

    thumbnail: JPEG bytes, or None when the frame's image was never seen (e.g. absent from the video).
    """

    frame: int
    score: float
    label: str
    thumbnail: bytes | None = None


@dataclass(frozen=True)
class KeyFrames:
    """What the report shows as images.

    per_label: label -> its top frames, best first (every label of the collector).
    overall: the top frames across `findings`, best first, one entry per frame (its best finding).
    firsts: label -> the first frame of that section or landmark (absent when never reached).
    pinned: frame index -> thumbnail for the frames the caller pinned and that were seen.
    """

    labels: tuple[str, ...]
    findings: tuple[str, ...]
    per_label: dict[str, list[KeyFrame]]
    overall: list[KeyFrame]
    firsts: dict[str, KeyFrame]
    pinned: dict[int, bytes] = field(default_factory=dict)

    def thumbnail_of(self, frame: int) -> bytes | None:
        """Any stored thumbnail of `frame` (key frames, firsts and pinned frames share one encoding)."""
        if frame in self.pinned:
            return self.pinned[frame]
        for entries in (*self.per_label.values(), self.overall, self.firsts.values()):
            for kf in entries:
                if kf.frame == frame and kf.thumbnail is not None:
                    return kf.thumbnail
        return None


@dataclass(frozen=True)
class KeyFrameSettings:
    """How many key frames to keep and how.

    top_k: frames per label. top_n: frames in the overall list. threshold: probability a section or
    landmark needs for its first frame. findings: labels of the overall list (default: the pathologies
    among the labels). thumb_size: long side of a thumbnail in pixels. quality: JPEG quality.
    """

    top_k: int = 8
    top_n: int = 100
    threshold: float = 0.5
    findings: tuple[str, ...] | None = None
    thumb_size: int = 112
    quality: int = 80

    def __post_init__(self) -> None:
        if self.top_k < 0 or self.top_n < 0:
            raise ValueError(f"top_k and top_n must be >= 0, got {self.top_k}, {self.top_n}")
        if not 8 <= self.thumb_size <= 512:
            raise ValueError(f"thumb_size must lie in [8, 512], got {self.thumb_size}")
        if not 1 <= self.quality <= 95:
            raise ValueError(f"quality must lie in [1, 95], got {self.quality}")


def _finding_columns(labels: Sequence[str], findings: Sequence[str] | None) -> np.ndarray:
    names = PATHOLOGIES if findings is None else findings
    return np.array([i for i, name in enumerate(labels) if name in names], dtype=np.int64)


def _first_rules(labels: Sequence[str]) -> tuple[list[int], list[int]]:
    """Columns of the anatomy sections present (in path order) and of the landmarks present."""
    sections = [labels.index(name) for name in ANATOMY_ORDER if name in labels]
    landmarks = [labels.index(name) for name in LANDMARKS if name in labels]
    return sections, landmarks


def first_hits(probs: np.ndarray, labels: Sequence[str], threshold: float) -> np.ndarray:
    """(rows, labels) bool: rows that qualify as "first frame" candidates of each section or landmark.

    A section qualifies where it is the most probable section and reaches `threshold`; a landmark where
    it reaches `threshold`. Other labels never qualify.
    """
    probs = np.asarray(probs)
    hits = np.zeros(probs.shape, dtype=bool)
    sections, landmarks = _first_rules(list(labels))
    if sections and probs.shape[0]:
        block = probs[:, sections]
        best = np.argmax(block, axis=1)
        for j, c in enumerate(sections):
            hits[:, c] = (best == j) & (block[:, j] >= threshold)
    for c in landmarks:
        hits[:, c] = probs[:, c] >= threshold
    return hits


def select_key_frames(
    frame_indices: np.ndarray, probs: np.ndarray, labels: Sequence[str], settings: KeyFrameSettings = KeyFrameSettings()
) -> tuple[dict[str, list[tuple[int, float]]], list[tuple[int, float, str]], dict[str, int]]:
    """The whole-exam reference: (per label [(frame, score)], overall [(frame, score, label)], firsts {label: frame}).

    Order: higher score first, ties by earlier frame. No thumbnails: this says which frames matter.
    """
    frames = np.asarray(frame_indices, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float32)
    labels = list(labels)
    per_label: dict[str, list[tuple[int, float]]] = {}
    for c, name in enumerate(labels):
        order = np.lexsort((frames, -probs[:, c].astype(np.float64)))[: settings.top_k]
        per_label[name] = [(int(frames[r]), float(probs[r, c])) for r in order]
    overall: list[tuple[int, float, str]] = []
    columns = _finding_columns(labels, settings.findings)
    if columns.size and frames.size:
        block = probs[:, columns]
        best = np.argmax(block, axis=1)
        score = block[np.arange(frames.size), best]
        order = np.lexsort((frames, -score.astype(np.float64)))[: settings.top_n]
        overall = [(int(frames[r]), float(score[r]), labels[int(columns[best[r]])]) for r in order]
    hits = first_hits(probs, labels, settings.threshold)
    firsts = {labels[c]: int(frames[np.argmax(hits[:, c])]) for c in range(len(labels)) if hits[:, c].any()}
    return per_label, overall, firsts


def needed_frames(
    frame_indices: np.ndarray, probs: np.ndarray, labels: Sequence[str], settings: KeyFrameSettings = KeyFrameSettings()
) -> set[int]:
    """Every frame index whose image the report can show (per-label, overall and first frames)."""
    per_label, overall, firsts = select_key_frames(frame_indices, probs, labels, settings)
    out = {f for entries in per_label.values() for f, _ in entries}
    out.update(f for f, _, _ in overall)
    out.update(firsts.values())
    return out


def shrink(image: np.ndarray, size: int) -> np.ndarray:
    """`image` (H, W, 3) uint8 box-filtered by the largest whole factor that keeps its long side >= `size`
    (a copy: the caller's buffer is reused for the next batch)."""
    array = np.asarray(image, dtype=np.uint8)
    factor = max(1, max(array.shape[:2]) // size)
    if factor == 1:
        return array.copy()
    h, w = (array.shape[0] // factor) * factor, (array.shape[1] // factor) * factor
    blocks = array[:h, :w].reshape(h // factor, factor, w // factor, factor, 3).astype(np.uint16)
    return (blocks.sum(axis=(1, 3)) // (factor * factor)).astype(np.uint8)


def encode_thumbnail(image: np.ndarray, size: int, quality: int = 80) -> bytes:
    """A uint8 (H, W, 3) RGB image as JPEG bytes, its long side scaled to `size` (Pillow, antialiased)."""
    from PIL import Image

    array = np.ascontiguousarray(image, dtype=np.uint8)
    picture = Image.fromarray(array, "RGB")
    factor = max(picture.size) // size
    if factor > 1:  # box-filter by a whole factor first: half the cost of a resampling filter
        picture = picture.reduce(factor)
    if max(picture.size) > size:
        picture.thumbnail((size, size), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=quality, optimize=False)
    return buffer.getvalue()


class KeyFrameCollector:
    """Streaming key frames (see the module docstring); `push` per batch, `result()` at the end."""

    def __init__(self, labels: Sequence[str], settings: KeyFrameSettings = KeyFrameSettings(), *, pinned: Iterable[int] = ()) -> None:
        self.labels = tuple(labels)
        self.settings = settings
        self._findings = _finding_columns(self.labels, settings.findings)
        self._heaps: list[list[_Entry]] = [[] for _ in self.labels]
        self._overall: list[_Entry] = []
        self._firsts: dict[int, tuple[int, float]] = {}  # column -> (frame, score)
        self._pinned_wanted = frozenset(int(f) for f in pinned)
        self._pinned: dict[int, np.ndarray] = {}
        self._thumbs: dict[int, np.ndarray] = {}  # frame -> shrunk image, for every frame some list still holds
        self._last: int | None = None
        self._first_count = sum(len(cols) for cols in _first_rules(list(self.labels)))

    @property
    def capacity(self) -> int:
        """The most thumbnails the collector can hold at once."""
        s = self.settings
        return s.top_k * len(self.labels) + s.top_n + len(self.labels) + len(self._pinned_wanted)

    @property
    def stored_thumbnails(self) -> int:
        """Thumbnails held now (one per frame, shared by the lists that hold it)."""
        return len(self._thumbs) + sum(1 for f in self._pinned if f not in self._thumbs)

    def push(self, frame_indices: np.ndarray, frames: np.ndarray, probs: np.ndarray) -> None:
        """One batch: (B,) int64 frame indices (increasing), (B, H, W, 3) uint8 frames (numpy or torch,
        e.g. the model-size prepared frames), (B, labels) float32 probabilities."""
        indices = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
        probs = np.asarray(probs, dtype=np.float32)
        if probs.shape != (indices.size, len(self.labels)):
            raise ValueError(f"probs {probs.shape} do not match {indices.size} frames x {len(self.labels)} labels")
        if indices.size == 0:
            return
        if len(frames) != indices.size:
            raise ValueError(f"{len(frames)} frames for {indices.size} frame indices")
        if np.any(np.diff(indices) <= 0) or (self._last is not None and indices[0] <= self._last):
            raise ValueError("frame indices must increase across pushes")
        self._last = int(indices[-1])
        shrunk: dict[int, np.ndarray] = {}

        def thumb(row: int) -> np.ndarray:
            if row not in shrunk:
                image = frames[row]
                if hasattr(image, "numpy"):  # a torch tensor (on the CPU)
                    image = image.numpy()
                shrunk[row] = shrink(image, self.settings.thumb_size)
            return shrunk[row]

        dropped: list[int] = []  # frames that left a list (their thumbnail may now be unreferenced)
        k = self.settings.top_k
        if k:
            # One vectorised test for all labels: only columns with a row above their heap's floor go on.
            floors = np.array([heap[0][0] if len(heap) >= k else -np.inf for heap in self._heaps], dtype=np.float64)
            for c in np.flatnonzero((probs > floors[None, :]).any(axis=0)).tolist():
                self._offer(self._heaps[c], k, probs[:, c], indices, c, thumb, dropped)
        if self._findings.size and self.settings.top_n:
            block = probs[:, self._findings]
            best = np.argmax(block, axis=1)
            score = block[np.arange(indices.size), best]
            self._offer(self._overall, self.settings.top_n, score, indices, self._findings[best], thumb, dropped)
        hits = first_hits(probs, self.labels, self.settings.threshold) if len(self._firsts) < self._first_count else None
        for c in np.flatnonzero(hits.any(axis=0)).tolist() if hits is not None else ():
            if c not in self._firsts:
                row = int(np.argmax(hits[:, c]))
                self._firsts[c] = (int(indices[row]), float(probs[row, c]))
                self._thumbs[int(indices[row])] = thumb(row)
        if self._pinned_wanted:
            for row in np.flatnonzero(np.isin(indices, list(self._pinned_wanted))).tolist():
                self._pinned[int(indices[row])] = thumb(row)
        self._forget(dropped)

    def _offer(self, heap: list[_Entry], size: int, score: np.ndarray, indices: np.ndarray, column, thumb, dropped: list[int]) -> None:
        """Offer a batch's rows to one bounded heap; only rows that can enter are looked at one by one."""
        columns = np.broadcast_to(np.asarray(column, dtype=np.int64), indices.shape)
        if len(heap) >= size:
            floor = heap[0][0]
            # A later frame with an equal score never beats an earlier one, so strictly greater only.
            rows = np.flatnonzero(score > floor)
        else:
            rows = np.arange(indices.size)
        if rows.size > size:  # at most `size` rows of this batch can end up in the heap
            order = np.lexsort((indices[rows], -score[rows].astype(np.float64)))[:size]
            rows = np.sort(rows[order])
        for row in rows.tolist():
            entry = (float(score[row]), -int(indices[row]), int(indices[row]), int(columns[row]))
            if len(heap) < size:
                heapq.heappush(heap, entry)
            elif entry > heap[0]:
                dropped.append(heapq.heapreplace(heap, entry)[2])
            else:
                continue
            self._thumbs[entry[2]] = thumb(row)

    def _forget(self, frames: list[int]) -> None:
        """Drop thumbnails of frames no list holds any more."""
        if not frames:
            return
        held = {e[2] for heap in (*self._heaps, self._overall) for e in heap}
        held.update(f for f, _ in self._firsts.values())
        for frame in frames:
            if frame not in held:
                self._thumbs.pop(frame, None)

    def result(self) -> KeyFrames:
        """The lists, best first, with JPEG thumbnails (the collector can keep going afterwards)."""
        jpegs: dict[int, bytes] = {}

        def jpeg(frame: int, images: dict[int, np.ndarray]) -> bytes | None:
            if frame not in jpegs and frame in images:
                jpegs[frame] = encode_thumbnail(images[frame], self.settings.thumb_size, self.settings.quality)
            return jpegs.get(frame)

        def ranked(heap: list[_Entry]) -> list[KeyFrame]:
            return [
                KeyFrame(frame, score, self.labels[column], jpeg(frame, self._thumbs))
                for score, _, frame, column in sorted(heap, reverse=True)
            ]

        return KeyFrames(
            labels=self.labels,
            findings=tuple(self.labels[c] for c in self._findings.tolist()),
            per_label={name: ranked(self._heaps[c]) for c, name in enumerate(self.labels)},
            overall=ranked(self._overall),
            firsts={
                self.labels[c]: KeyFrame(frame, score, self.labels[c], jpeg(frame, self._thumbs))
                for c, (frame, score) in sorted(self._firsts.items())
            },
            pinned={frame: jpeg(frame, self._pinned) for frame in self._pinned},
        )


__all__ = [
    "KeyFrame",
    "KeyFrameCollector",
    "KeyFrameSettings",
    "KeyFrames",
    "encode_thumbnail",
    "first_hits",
    "needed_frames",
    "select_key_frames",
]

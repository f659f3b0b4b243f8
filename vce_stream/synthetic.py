"""Synthetic capsule exams with known ground truth, for tests, examples and the quick start.

An exam passes the five anatomical sections in order (mouth, esophagus, stomach, small intestine,
colon), each with its own colour and texture that drift as the capsule moves; a landmark marks each of
three section boundaries (z-line, pylorus, ileocecal valve) for a few frames, and short lesion events
(one pathology each) appear along the way. Every landmark and pathology is drawn as a disc of its own
marker colour, so `PaletteScorer` (a real, deterministic FrameScorer that reads those colours) makes
end-to-end output checkable against the ground truth, which is written in the SPEC §2 format.

Outputs: a video in any container/codec PyAV encodes (H.264 mp4/mkv/ts, MJPEG avi, VP9 webm, HEVC,
AV1) or a frame folder (`frame_<n>.png`, any padding, start number, step and extension case, with an
optional Galar-style label CSV). `vce-stream synth OUT`. The Galar layout's writers (frames, label CSV,
metadata) live here too, for train/synthetic_galar.py's training data.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import av
import click
import numpy as np

from vce_stream.atomic import atomic_open, atomic_write_text
from vce_stream.errors import ConfigError
from vce_stream.events.event import Event
from vce_stream.events.jsonio import dump_submission, submission_dict
from vce_stream.labels import ANATOMY_ORDER, LABEL_INDEX, LABELS, LANDMARKS, PATHOLOGIES, RARE_VISION, LabelSet
from vce_stream.postprocess.filters import run_bounds
from vce_stream.limits import MAX_IMAGE_SIDE, check_maxima

if TYPE_CHECKING:
    import torch

# Mean RGB of each section's mucosa, and its texture: (stripe period in px, stripe angle, noise amplitude).
SECTION_COLOURS: dict[str, tuple[int, int, int]] = {
    "mouth": (200, 120, 130),
    "esophagus": (225, 175, 165),
    "stomach": (190, 80, 50),
    "small intestine": (200, 170, 80),
    "colon": (120, 110, 60),
}
SECTION_TEXTURES: dict[str, tuple[float, float, float]] = {
    "mouth": (40.0, 0.3, 6.0),
    "esophagus": (24.0, 1.57, 4.0),  # longitudinal folds
    "stomach": (60.0, 0.8, 6.0),  # rugae
    "small intestine": (9.0, 0.2, 12.0),  # villi: fine and grainy
    "colon": (32.0, 0.0, 8.0),  # haustra
}
# Marker colour of each landmark and pathology: far from every mucosa colour and from each other.
MARKER_COLOURS: dict[str, tuple[int, int, int]] = {
    "z-line": (255, 255, 255),
    "pylorus": (20, 20, 20),
    "ileocecal valve": (0, 200, 200),
    "active bleeding": (255, 0, 0),
    "angiectasia": (255, 0, 255),
    "blood": (110, 0, 0),
    "erosion": (0, 0, 255),
    "erythema": (255, 128, 0),
    "hematin": (80, 50, 0),
    "lymphangioectasis": (0, 255, 0),
    "polyp": (128, 0, 255),
    "ulcer": (255, 255, 0),
}
SECTION_SHARES: dict[str, float] = {
    "mouth": 0.04,
    "esophagus": 0.06,
    "stomach": 0.25,
    "small intestine": 0.40,
    "colon": 0.25,
}
BOUNDARY_LANDMARKS = tuple(RARE_VISION.landmark_sections)  # at the entrances of stomach, small intestine, colon
MIN_SECTION_FRAMES = 10  # longer than the median filter and minimum length can erase
CENTRE_RADIUS = 0.42  # the central circle (share of the short side) where markers sit and the scorer looks
VIDEO_CODECS = {".mp4": "libx264", ".mkv": "libx264", ".ts": "libx264", ".mov": "libx264", ".avi": "mjpeg", ".webm": "libvpx-vp9"}
CONTAINER_FORMATS = {".ts": "mpegts"}
ENCODER_NAMES = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1"}


@dataclass(frozen=True)
class SyntheticConfig:
    """An exam's shape. Event lengths stay above the temporal filter's reach (SPEC §6) so that a perfect
    frame scorer reproduces the ground truth exactly.

    lesion_rate: lesion events per 1,000 frames. lesion_frames, landmark_frames: length ranges
    (inclusive). lesion_spacing: minimum frames between two lesions (more than the gap merge).
    """

    frames: int = 2000
    width: int = 480
    height: int = 480
    fps: int = 25
    seed: int = 0
    lesion_rate: float = 5.0
    lesion_frames: tuple[int, int] = (8, 40)
    landmark_frames: tuple[int, int] = (6, 14)
    lesion_spacing: int = 12

    def __post_init__(self) -> None:
        check_maxima(self, "synthetic ", {"frames": 10_000_000, "width": MAX_IMAGE_SIDE, "height": MAX_IMAGE_SIDE, "fps": 1_000, "lesion_frames": 100_000, "landmark_frames": 100_000, "lesion_spacing": 100_000})
        if self.frames < 100:
            raise ConfigError(f"a synthetic exam needs at least 100 frames, got {self.frames}")
        if min(self.width, self.height) < 32 or self.width % 2 or self.height % 2:
            raise ConfigError(f"synthetic frames must be even-sized and at least 32 px, got {self.width}x{self.height}")
        if not (1 <= self.lesion_frames[0] <= self.lesion_frames[1]) or not (1 <= self.landmark_frames[0] <= self.landmark_frames[1]):
            raise ConfigError("lesion_frames and landmark_frames must be (min, max) with 1 <= min <= max")
        if self.fps < 1 or self.lesion_rate < 0 or self.lesion_spacing < 0:
            raise ConfigError(f"fps must be >= 1 and lesion_rate, lesion_spacing >= 0, got {self.fps}, {self.lesion_rate}, {self.lesion_spacing}")


@dataclass(frozen=True)
class Marker:
    """A disc drawn on frames start..end (inclusive): centre (x, y) and radius as shares of the short side."""

    label: str
    start: int
    end: int
    x: float
    y: float
    radius: float


@dataclass(frozen=True)
class ExamPlan:
    """The ground truth of an exam: `truth` (frames, 17) bool in LABELS order, plus how to draw it."""

    config: SyntheticConfig
    truth: np.ndarray
    sections: tuple[tuple[str, int, int], ...]
    markers: tuple[Marker, ...] = field(default=())

    def events(self) -> list[Event]:
        """The ground truth as per-label events (score 1)."""
        out = []
        for c, label in enumerate(LABELS):
            for s, e in zip(*run_bounds(self.truth[:, c])):
                out.append(Event(int(s), int(e), label, 1.0))
        return out

    def submission(self, video_id: str) -> dict:
        """The ground truth JSON object (SPEC §2: tuple events, in time order, no scores)."""
        return submission_dict({video_id: self.events()}, segmentation="tuple", order="time", frame_ranges={video_id: (0, self.config.frames - 1)}, with_scores=False)


def plan_exam(config: SyntheticConfig) -> ExamPlan:
    """Sections, landmarks and lesions of an exam, drawn from `config.seed`."""
    rng = np.random.default_rng(config.seed)
    n = config.frames
    shares = np.array([SECTION_SHARES[s] for s in ANATOMY_ORDER]) * rng.uniform(0.8, 1.2, len(ANATOMY_ORDER))
    lengths = np.maximum(MIN_SECTION_FRAMES, np.round(shares / shares.sum() * n).astype(int))
    lengths[np.argmax(lengths)] -= lengths.sum() - n  # the longest section absorbs the rounding
    bounds = np.cumsum(lengths)
    starts = np.concatenate([[0], bounds[:-1]])
    truth = np.zeros((n, len(LABELS)), dtype=bool)
    sections = []
    for name, s, e in zip(ANATOMY_ORDER, starts.tolist(), (bounds - 1).tolist()):
        truth[s : e + 1, LABEL_INDEX[name]] = True
        sections.append((name, s, e))
    markers: list[Marker] = []
    busy = np.zeros(n, dtype=bool)  # frames with a landmark or lesion (plus spacing)
    last_frame = {name: e for name, _, e in sections}
    for landmark, entered in RARE_VISION.landmark_sections.items():
        boundary = last_frame[ANATOMY_ORDER[ANATOMY_ORDER.index(entered) - 1]]  # the section before's last frame
        length = int(rng.integers(config.landmark_frames[0], config.landmark_frames[1] + 1))
        s = max(0, boundary - length // 2)
        e = min(n - 1, s + length - 1)
        markers.append(Marker(landmark, s, e, 0.5, 0.5, 0.17))
        busy[max(0, s - config.lesion_spacing) : e + config.lesion_spacing + 1] = True
    wanted = int(round(n * config.lesion_rate / 1000))
    for _ in range(wanted * 20):  # bounded retries for free room
        if sum(m.label in PATHOLOGIES for m in markers) >= wanted:
            break
        length = int(rng.integers(config.lesion_frames[0], config.lesion_frames[1] + 1))
        s = int(rng.integers(0, max(1, n - length)))
        e = s + length - 1
        if e >= n or busy[s : e + 1].any():
            continue
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.08, 0.2)
        label = PATHOLOGIES[int(rng.integers(len(PATHOLOGIES)))]
        markers.append(Marker(label, s, e, float(0.5 + dist * np.cos(angle)), float(0.5 + dist * np.sin(angle)), 0.11))
        busy[max(0, s - config.lesion_spacing) : e + config.lesion_spacing + 1] = True
    for m in markers:
        truth[m.start : m.end + 1, LABEL_INDEX[m.label]] = True
    markers.sort(key=lambda m: m.start)
    return ExamPlan(config, truth, tuple(sections), tuple(markers))


def _section_texture(name: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A (2H, 2W, 3) uint8 tile of the section's mucosa; frames are windows into it (capsule motion)."""
    period, angle, noise = SECTION_TEXTURES[name]
    y, x = np.mgrid[0 : 2 * height, 0 : 2 * width].astype(np.float32)
    along = x * np.cos(angle) + y * np.sin(angle)
    across = -x * np.sin(angle) + y * np.cos(angle)
    shade = 18 * np.sin(2 * np.pi * along / period) + 8 * np.sin(2 * np.pi * across / (3.1 * period) + 1.0)
    grain = rng.normal(0.0, noise, size=(2 * height, 2 * width)).astype(np.float32)
    base = np.asarray(SECTION_COLOURS[name], dtype=np.float32)
    tile = base[None, None, :] + (shade + grain)[..., None] * np.array([1.0, 0.8, 0.6], np.float32)
    return np.clip(tile, 0, 255).astype(np.uint8)


def _vignette(height: int, width: int) -> np.ndarray:
    """(H, W, 1) float gain: flat inside the central circle, darkening towards the corners like a capsule lens."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = np.hypot(x - width / 2, y - height / 2) / min(width, height)
    return np.clip(1.0 - 1.2 * np.maximum(0.0, r - 0.45), 0.25, 1.0)[..., None]


def _disc(marker: Marker, height: int, width: int) -> np.ndarray:
    short = min(width, height)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = (width - short) / 2 + marker.x * short, (height - short) / 2 + marker.y * short
    return np.hypot(x - cx, y - cy) <= marker.radius * short


def render_frames(plan: ExamPlan) -> Iterator[np.ndarray]:
    """The exam's frames, uint8 (H, W, 3) RGB, in order (a few ms each)."""
    config = plan.config
    h, w = config.height, config.width
    rng = np.random.default_rng(config.seed + 1)
    tiles = {name: _section_texture(name, h, w, rng) for name in ANATOMY_ORDER}
    vignette = _vignette(h, w)
    section_of = np.zeros(config.frames, dtype=np.int64)
    for k, (_, s, e) in enumerate(plan.sections):
        section_of[s : e + 1] = k
    discs: dict[Marker, np.ndarray] = {}
    pos = np.array([h / 2, w / 2])
    for i in range(config.frames):
        pos = (pos + rng.normal(0, 6, 2)) % (h, w)  # the capsule drifts over the mucosa
        dy, dx = int(pos[0]), int(pos[1])
        tile = tiles[plan.sections[section_of[i]][0]]
        frame = (tile[dy : dy + h, dx : dx + w] * vignette).astype(np.uint8)
        for marker in plan.markers:
            if marker.start <= i <= marker.end:
                if marker not in discs:
                    discs[marker] = _disc(marker, h, w)
                frame[discs[marker]] = MARKER_COLOURS[marker.label]
        for marker in [m for m in discs if m.end < i]:
            del discs[marker]
        yield frame


def write_video(path: Path, plan: ExamPlan, *, codec: str | None = None, preset: str = "veryfast") -> None:
    """Encode the exam with PyAV; the codec defaults by container (H.264, MJPEG for avi, VP9 for webm)."""
    config = plan.config
    suffix = path.suffix.lower()
    encoder = ENCODER_NAMES.get(codec or "", codec) or VIDEO_CODECS.get(suffix, "libx264")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format=CONTAINER_FORMATS.get(suffix)) as container:
        stream = container.add_stream(encoder, rate=config.fps)
        stream.width, stream.height = config.width, config.height
        stream.pix_fmt = "yuvj420p" if encoder == "mjpeg" else "yuv420p"
        if encoder in ("libx264", "libx265"):
            stream.options = {"preset": preset}
        for image in render_frames(plan):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_frame_folder(
    folder: Path, plan: ExamPlan, *, digits: int = 6, start: int = 0, step: int = 1, ext: str = "png"
) -> list[Path]:
    """`frame_<start + step * i>.<ext>` per frame (zero-padded to `digits`); returns the paths in order."""
    numbers = [start + step * i for i in range(plan.config.frames)]
    return write_frames(folder, render_frames(plan), numbers, digits=digits, ext=ext)


# --- the Galar layout (SPEC §5) -------------------------------------------------------------------
# <root>/<video_id>/frame_<number:06d>.PNG, <root>/Labels/<video_id>.csv, <root>/metadata.csv. The one
# writer of it: frame folders here and the training data set of train/synthetic_galar.py.

GALAR_LABELS_DIR = "Labels"
GALAR_METADATA = "metadata.csv"


def write_frames(folder: Path, images: Iterable[np.ndarray], numbers: Sequence[int], *, digits: int = 6, ext: str = "png") -> list[Path]:
    """Save uint8 (H, W, 3) RGB `images` as `folder/frame_<number>.<ext>` (zero-padded to `digits`)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, image in zip(numbers, images):
        path = folder / f"frame_{number:0{digits}d}.{ext}"
        lower = path.with_suffix(path.suffix.lower())  # PyAV's save wants a lower-case extension
        av.VideoFrame.from_ndarray(image, format="rgb24").save(str(lower))
        if lower != path:
            os.replace(lower, path)
        paths.append(path)
    return paths


def write_galar_csv(
    path: Path,
    truth: np.ndarray,
    frame_numbers: Sequence[int],
    label_set: LabelSet = RARE_VISION,
    extra_columns: Sequence[str] = (),
) -> None:
    """A Galar label CSV: index, section (the row's anatomy label, empty if none), frame (the image file
    number), one 0/1 column per label of `label_set` (`truth` is (frames, labels) in its order), then
    `extra_columns`, all 0 (Galar columns a reader must ignore)."""
    anatomy = [label_set.index[name] for name in label_set.anatomy_order]
    with atomic_open(path, "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["index", "section", "frame", *label_set.names, *extra_columns])
        for i, (row, number) in enumerate(zip(truth.astype(int).tolist(), frame_numbers)):
            section = next((label_set.names[c] for c in anatomy if row[c]), "")
            writer.writerow([i, section, int(number), *row, *([0] * len(extra_columns))])


def write_galar_metadata(root: Path, capsules: Mapping[str, str]) -> None:
    """`root/metadata.csv`: each video's capsule system."""
    with atomic_open(root / GALAR_METADATA, "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["video_id", "capsule"])
        for video_id, capsule in capsules.items():
            writer.writerow([video_id, capsule])


def make_exam(
    out: str | os.PathLike[str],
    config: SyntheticConfig = SyntheticConfig(),
    *,
    gt_path: str | os.PathLike[str] | None = None,
    video_id: str | None = None,
    codec: str | None = None,
    digits: int = 6,
    start: int = 0,
    step: int = 1,
    ext: str = "png",
    labels_csv: str | os.PathLike[str] | None = None,
    preset: str = "veryfast",
) -> ExamPlan:
    """Write an exam (a video if `out` has a video suffix, else a frame folder) and its ground truth JSON."""
    out = Path(out)
    plan = plan_exam(config)
    is_video = out.suffix.lower() in VIDEO_CODECS
    if is_video:
        write_video(out, plan, codec=codec, preset=preset)
    else:
        write_frame_folder(out, plan, digits=digits, start=start, step=step, ext=ext)
    video_id = video_id or (out.stem if is_video else out.name)
    if gt_path is not None:
        atomic_write_text(gt_path, dump_submission(plan.submission(video_id)))
    if labels_csv is not None:
        write_galar_csv(Path(labels_csv), plan.truth, [start + step * i for i in range(config.frames)])
    return plan


class PaletteScorer:
    """A deterministic FrameScorer for synthetic exams: anatomy from the mucosa colour, the rest from markers.

    Anatomy: the per-channel median colour of the central circle, softmax over the distances to the five
    section colours. Landmarks and pathologies: the share of central pixels within `tolerance` (L1) of the
    marker colour, scaled so that `full_share` of the circle reads as probability 1. It only reads pixels,
    so it exercises the whole pipeline (decoding, scaling, batching) like a model does, at almost no cost
    (numpy on a pixel grid of step `stride`).
    """

    def __init__(self, labels: tuple[str, ...] = LABELS, *, stride: int = 4, tolerance: float = 60.0, full_share: float = 0.04, sigma: float = 20.0) -> None:
        unknown = [label for label in labels if label not in SECTION_COLOURS and label not in MARKER_COLOURS]
        if unknown:
            raise ValueError(f"PaletteScorer cannot score {unknown}")
        self.labels = tuple(labels)
        self.stride = stride
        self.tolerance = tolerance
        self.full_share = full_share
        self.sigma = sigma
        self._sections = np.array([SECTION_COLOURS[s] for s in ANATOMY_ORDER], dtype=np.float32)
        self._markers = np.array([MARKER_COLOURS[m] for m in (*LANDMARKS, *PATHOLOGIES)], dtype=np.float32)
        names = (*ANATOMY_ORDER, *LANDMARKS, *PATHOLOGIES)
        self._columns = [names.index(label) for label in self.labels]
        self._mask_cache: dict[tuple[int, int], np.ndarray] = {}

    def _central(self, height: int, width: int) -> np.ndarray:
        key = (height, width)
        if key not in self._mask_cache:
            y, x = np.mgrid[0:height, 0:width].astype(np.float32)
            r = np.hypot(x - (width - 1) / 2, y - (height - 1) / 2) / min(height, width)
            self._mask_cache[key] = (r <= CENTRE_RADIUS).reshape(-1)
        return self._mask_cache[key]

    def score(self, frames: torch.Tensor) -> np.ndarray:
        pixels = np.asarray(frames.numpy()[:, :: self.stride, :: self.stride], dtype=np.float32)
        b, h, w, _ = pixels.shape
        pixels = pixels.reshape(b, h * w, 3)[:, self._central(h, w)]
        median = np.median(pixels, axis=1)  # (B, 3)
        dist2 = ((median[:, None, :] - self._sections[None]) ** 2).sum(-1)  # (B, 5)
        logits = -dist2 / (2 * self.sigma**2)
        anatomy = np.exp(logits - logits.max(axis=1, keepdims=True))
        anatomy /= anatomy.sum(axis=1, keepdims=True)
        l1 = np.abs(pixels[:, :, None, :] - self._markers[None, None]).sum(-1)  # (B, P, 12)
        share = (l1 < self.tolerance).mean(axis=1)
        markers = np.clip(share / self.full_share, 0.0, 1.0)
        return np.concatenate([anatomy, markers], axis=1)[:, self._columns].astype(np.float32)


@click.command("synth")
@click.argument("out", type=click.Path())
@click.option("--frames", default=2000, show_default=True, help="Exam length in frames.")
@click.option("--size", default="480x480", show_default=True, help="WIDTHxHEIGHT in pixels.")
@click.option("--fps", default=25, show_default=True, help="Frame rate of a video.")
@click.option("--seed", default=0, show_default=True, help="Seed of the plan and the textures.")
@click.option("--codec", help="Video codec: h264, hevc, mjpeg, vp9, av1 or an FFmpeg encoder name (default by container).")
@click.option("--gt", "gt_path", type=click.Path(dir_okay=False), help="Ground truth JSON (default: OUT's name + .gt.json).")
@click.option("--video-id", help="Video id in the ground truth (default: file stem or folder name).")
@click.option("--lesion-rate", default=5.0, show_default=True, help="Lesion events per 1,000 frames.")
@click.option("--digits", default=6, show_default=True, help="Zero padding of frame file numbers (folders).")
@click.option("--start-number", default=0, show_default=True, help="First file number (folders).")
@click.option("--step", default=1, show_default=True, help="File number step (folders; Galar has 5 for some videos).")
@click.option("--ext", default="png", show_default=True, help="Frame file extension, e.g. png, PNG, jpg (folders).")
@click.option("--labels-csv", type=click.Path(dir_okay=False), help="Also write a Galar-style label CSV.")
def synth_command(out, frames, size, fps, seed, codec, gt_path, video_id, lesion_rate, digits, start_number, step, ext, labels_csv) -> None:
    """Write a synthetic capsule exam OUT (a video if OUT ends in .mp4/.mkv/.ts/.avi/.mov/.webm, else a
    frame folder) with its ground truth in the RARE-VISION event JSON format."""
    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size must look like 480x480, got {size!r}") from None
    config = SyntheticConfig(frames=frames, width=width, height=height, fps=fps, seed=seed, lesion_rate=lesion_rate)
    out_path = Path(out)
    gt = gt_path or str(out_path.parent / f"{out_path.stem if out_path.suffix else out_path.name}.gt.json")
    plan = make_exam(out, config, gt_path=gt, video_id=video_id, codec=codec, digits=digits, start=start_number, step=step, ext=ext, labels_csv=labels_csv)
    click.echo(f"{out}: {frames} frames {width}x{height}, {len(plan.events())} label events; ground truth {gt}", err=True)


# --- a scored synthetic exam (the report's example, benchmark and tests) -----------------------------


@dataclass(frozen=True)
class ScoredExam:
    video: Path
    events: Path
    scores: Path
    ground_truth: Path


def scored_synthetic_exam(
    folder: str | os.PathLike[str], *, frames: int = 600, size: int = 160, seed: int = 3, lesion_rate: float = 8.0, name: str = "exam"
) -> ScoredExam:
    """Write `<name>.mkv`, its ground truth, and the events and scores `run` gives for it, into `folder`.

    `PaletteScorer` reads the synthetic marker colours through the real pipeline (`run_exam`), so the
    events are the exam's ground truth: a review page of it shows meaningful findings without a model.
    """
    from vce_stream.pipeline.run import RunOptions, run_exam

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    video, gt = root / f"{name}.mkv", root / f"{name}.gt.json"
    events, scores = root / f"{name}.events.json", root / f"{name}.scores.npz"
    make_exam(video, SyntheticConfig(frames=frames, width=size, height=size, seed=seed, lesion_rate=lesion_rate), gt_path=gt)
    run_exam(video, PaletteScorer(), events, RunOptions(save_scores=str(scores)))
    return ScoredExam(video, events, scores, gt)

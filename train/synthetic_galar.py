"""A small synthetic data set in the exact Galar layout (SPEC §5), for tests and CPU demos.

The real Galar set cannot be downloaded on our machines, so tests write this one: a few videos of small
frames whose labels are visually separable. The anatomical section sets the background colour (mouth,
esophagus, stomach, small intestine, colon in order, each a stretch of the video); each landmark and
pathology that is active draws a disc of its own colour at a random place. Landmarks sit at the section
transitions (z-line, pylorus, ileocecal valve); pathologies are short random events.

Layout written (by vce_stream.synthetic's Galar writers): `<root>/<video_id>/frame_<number:06d>.PNG`,
`<root>/Labels/<video_id>.csv` with columns index, section, frame, then 0/1 label columns (the 17 labels
plus two Galar columns that are not trained), and `<root>/metadata.csv`. Videos listed in `five_x`
number their files 5 x index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vce_stream.labels import ANATOMY_ORDER, LABEL_INDEX, LABELS, LANDMARKS, PATHOLOGIES, RARE_VISION
from vce_stream.synthetic import GALAR_LABELS_DIR, write_frames, write_galar_csv, write_galar_metadata

# Galar label columns that are not among the 17 (read and ignored by the reader).
EXTRA_GALAR_COLUMNS = ("ampulla of vater", "foreign body")

ANATOMY_COLOURS = np.array([[230, 150, 150], [150, 150, 230], [150, 230, 150], [230, 230, 120], [140, 100, 70]], dtype=np.float64)
# One saturated colour per landmark/pathology, far from each other and from the backgrounds.
MARK_COLOURS = np.array(
    [
        [255, 0, 0], [0, 0, 255], [0, 255, 0], [255, 0, 255], [0, 255, 255], [255, 255, 0],
        [0, 0, 0], [255, 255, 255], [128, 0, 255], [255, 128, 0], [0, 128, 128], [128, 64, 0],
    ],
    dtype=np.float64,
)
MARKED_LABELS = (*LANDMARKS, *PATHOLOGIES)


@dataclass(frozen=True)
class SyntheticVideo:
    video_id: str
    targets: np.ndarray  # (frames, 17) uint8 in LABELS order
    frame_numbers: np.ndarray  # file number of each index
    size: int


def video_targets(frames: int, rng: np.random.Generator, pathology_events: int) -> np.ndarray:
    """(frames, 17) labels: ordered sections, landmarks at transitions, random pathology events."""
    targets = np.zeros((frames, len(LABELS)), dtype=np.uint8)
    cuts = np.sort(rng.choice(np.arange(frames // 10, frames - frames // 10), size=len(ANATOMY_ORDER) - 1, replace=False))
    # Keep every section at least 6 frames long.
    cuts = np.maximum(cuts, 6 * np.arange(1, len(ANATOMY_ORDER)))
    cuts = np.minimum(cuts, frames - 6 * np.arange(len(ANATOMY_ORDER) - 1, 0, -1))
    bounds = np.r_[0, cuts, frames]
    for k, name in enumerate(ANATOMY_ORDER):
        targets[bounds[k] : bounds[k + 1], LABEL_INDEX[name]] = 1
    for landmark, entered in RARE_VISION.landmark_sections.items():
        edge = bounds[ANATOMY_ORDER.index(entered)]  # first frame of the section the landmark leads into
        targets[max(0, edge - 2) : edge + 2, LABEL_INDEX[landmark]] = 1
    for _ in range(pathology_events):
        label = PATHOLOGIES[int(rng.integers(len(PATHOLOGIES)))]
        length = int(rng.integers(5, 13))
        start = int(rng.integers(0, frames - length))
        targets[start : start + length, LABEL_INDEX[label]] = 1
    return targets


def render_frame(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 (size, size, 3): the section's background with noise, one disc per active marked label."""
    anatomy = [k for k, name in enumerate(ANATOMY_ORDER) if labels[LABEL_INDEX[name]]]
    base = ANATOMY_COLOURS[anatomy[0]] if anatomy else np.full(3, 128.0)
    image = base[None, None, :] + rng.normal(0, 12, size=(size, size, 3))
    yy, xx = np.mgrid[0:size, 0:size]
    radius = size / 5
    for m, name in enumerate(MARKED_LABELS):
        if labels[LABEL_INDEX[name]]:
            cy, cx = rng.uniform(size * 0.3, size * 0.7, size=2)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
            image[disc] = MARK_COLOURS[m]
    return np.clip(image, 0, 255).astype(np.uint8)


def write_synthetic_galar(
    root: str | Path,
    num_videos: int = 6,
    frames: int = 120,
    sizes: tuple[int, ...] = (40, 48),
    five_x: tuple[str, ...] = ("2",),
    pathology_events: int = 6,
    seed: int = 0,
) -> dict[str, SyntheticVideo]:
    """Write the data set under `root`; return what was written (video id -> labels and file numbers)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    written: dict[str, SyntheticVideo] = {}
    for v in range(num_videos):
        video_id = str(v + 1)
        size = sizes[v % len(sizes)]
        targets = video_targets(frames, rng, pathology_events)
        numbers = np.arange(frames) * (5 if video_id in five_x else 1)
        write_frames(root / video_id, (render_frame(targets[i], size, rng) for i in range(frames)), numbers.tolist(), digits=6, ext="PNG")
        write_galar_csv(root / GALAR_LABELS_DIR / f"{video_id}.csv", targets, numbers.tolist(), extra_columns=EXTRA_GALAR_COLUMNS)
        written[video_id] = SyntheticVideo(video_id, targets, numbers, size)
    write_galar_metadata(root, {video_id: "synthetic" for video_id in written})
    return written

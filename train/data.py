"""Galar-layout data (SPEC §5): reading label CSVs and frame folders, the split by video, the datasets.

Layout: `<root>/<video_id>/frame_<number>.PNG` and `<root>/Labels/<video_id>.csv` with columns
`index`, `section`, `frame`, then 0/1 label columns. Frame indices come from `index` (SPEC §4); the
image of a row is the file numbered by its `frame` column (5 x index for some videos).

What is wrong with a folder is decided here, once, with a one-line message naming the file:
- errors (InputError): no Labels/ folder or no CSV; a CSV without `index`/`frame` or without one of the
  trained labels; a value that is not 0/1; a repeated index; a CSV whose frame folder is missing; two
  image files with one number; a row without its image when `data.missing_image` is "error".
- counted warnings (`ReadReport`): rows without an image when `missing_image` is "skip", images
  without a row, columns that are not trained labels (Galar has 29 label columns; 17 are used).
Column names are matched case-insensitively with "_" read as a space, and through `data.column_aliases`.
"""

from __future__ import annotations

import csv
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vce_stream.sources.preprocess import PreprocessConfig
from vce_stream.errors import InputError
from vce_stream.events.event import Event
from vce_stream.sources.preprocess import read_image

from train.config import AugmentConfig, DataConfig

LABELS_DIR = "Labels"
REQUIRED_COLUMNS = ("index", "frame")
KNOWN_META_COLUMNS = ("index", "section", "frame")
FRAME_FILE = re.compile(r"^frame_(\d+)\.(png|jpe?g)$", re.IGNORECASE)


@dataclass(frozen=True)
class VideoFrames:
    """One video's labelled frames, sorted by frame index.

    index: int64 (N,) frame indices (the CSV `index` column). files: the image of each frame.
    targets: uint8 (N, L) 0/1 labels in the configured label order.
    """

    video_id: str
    index: np.ndarray
    files: tuple[Path, ...]
    targets: np.ndarray

    def __len__(self) -> int:
        return int(self.index.size)

    def every_kth(self, k: int) -> VideoFrames:
        """Every k-th frame by position (the first frame always kept)."""
        if k == 1:
            return self
        keep = np.arange(0, len(self), k)
        return VideoFrames(self.video_id, self.index[keep], tuple(self.files[i] for i in keep), self.targets[keep])


@dataclass
class ReadReport:
    """Counted warnings of a folder read (errors are raised instead)."""

    rows_without_image: dict[str, int] = field(default_factory=dict)
    images_without_row: dict[str, int] = field(default_factory=dict)
    ignored_columns: tuple[str, ...] = ()

    def warnings(self) -> list[str]:
        out = []
        if self.rows_without_image:
            total = sum(self.rows_without_image.values())
            out.append(f"{total} CSV row(s) without an image skipped (videos {sorted(self.rows_without_image)})")
        if self.images_without_row:
            total = sum(self.images_without_row.values())
            out.append(f"{total} image(s) without a CSV row ignored (videos {sorted(self.images_without_row)})")
        if self.ignored_columns:
            out.append(f"columns not trained, ignored: {list(self.ignored_columns)}")
        return out


def normalise_column(name: str) -> str:
    return " ".join(name.strip().lower().replace("_", " ").split())


@dataclass(frozen=True)
class LabelTable:
    """A parsed label CSV: frame indices, file numbers and targets, sorted by index."""

    index: np.ndarray
    frame: np.ndarray
    targets: np.ndarray
    ignored_columns: tuple[str, ...]


def read_label_csv(path: Path, labels: Sequence[str], aliases: Mapping[str, str] | None = None) -> LabelTable:
    """Parse one Galar label CSV for `labels` (see the module docstring for what is an error).

    aliases: CSV column name -> label name, for columns spelled differently from the label.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable CSV ({exc})") from None
    if not rows:
        raise InputError(f"{path}: empty CSV (expected a header with index, section, frame and label columns)")
    renamed = {normalise_column(k): v for k, v in (aliases or {}).items()}
    header = [renamed.get(normalise_column(name), normalise_column(name)) for name in rows[0]]
    position = {name: i for i, name in enumerate(header)}
    if len(position) != len(header):
        raise InputError(f"{path}: repeated column name in header {rows[0]}")
    missing = [name for name in (*REQUIRED_COLUMNS, *labels) if name not in position]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing}")
    wanted = [position[name] for name in labels]
    ignored = tuple(n for n in header if n not in labels and n not in KNOWN_META_COLUMNS)
    body = [row for row in rows[1:] if any(cell.strip() for cell in row)]
    index = np.empty(len(body), dtype=np.int64)
    frame = np.empty(len(body), dtype=np.int64)
    targets = np.empty((len(body), len(labels)), dtype=np.uint8)
    for r, row in enumerate(body):
        line = r + 2
        if len(row) != len(header):
            raise InputError(f"{path}: line {line} has {len(row)} fields, the header has {len(header)}")
        try:
            index[r] = int(row[position["index"]])
            frame[r] = int(row[position["frame"]])
            values = [float(row[i]) for i in wanted]
        except ValueError:
            raise InputError(f"{path}: line {line}: index and frame must be integers and labels 0 or 1") from None
        if any(v not in (0.0, 1.0) for v in values):
            raise InputError(f"{path}: line {line}: label values must be 0 or 1, got {values}")
        targets[r] = values
    order = np.argsort(index, kind="stable")
    index, frame, targets = index[order], frame[order], targets[order]
    repeated = index[1:][index[1:] == index[:-1]]
    if repeated.size:
        raise InputError(f"{path}: frame index {int(repeated[0])} appears more than once")
    return LabelTable(index, frame, targets, ignored)


def scan_frame_files(folder: Path) -> dict[int, Path]:
    """File number -> path of the `frame_<number>.<png|jpg>` images in `folder`."""
    found: dict[int, Path] = {}
    for path in folder.iterdir():
        match = FRAME_FILE.match(path.name)
        if match is None:
            continue
        number = int(match.group(1))
        if number in found:
            raise InputError(f"{folder}: two images numbered {number}: {found[number].name} and {path.name}")
        found[number] = path
    return found


def read_video(root: Path, video_id: str, cfg: DataConfig, report: ReadReport) -> VideoFrames:
    """One video's frames and labels; counted warnings go into `report`."""
    csv_path = root / LABELS_DIR / f"{video_id}.csv"
    table = read_label_csv(csv_path, cfg.labels, cfg.column_aliases)
    missing_image = cfg.missing_image
    folder = root / video_id
    if not folder.is_dir():
        raise InputError(f"{csv_path}: its frame folder {folder} does not exist")
    files = scan_frame_files(folder)
    present = np.array([int(n) in files for n in table.frame], dtype=bool)
    if not present.all():
        first = int(table.frame[~present][0])
        if missing_image == "error":
            raise InputError(
                f"{csv_path}: {int((~present).sum())} row(s) have no image in {folder}, first frame {first} "
                "(set data.missing_image: skip to train without them)"
            )
        report.rows_without_image[video_id] = int((~present).sum())
    extra = len(set(files) - set(table.frame.tolist()))
    if extra:
        report.images_without_row[video_id] = extra
    report.ignored_columns = tuple(sorted(set(report.ignored_columns) | set(table.ignored_columns)))
    return VideoFrames(
        video_id,
        table.index[present],
        tuple(files[int(n)] for n in table.frame[present]),
        table.targets[present],
    )


def list_videos(root: Path) -> list[str]:
    """Video ids that have a label CSV, in natural order ("2" before "10")."""
    labels_dir = root / LABELS_DIR
    if not labels_dir.is_dir():
        raise InputError(f"{root}: no {LABELS_DIR}/ folder (expected the Galar layout: Labels/<video_id>.csv)")
    ids = [p.stem for p in labels_dir.glob("*.csv")]
    if not ids:
        raise InputError(f"{labels_dir}: no <video_id>.csv label files")
    return sorted(ids, key=lambda v: (0, int(v), v) if v.isdigit() else (1, 0, v))


@dataclass(frozen=True)
class GalarData:
    videos: dict[str, VideoFrames]
    report: ReadReport


def read_galar(root: str | Path, cfg: DataConfig) -> GalarData:
    """All (or `cfg.videos`) videos of a Galar-layout folder, at full frame rate."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: data folder not found")
    available = list_videos(root)
    ids = list(cfg.videos) or available
    unknown = sorted(set(ids) - set(available))
    if unknown:
        raise InputError(f"{root}: no label CSV for video(s) {unknown} under {LABELS_DIR}/")
    report = ReadReport()
    videos = {}
    for video_id in ids:
        video = read_video(root, video_id, cfg, report)
        if len(video) == 0:
            raise InputError(f"{root / LABELS_DIR / (video_id + '.csv')}: no frames with images")
        videos[video_id] = video
    return GalarData(videos, report)


def split_videos(
    video_ids: Sequence[str], val_fraction: float, seed: int, val_videos: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """(train ids, validation ids): whole videos, never frames; seeded; at least one video each."""
    ids = list(video_ids)
    if len(ids) < 2:
        raise InputError(f"need at least two videos to split into training and validation, got {len(ids)}")
    if val_videos:
        unknown = sorted(set(val_videos) - set(ids))
        if unknown:
            raise InputError(f"data.val_videos names video(s) not in the data: {unknown}")
        val = [v for v in ids if v in set(val_videos)]
    else:
        shuffled = ids.copy()
        random.Random(seed).shuffle(shuffled)
        count = min(len(ids) - 1, max(1, round(len(ids) * val_fraction)))
        chosen = set(shuffled[:count])
        val = [v for v in ids if v in chosen]
    train = [v for v in ids if v not in set(val)]
    if not train:
        raise InputError("data.val_videos leaves no video for training")
    return train, val


def ground_truth_events(video: VideoFrames, labels: Sequence[str]) -> list[Event]:
    """Per-label runs of the full-rate labels (consecutive indices; a hole in the index ends a run)."""
    events = []
    index = video.index
    for c, label in enumerate(labels):
        on = video.targets[:, c].astype(bool)
        # A run continues while the label stays on and the next index is the next frame.
        breaks = np.flatnonzero(~on[1:] | ~on[:-1] | (np.diff(index) != 1)) + 1
        for part in np.split(np.arange(len(index)), breaks):
            if part.size and on[part[0]]:
                events.append(Event(int(index[part[0]]), int(index[part[-1]]), label, 1.0))
    return events


# -- datasets ------------------------------------------------------------------------------------------


def build_augment(cfg: AugmentConfig, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """SPEC §9 augmentations on a uint8 (3, S, S) tensor; output uint8 of the same size."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=cfg.crop_scale, antialias=True),
            v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue),
            v2.RandomHorizontalFlip(cfg.hflip),
            v2.RandomVerticalFlip(cfg.vflip),
            v2.RandomRotation(cfg.rotation),
            v2.RandomErasing(cfg.erasing, scale=cfg.erasing_scale, value=0),
        ]
    )


class FrameDataset(Dataset):
    """Frames read through the runtime's `read_image` (so training sees what inference sees).

    An item key is a position, or (position, seed) for an augmented sample: the augmentation draws its
    randomness from `seed` alone, so a sample is the same in any worker, and after a resume.
    Returns (uint8 (3, S, S) frame, float32 (L,) targets).
    """

    def __init__(
        self,
        files: Sequence[Path],
        targets: np.ndarray,
        preprocess: PreprocessConfig,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if len(files) != targets.shape[0]:
            raise ValueError(f"{len(files)} files for {targets.shape[0]} target rows")
        self.files = list(files)
        self.targets = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))
        self.preprocess = preprocess
        self.augment = augment

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        position, seed = key if isinstance(key, tuple) else (key, None)
        frame = torch.from_numpy(read_image(self.files[position], self.preprocess)).permute(2, 0, 1).contiguous()
        if self.augment is not None and seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                frame = self.augment(frame)
        return frame, self.targets[position]


def concat_videos(videos: Sequence[VideoFrames]) -> tuple[list[Path], np.ndarray]:
    """All frames of `videos` in order: (files, targets)."""
    files = [f for v in videos for f in v.files]
    width = videos[0].targets.shape[1] if videos else 0
    targets = np.concatenate([v.targets for v in videos]) if videos else np.zeros((0, width), np.uint8)
    return files, targets

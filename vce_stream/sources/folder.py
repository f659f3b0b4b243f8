"""Frame folders as Galar and RARE-VISION ship exams: `frame_<n>.png` / `.jpg`, any zero padding, any case.

Frame index = the number in the file name (SPEC §4), or the Galar CSV's `index` for that file number
when a label CSV is given. The listing is checked before anything is decoded: holes in the numbering
are refused unless allowed (a hole is usually a broken copy, or file numbers that are not indices).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np

from vce_stream.errors import InputError, VceError
from vce_stream.limits import MAX_FRAME_INDEX
from vce_stream.sources.base import ResolutionGuard, SourceConfig, SourceStats, StreamBroken, is_worker_fault, worker_failure
from vce_stream.sources.galar import read_galar_index
from vce_stream.sources.parallel import ordered_map
from vce_stream.sources.preprocess import open_image

FRAME_NAME = re.compile(r"^frame_(\d+)\.(png|jpe?g)$", re.IGNORECASE)


def list_frame_files(folder: Path) -> list[tuple[int, Path]]:
    """(file number, path) of every frame file in `folder`, by number; other files are ignored."""
    found: dict[int, Path] = {}
    for entry in os.scandir(folder):
        match = FRAME_NAME.match(entry.name)
        if match and entry.is_file():
            number = int(match.group(1))
            if number > MAX_FRAME_INDEX:
                raise InputError(f"{folder}: {entry.name}: frame number beyond {MAX_FRAME_INDEX:,}, not a frame index")
            if number in found:
                raise InputError(f"{folder}: frame number {number} appears twice ({found[number].name}, {entry.name})")
            found[number] = Path(entry.path)
    return sorted(found.items())


def describe_gaps(indices: np.ndarray) -> tuple[int, int | None]:
    """(how many indices are missing between the first and the last, the first missing one)."""
    steps = np.diff(indices)
    holes = np.flatnonzero(steps > 1)
    if holes.size == 0:
        return 0, None
    return int((steps[holes] - 1).sum()), int(indices[holes[0]] + 1)


class FrameFolderSource:
    """Frames of a folder of images, decoded with PyAV in frame-index order."""

    def __init__(
        self, folder: str | os.PathLike[str], config: SourceConfig = SourceConfig(), *, labels_csv: str | os.PathLike[str] | None = None
    ) -> None:
        folder = Path(folder)
        self.config = config
        self.name = str(folder)
        self.video_id = folder.resolve().name
        self.stats = SourceStats()
        if not folder.exists():
            raise InputError(f"{folder}: folder not found")
        if not folder.is_dir():
            raise InputError(f"{folder}: not a folder")
        files = list_frame_files(folder)
        if not files:
            raise InputError(f"{folder}: no frame files (frame_<n>.png or .jpg)")
        if labels_csv is not None:
            files = self._map_through_csv(files, Path(labels_csv))
        self._files = files
        indices = np.array([index for index, _ in files], dtype=np.int64)
        missing, first_missing = describe_gaps(indices)
        if missing and not config.allow_gaps:
            raise InputError(
                f"{folder}: {missing} frame(s) missing between frame {indices[0]} and {indices[-1]} "
                f"(first missing: {first_missing}); pass --allow-gaps to score it anyway"
                + ("" if labels_csv else ", or --labels-csv if file numbers are not frame indices")
            )
        self.stats.missing = missing
        self.expected_frames = len(files)

    def _map_through_csv(self, files: list[tuple[int, Path]], csv_path: Path) -> list[tuple[int, Path]]:
        mapping = read_galar_index(csv_path)
        unknown = [path.name for number, path in files if number not in mapping]
        if unknown:
            raise InputError(f"{csv_path}: no row for {len(unknown)} file(s) of {self.name}, e.g. {unknown[0]}")
        return sorted((mapping[number], path) for number, path in files)

    def frames(self, transform: Callable[[av.VideoFrame], Any] | None = None) -> Iterator[tuple[int, Any]]:
        """Decoded images in index order; an unreadable image ends the exam (StreamBroken).

        With `transform`, images are decoded and transformed on `config.workers` threads (PyAV's PNG/JPEG
        decoders and swscale run without the GIL); order, checks and errors are those of one thread.
        """
        guard = ResolutionGuard(self.name)

        def load(item: tuple[int, Path]) -> tuple[tuple[int, int], Any]:
            index, path = item
            try:
                frame = open_image(path)
                return (frame.width, frame.height), frame if transform is None else transform(frame)
            except VceError:
                raise
            except Exception as exc:  # the worker failed, not the file: the exam stops at this frame
                if not is_worker_fault(exc):
                    raise  # a bug keeps its traceback
                raise worker_failure(self.name, index, exc) from exc

        workers = self.config.workers if transform is not None else 1
        results = ordered_map(load, self._files, workers)
        try:
            for index, _ in self._files:
                try:
                    size, frame = next(results)
                except InputError as exc:
                    if self.stats.delivered == 0:
                        raise
                    raise StreamBroken(str(exc)) from None
                guard.check_size(size, index)
                self.stats.delivered += 1
                yield index, frame
        finally:
            results.close()

    def close(self) -> None:
        """Nothing stays open between images."""

"""Saved per-frame probabilities (`--save-scores`, read by `postprocess` and `calibrate`).

Format: one `.npz` file (numpy's zip of arrays, loaded with `allow_pickle=False`) holding
- `format`: the string "vce-stream-scores/1";
- `labels`: the label names, in column order;
- `video_ids`: the video ids, in order;
- `frames_<k>`: int64 frame indices of video k (strictly increasing, in [0, MAX_FRAME_INDEX]);
- `probs_<k>`: float32 (frames, labels) probabilities of video k (finite, in [0, 1]).
Several videos per file; written atomically.
"""

from __future__ import annotations

import io
import math
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npformat

from vce_stream.atomic import atomic_write_bytes
from vce_stream.errors import InputError
from vce_stream.labels import validate_labels
from vce_stream.limits import MAX_FRAME_INDEX, MAX_SCORE_FRAMES, MAX_VIDEOS
from vce_stream.probabilities import check_probabilities

FORMAT = "vce-stream-scores/1"
VideoScores = tuple[np.ndarray, np.ndarray]  # frame indices (N,), probabilities (N, labels)


def save_scores(path: str | Path, videos: Mapping[str, VideoScores], labels: Sequence[str]) -> None:
    """Write probabilities of one or more videos to `path` atomically."""
    arrays: dict[str, np.ndarray] = {
        "format": np.array(FORMAT),
        "labels": np.array(list(labels), dtype=str),
        "video_ids": np.array([str(v) for v in videos], dtype=str),
    }
    for k, (frames, probs) in enumerate(videos.values()):
        frames = np.asarray(frames, dtype=np.int64)
        probs = np.asarray(probs, dtype=np.float32)
        if probs.shape != (frames.size, len(labels)):
            raise ValueError(f"video {k}: probs {probs.shape} do not match {frames.size} frames x {len(labels)} labels")
        arrays[f"frames_{k}"] = frames
        arrays[f"probs_{k}"] = probs
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_scores(path: str | Path) -> tuple[tuple[str, ...], dict[str, VideoScores]]:
    """Read a scores file: (labels, video id -> (frame indices, probabilities)).

    Validated as strictly as a bundle, before anything is decided from it: array shapes are checked in
    the headers against the file's size and `vce_stream.limits` before any array is loaded; labels are
    the scorer's (SPEC §1), one per probability column; video ids a flat list of distinct strings;
    frame indices whole numbers in [0, MAX_FRAME_INDEX], strictly increasing; probabilities finite
    numbers in [0, 1]. Anything else is an InputError naming the file (and the video and frame).
    """
    try:
        headers = _read_headers(path)
        with np.load(path, allow_pickle=False) as data:
            return _validated(path, headers, data)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a scores file") from None
    except (zipfile.BadZipFile, zlib.error, ValueError, KeyError, OSError, EOFError, TypeError) as exc:
        raise InputError(f"{path}: not a readable scores file ({' '.join(str(exc).split())})") from None


def _read_headers(path: str | Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Member name (without `.npy`) -> (shape, dtype), read from the .npy headers only, each checked
    against the bytes the member declares: a header may not claim more data than the file holds."""
    headers = {}
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        if len(members) > 2 * MAX_VIDEOS + 3:
            raise InputError(f"{path}: {len(members)} arrays, more than a scores file of {MAX_VIDEOS:,} videos holds")
        for info in members:
            if not info.filename.endswith(".npy"):
                raise InputError(f"{path}: unexpected member {info.filename!r} (not a vce-stream scores file)")
            with archive.open(info) as handle:
                version = npformat.read_magic(handle)
                if version == (1, 0):
                    shape, _, dtype = npformat.read_array_header_1_0(handle)
                else:
                    shape, _, dtype = npformat.read_array_header_2_0(handle)
                header_bytes = handle.tell()
            name = info.filename[: -len(".npy")]
            if dtype.hasobject:
                raise InputError(f"{path}: array {name!r} holds Python objects, which a scores file never does")
            needed = math.prod(shape) * dtype.itemsize
            if header_bytes + needed > info.file_size:
                raise InputError(
                    f"{path}: array {name!r} claims shape {shape} ({needed:,} bytes) but holds {info.file_size:,} bytes"
                )
            headers[name] = (tuple(int(n) for n in shape), dtype)
    return headers


def _validated(path: str | Path, headers: dict, data: Any) -> tuple[tuple[str, ...], dict[str, VideoScores]]:
    def text_list(name: str) -> list[str]:
        shape, dtype = headers.get(name, (None, None))
        if shape is None:
            raise InputError(f"{path}: no {name!r} array (not a vce-stream scores file)")
        if len(shape) != 1 or dtype.kind != "U":
            raise InputError(f"{path}: {name!r} must be a flat list of strings, got a {dtype} array of shape {shape}")
        return [str(x) for x in data[name]]

    shape, dtype = headers.get("format", (None, None))
    if shape != () or dtype.kind != "U" or str(data["format"]) != FORMAT:
        raise InputError(f"{path}: not a vce-stream scores file (expected format {FORMAT})")
    try:
        labels = validate_labels(text_list("labels"))
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None
    if not labels:
        raise InputError(f"{path}: the label list is empty")
    video_ids = text_list("video_ids")
    if len(video_ids) > MAX_VIDEOS:
        raise InputError(f"{path}: {len(video_ids):,} videos, more than the {MAX_VIDEOS:,} a scores file may hold")
    seen: set[str] = set()
    for video_id in video_ids:
        if not video_id.strip():
            raise InputError(f"{path}: an empty video id")
        if video_id in seen:
            raise InputError(f"{path}: video {video_id!r} appears twice")
        seen.add(video_id)
    expected = {"format", "labels", "video_ids"} | {f"{kind}_{k}" for k in range(len(video_ids)) for kind in ("frames", "probs")}
    missing, extra = sorted(expected - set(headers)), sorted(set(headers) - expected)
    if missing or extra:
        raise InputError(f"{path}: arrays do not match its {len(video_ids)} video(s): missing {missing[:3]}, unexpected {extra[:3]}")
    total = 0
    for k, video_id in enumerate(video_ids):
        at = f"{path}: video {video_id!r}"
        (f_shape, f_dtype), (p_shape, p_dtype) = headers[f"frames_{k}"], headers[f"probs_{k}"]
        if len(f_shape) != 1:
            raise InputError(f"{at}: frame indices must be a flat list, got shape {f_shape}")
        if f_dtype.kind not in "iu":
            raise InputError(f"{at}: frame indices must be whole numbers, got {f_dtype}")
        if len(p_shape) != 2 or p_shape != (f_shape[0], len(labels)):
            raise InputError(f"{at}: probabilities of shape {p_shape} do not fit {f_shape[0]} frames x {len(labels)} labels")
        if p_dtype.kind != "f":
            raise InputError(f"{at}: probabilities must be floating-point numbers, got {p_dtype}")
        total += f_shape[0]
        if total > MAX_SCORE_FRAMES:
            raise InputError(f"{path}: more than {MAX_SCORE_FRAMES:,} frames, the most a scores file may hold")
    videos: dict[str, VideoScores] = {}
    for k, video_id in enumerate(video_ids):
        at = f"{path}: video {video_id!r}"
        frames = _checked_frames(data[f"frames_{k}"], at)
        probs = data[f"probs_{k}"]
        check_probabilities(probs, frames, at, labels=labels)
        videos[video_id] = (frames, probs.astype(np.float32))
    return labels, videos


def _checked_frames(raw: np.ndarray, at: str) -> np.ndarray:
    """int64 frame indices in [0, MAX_FRAME_INDEX], strictly increasing; checked before the cast, so a
    uint64 above the int64 range is refused instead of wrapping to a negative index."""
    if raw.size == 0:
        return raw.astype(np.int64)
    out_of_range = (raw > MAX_FRAME_INDEX) | ((raw < 0) if raw.dtype.kind == "i" else False)
    bad = np.flatnonzero(out_of_range)
    if bad.size:
        raise InputError(f"{at}: frame index {int(raw[bad[0]])} at position {int(bad[0])} is outside [0, {MAX_FRAME_INDEX:,}]")
    frames = raw.astype(np.int64)
    steps = np.flatnonzero(np.diff(frames) <= 0)
    if steps.size:
        i = int(steps[0])
        what = "repeats" if frames[i + 1] == frames[i] else "goes back to"
        raise InputError(f"{at}: frame indices must increase: after frame {int(frames[i])} the file {what} {int(frames[i + 1])}")
    return frames

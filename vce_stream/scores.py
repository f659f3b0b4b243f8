"""Saved per-frame probabilities (`--save-scores`, read by `postprocess` and `calibrate`).

Format: one `.npz` file (numpy's zip of arrays, loaded with `allow_pickle=False`) holding
- `format`: the string "vce-stream-scores/1";
- `labels`: the label names, in column order;
- `video_ids`: the video ids, in order;
- `frames_<k>`: int64 frame indices of video k (strictly increasing);
- `probs_<k>`: float32 (frames, labels) probabilities of video k.
Several videos per file; written atomically.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from vce_stream.atomic import atomic_write_bytes
from vce_stream.errors import InputError

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
    """Read a scores file: (labels, video id -> (frame indices, probabilities)); InputError if malformed."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "format" not in data or str(data["format"]) != FORMAT:
                raise InputError(f"{path}: not a vce-stream scores file (expected format {FORMAT})")
            labels = tuple(str(x) for x in data["labels"])
            videos: dict[str, VideoScores] = {}
            for k, video_id in enumerate(str(x) for x in data["video_ids"]):
                frames, probs = data[f"frames_{k}"], data[f"probs_{k}"]
                if probs.shape != (frames.size, len(labels)):
                    raise InputError(f"{path}: video {video_id!r} has {frames.size} frames but probs {probs.shape}")
                videos[video_id] = (frames.astype(np.int64), probs.astype(np.float32))
            return labels, videos
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (zipfile.BadZipFile, ValueError, KeyError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable scores file ({exc})") from None

"""The embeddings file: one exam's unit image features (fp16) with their frame indices and bundle hash.

Written incrementally while an exam streams (`EmbeddingWriter`), so memory stays flat however long the
exam; finalised by an atomic rename, so the final name holds a whole file or nothing (a killed run
leaves only a hidden `.NAME.*.tmp` beside it). `read_embeddings` validates and memory-maps it.

Format (version 1), little-endian, sizes in bytes:

    offset 0      HEADER_SIZE (4096) bytes: b"VCEEMB1\\n" then one UTF-8 JSON object padded with spaces:
                    {"format": "vce-stream-embeddings", "version": 1, "dim": D, "count": N,
                     "dtype": "float16", "index_dtype": "int64", "bundle_hash": 64 hex digits,
                     "video_id": str, "complete": bool,
                     "vectors_offset": 4096, "indices_offset": 4096 + pad8(N * D * 2)}
    vectors_offset  N x D float16, row-major: row i is the L2-normalised feature of frame indices[i]
    indices_offset  N int64 frame indices (SPEC §4 basis), strictly increasing
    file size     exactly indices_offset + 8 N (anything else is refused)

Why this layout: the vectors stream straight into the file as they arrive (the header is rewritten
with the count at close); the indices (8 bytes a frame) stream to a second temporary file and are
appended at close. Both arrays are raw and aligned, so `numpy.memmap` reads them without loading the
file, and the fixed header is checked before any array is touched. Cost: 2 D + 8 bytes a frame
(1032 at D = 512) plus the 4 KiB header. "complete": false marks an exam that broke part way (exit 3)
whose frames so far were kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vce_stream.errors import FrameOrderError, InputError

MAGIC = b"VCEEMB1\n"
FORMAT = "vce-stream-embeddings"
VERSION = 1
HEADER_SIZE = 4096
MAX_DIM = 65536
MAX_VIDEO_ID = 1024
_HASH_RE = re.compile(r"^[0-9a-f]{64}$")
_COPY_CHUNK = 1 << 20


def _pad8(n: int) -> int:
    return (n + 7) // 8 * 8


def _header_bytes(fields: dict[str, Any]) -> bytes:
    text = json.dumps(fields, sort_keys=True).encode("utf-8")
    block = MAGIC + text
    if len(block) > HEADER_SIZE:
        raise ValueError("embeddings header does not fit in its block (video id too long?)")
    return block + b" " * (HEADER_SIZE - len(block))


@dataclass(frozen=True)
class Embeddings:
    """One exam's embeddings as read back: vectors (N, D) float16 and indices (N,) int64, memory-mapped."""

    path: Path
    bundle_hash: str
    video_id: str
    dim: int
    complete: bool
    frame_indices: np.ndarray
    vectors: np.ndarray

    def __len__(self) -> int:
        return int(self.frame_indices.shape[0])

    def row_of(self, frame_index: int) -> int:
        """The row holding `frame_index`; InputError naming the file when the exam has no such frame."""
        row = int(np.searchsorted(self.frame_indices, frame_index))
        if row >= len(self) or int(self.frame_indices[row]) != frame_index:
            span = f"{int(self.frame_indices[0])}..{int(self.frame_indices[-1])}" if len(self) else "none"
            raise InputError(
                f"{self.path}: exam {self.video_id!r} has no embedding for frame {frame_index} "
                f"({len(self)} frames, indices {span})"
            )
        return row


class EmbeddingWriter:
    """Streams one exam's features to `path`: push(frame_indices, features) per batch, then close().

    Rows go to a temporary file in the target folder as they arrive (memory holds one batch); close()
    appends the indices, writes the header, fsyncs and renames onto `path`. abort() (or an exception
    inside `with`) removes the temporary files and leaves `path` untouched. Features are cast to fp16;
    pass them L2-normalised (what `FrameProbabilityModel.forward_with_features` returns).
    """

    def __init__(self, path: str | os.PathLike[str], dim: int, bundle_hash: str, video_id: str) -> None:
        if not 1 <= dim <= MAX_DIM:
            raise ValueError(f"embedding dim {dim} outside 1..{MAX_DIM}")
        if not _HASH_RE.match(bundle_hash):
            raise ValueError(f"bundle hash {bundle_hash!r} is not 64 lowercase hex digits")
        if len(video_id) > MAX_VIDEO_ID:
            raise ValueError(f"video id longer than {MAX_VIDEO_ID} characters")
        self.path = Path(path)
        self.dim = dim
        self.bundle_hash = bundle_hash
        self.video_id = video_id
        self.count = 0
        self._last = -1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self._tmp = Path(name)
        self._rows = os.fdopen(fd, "w+b")
        fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".idx.tmp", dir=self.path.parent)
        self._idx_tmp = Path(name)
        self._indices = os.fdopen(fd, "w+b")
        self._rows.write(_header_bytes(self._fields(complete=False)))
        self._open = True

    def _fields(self, *, complete: bool) -> dict[str, Any]:
        vectors_bytes = self.count * self.dim * 2
        return {
            "format": FORMAT,
            "version": VERSION,
            "dim": self.dim,
            "count": self.count,
            "dtype": "float16",
            "index_dtype": "int64",
            "bundle_hash": self.bundle_hash,
            "video_id": self.video_id,
            "complete": complete,
            "vectors_offset": HEADER_SIZE,
            "indices_offset": HEADER_SIZE + _pad8(vectors_bytes),
        }

    def push(self, frame_indices: Any, features: Any) -> None:
        """Append a batch: frame indices (B,) strictly increasing across pushes, features (B, dim)."""
        if not self._open:
            raise ValueError("push after close or abort")
        indices = np.asarray(frame_indices, dtype=np.int64).reshape(-1)
        if hasattr(features, "detach"):  # a torch tensor
            features = features.detach().cpu().float().numpy()
        rows = np.asarray(features)
        if rows.ndim != 2 or rows.shape != (indices.shape[0], self.dim):
            raise ValueError(f"features of shape {rows.shape} for {indices.shape[0]} frames of dim {self.dim}")
        if indices.size == 0:
            return
        if indices[0] <= self._last or np.any(np.diff(indices) <= 0):
            raise FrameOrderError(f"{self.path}: frame indices must strictly increase (after {self._last})")
        self._rows.write(np.ascontiguousarray(rows, dtype="<f2").tobytes())
        self._indices.write(indices.astype("<i8").tobytes())
        self._last = int(indices[-1])
        self.count += int(indices.size)

    def close(self, *, complete: bool = True) -> Path:
        """Finalise: indices appended, header written, fsync, atomic rename onto `path`. Returns `path`.

        complete=False keeps the frames so far, flagged incomplete (an exam that broke part way).
        """
        if not self._open:
            raise ValueError("close after close or abort")
        try:
            fields = self._fields(complete=complete)
            self._rows.write(b"\0" * (fields["indices_offset"] - HEADER_SIZE - self.count * self.dim * 2))
            self._indices.seek(0)
            while chunk := self._indices.read(_COPY_CHUNK):
                self._rows.write(chunk)
            self._rows.seek(0)
            self._rows.write(_header_bytes(fields))
            self._rows.flush()
            os.fsync(self._rows.fileno())
            self._close_handles()
            os.chmod(self._tmp, 0o666 & ~_umask())
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._remove(self._idx_tmp)
        return self.path

    def abort(self) -> None:
        """Drop everything written; `path` is untouched. Safe to call twice."""
        self._close_handles()
        self._remove(self._tmp)
        self._remove(self._idx_tmp)

    def _close_handles(self) -> None:
        self._open = False
        for handle in (self._rows, self._indices):
            with contextlib.suppress(OSError):
                handle.close()

    @staticmethod
    def _remove(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def __enter__(self) -> EmbeddingWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if self._open:
                self.close()
        else:
            self.abort()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated header of an embeddings file; InputError naming the file on any problem."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            block = handle.read(HEADER_SIZE)
    except FileNotFoundError:
        raise InputError(f"{path}: embeddings file not found") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read embeddings file ({exc.strerror})") from None
    if not block.startswith(MAGIC) or len(block) < HEADER_SIZE:
        raise InputError(f"{path}: not a vce-stream embeddings file (bad magic or short header)")
    try:
        fields = json.loads(block[len(MAGIC):].decode("utf-8").rstrip(" "))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{path}: embeddings header is not valid JSON") from None
    if not isinstance(fields, dict) or fields.get("format") != FORMAT:
        raise InputError(f"{path}: embeddings header has format {fields.get('format') if isinstance(fields, dict) else None!r}, expected {FORMAT!r}")
    if fields.get("version") != VERSION:
        raise InputError(f"{path}: embeddings format version {fields.get('version')!r} is not supported (only {VERSION})")
    dim, count = fields.get("dim"), fields.get("count")
    if not (isinstance(dim, int) and 1 <= dim <= MAX_DIM):
        raise InputError(f"{path}: embeddings dim {dim!r} outside 1..{MAX_DIM}")
    if not (isinstance(count, int) and 0 <= count <= (size - HEADER_SIZE) // (2 * dim + 8)):
        raise InputError(f"{path}: embeddings count {count!r} does not fit a file of {size} bytes (truncated?)")
    if fields.get("dtype") != "float16" or fields.get("index_dtype") != "int64":
        raise InputError(f"{path}: embeddings dtypes must be float16 vectors and int64 indices")
    if not (isinstance(fields.get("bundle_hash"), str) and _HASH_RE.match(fields["bundle_hash"])):
        raise InputError(f"{path}: embeddings header has no valid bundle hash")
    if not isinstance(fields.get("video_id"), str) or not isinstance(fields.get("complete"), bool):
        raise InputError(f"{path}: embeddings header lacks video_id or complete")
    indices_offset = HEADER_SIZE + _pad8(count * dim * 2)
    if fields.get("vectors_offset") != HEADER_SIZE or fields.get("indices_offset") != indices_offset:
        raise InputError(f"{path}: embeddings offsets do not match dim and count")
    if size != indices_offset + 8 * count:
        raise InputError(f"{path}: embeddings file is {size} bytes, expected {indices_offset + 8 * count} (truncated or padded)")
    return fields


def read_embeddings(path: str | os.PathLike[str], *, check_order: bool = True) -> Embeddings:
    """Validate and memory-map an embeddings file (see the module docstring for the format)."""
    path = Path(path)
    fields = read_header(path)
    dim, count = fields["dim"], fields["count"]
    if count:
        vectors = np.memmap(path, dtype="<f2", mode="r", offset=HEADER_SIZE, shape=(count, dim))
        indices = np.memmap(path, dtype="<i8", mode="r", offset=fields["indices_offset"], shape=(count,))
    else:
        vectors = np.zeros((0, dim), dtype="<f2")
        indices = np.zeros((0,), dtype="<i8")
    if check_order and count > 1 and np.any(np.diff(indices) <= 0):
        raise InputError(f"{path}: embeddings frame indices are not strictly increasing")
    return Embeddings(path, fields["bundle_hash"], fields["video_id"], dim, fields["complete"], indices, vectors)

"""A FAISS vector index over an archive's embeddings: built once, grown exam by exam, never rebuilt.

Choice (for 100 exams x 60,000 frames = 6 million 512-d unit vectors; figures per vector at D = 512):

- Exact (`IndexFlatIP`, 4 D = 2048 bytes, recall 1): used while the archive is small (below
  `exact_below` vectors, 200,000 by default = 3 exams), where a brute-force scan costs milliseconds.
- Large: `IndexIVFScalarQuantizer` with 8-bit codes (IVF-SQ8): D + 8 = 520 bytes (codes plus the id),
  3.1 GB at 6 million against 12.3 GB for flat fp32 or ~14 GB for HNSW (M=32: the fp32 vector plus
  256 bytes of links). 8-bit per-dimension codes on unit vectors lose little, so recall is governed by
  `nprobe` (the lists scanned), measured in examples/bench_embeddings.py. IVF-PQ would be 8x smaller
  (64-byte codes) but loses recall@10 noticeably without re-ranking against the full vectors.
- Update cost: the coarse quantizer (k-means, `nlist` centroids) and the SQ ranges are trained ONCE,
  when the archive first crosses `exact_below` (checked every 65,536 rows, so the flat index never
  holds much more), on a sample of the vectors held so far (the flat index keeps them); the flat rows
  move into the IVF index in the same order, so row numbers do not change. After that an exam is only
  encoded and appended (`add`, linear in its frames); nothing is retrained. Committing rewrites the
  index file (linear in the archive's bytes, not a rebuild). HNSW also adds without retraining but
  would cost 4x the memory. The trade-off: the centroids are those of the first ~3 exams; recall
  holds as long as later exams look like them (the benchmark measures recall with the same rule).

On disk, ARCHIVE_OUT/ holds:

    index.json            the commit point: format, version, bundle hash, dim, kind ("flat" or
                          "ivf-sq8"), parameters, count, generation, and the exams already added (video
                          id, embeddings file, first row, frame count); rewritten atomically last
    index.<gen>.faiss     the FAISS index of that generation
    frames.<gen>.npy      int64 frame index of every row (row -> exam via the exams' first rows)

An update writes generation gen + 1 beside the current one, then replaces index.json (atomic), then
removes generation gen, so a reader, or a killed update, always sees one consistent generation.
faiss is imported only inside the functions that use it (the `index` extra).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vce_stream.atomic import atomic_open, atomic_write_text
from vce_stream.embeddings.search import Exclusion, Hit
from vce_stream.embeddings.store import Embeddings
from vce_stream.errors import ConfigError, InputError

FORMAT = "vce-stream-index"
VERSION = 1
INDEX_JSON = "index.json"
MAX_EXAMS = 1_000_000
MAX_ROWS = 1 << 40
_CHUNK = 65536
_GEN_RE = re.compile(r"^(index\.\d+\.faiss|frames\.\d+\.npy)$")


@dataclass(frozen=True)
class IndexParams:
    """exact_below: rows under which the index stays exact (flat); nlist: IVF lists; nprobe: lists
    scanned per query; train_per_list: k-means training points per list (a sample of the rows)."""

    exact_below: int = 200_000
    nlist: int = 1024
    nprobe: int = 32
    train_per_list: int = 64

    def __post_init__(self) -> None:
        if not (1 <= self.nlist <= 1 << 20 and 1 <= self.nprobe <= self.nlist and 1 <= self.train_per_list <= 4096):
            raise ConfigError("index parameters: need 1 <= nprobe <= nlist <= 2^20 and 1 <= train_per_list <= 4096")
        if self.exact_below < 39 * self.nlist:  # FAISS's minimum training points per centroid
            raise ConfigError(f"index parameters: exact_below {self.exact_below} must be >= 39 x nlist ({39 * self.nlist})")


@dataclass(frozen=True)
class ExamEntry:
    video_id: str
    embeddings: str
    first_row: int
    frames: int


def _faiss():
    try:
        import faiss
    except ImportError:
        raise ConfigError("the vector index needs faiss: pip install 'vce-stream[index]'") from None
    return faiss


class FrameIndex:
    """An archive index opened from ARCHIVE_OUT/ (`open_index` / `create_index`).

    add(exams) appends exams not yet added and commits a new generation; search(query, top, exclusion)
    -> [Hit] (scores are the index's inner products: exact while flat, SQ8-approximate after).
    """

    def __init__(self, root: Path, meta: dict[str, Any], index: Any, frames: np.ndarray) -> None:
        self.root = root
        self.meta = meta
        self.index = index
        self.frames = frames
        self.exams = [ExamEntry(**e) for e in meta["exams"]]
        self._first_rows = np.array([e.first_row for e in self.exams], dtype=np.int64)

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def kind(self) -> str:
        return str(self.meta["kind"])

    @property
    def count(self) -> int:
        return int(self.meta["count"])

    @property
    def params(self) -> IndexParams:
        return IndexParams(**self.meta["params"])

    def add(self, exams: Sequence[Embeddings]) -> list[str]:
        """Append the exams not already in the index (by video id); returns the ids added.

        Trains the IVF index once, when the total first reaches `exact_below`; never retrains.
        """
        known = {e.video_id for e in self.exams}
        new = []
        for emb in exams:
            self._check(emb)
            if emb.video_id not in known:
                new.append(emb)
                known.add(emb.video_id)
        if not new:
            return []
        frames = [self.frames]
        entries = list(self.exams)
        row = self.count
        for emb in new:
            for chunk in _chunks(emb):
                self.index.add(chunk)
                if self.kind == "flat" and self.index.ntotal >= self.params.exact_below:
                    # Crossing the threshold (once in the index's life): train on what is held, switch.
                    self.index = _train_ivf(self.index, self.params)
                    self.meta["kind"] = "ivf-sq8"
                    self.meta["trained_at"] = int(self.index.ntotal)
            frames.append(np.asarray(emb.frame_indices, dtype=np.int64))
            entries.append(ExamEntry(emb.video_id, str(emb.path.resolve()), row, len(emb)))
            row += len(emb)
        self.frames = np.concatenate(frames)
        self.exams = entries
        self._first_rows = np.array([e.first_row for e in entries], dtype=np.int64)
        self.meta["count"] = row
        self.meta["exams"] = [asdict(e) for e in entries]
        self._commit()
        return [emb.video_id for emb in new]

    def _check(self, emb: Embeddings) -> None:
        if emb.dim != self.dim:
            raise InputError(f"{emb.path}: feature size {emb.dim}, but the index {self.root} was built with {self.dim}")
        if emb.bundle_hash != self.meta["bundle_hash"]:
            raise InputError(
                f"{emb.path}: embeddings come from another bundle than the index {self.root} "
                f"(hash {emb.bundle_hash[:12]}... vs {self.meta['bundle_hash'][:12]}...)"
            )

    def search(self, query: np.ndarray, top: int, exclusion: Exclusion | None = None) -> list[Hit]:
        """The `top` rows nearest `query` (D,), best first, leaving out `exclusion`'s neighbours."""
        if self.count == 0:
            return []
        slack = 2 * exclusion.within + 1 if exclusion is not None else 0  # at most this many are excluded
        k = min(top + slack, self.count)
        scores, rows = self.index.search(np.asarray(query, dtype=np.float32).reshape(1, -1), k)
        hits = []
        for score, row in zip(scores[0], rows[0]):
            if row < 0:
                continue
            exam = self.exams[int(np.searchsorted(self._first_rows, row, side="right")) - 1]
            frame = int(self.frames[row])
            if exclusion is not None and exam.video_id == exclusion.exam and abs(frame - exclusion.frame) <= exclusion.within:
                continue
            hits.append(Hit(exam.video_id, frame, float(score)))
        return hits[:top]

    def _commit(self) -> None:
        faiss = _faiss()
        old = int(self.meta["generation"])
        gen = old + 1
        index_name, frames_name = f"index.{gen}.faiss", f"frames.{gen}.npy"
        tmp = self.root / f".{index_name}.tmp"
        faiss.write_index(self.index, str(tmp))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, self.root / index_name)
        with atomic_open(self.root / frames_name, "wb") as handle:
            np.save(handle, self.frames, allow_pickle=False)
        self.meta.update(generation=gen, index_file=index_name, frames_file=frames_name)
        atomic_write_text(self.root / INDEX_JSON, json.dumps(self.meta, indent=1))
        for name in (f"index.{old}.faiss", f"frames.{old}.npy"):
            with contextlib.suppress(FileNotFoundError):
                (self.root / name).unlink()


def _chunks(emb: Embeddings) -> Iterator[np.ndarray]:
    for start in range(0, len(emb), _CHUNK):
        yield np.ascontiguousarray(emb.vectors[start:start + _CHUNK], dtype=np.float32)


def _train_ivf(flat: Any, params: IndexParams) -> Any:
    """The IVF-SQ8 index trained once on a sample of the flat index's rows, holding all of them in order."""
    faiss = _faiss()
    n, dim = flat.ntotal, flat.d
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFScalarQuantizer(quantizer, dim, params.nlist, faiss.ScalarQuantizer.QT_8bit,
                                        faiss.METRIC_INNER_PRODUCT)
    sample = min(n, params.nlist * params.train_per_list)
    rows = np.sort(np.random.default_rng(0).choice(n, size=sample, replace=False))
    ivf.cp.niter = 10
    ivf.train(np.stack([flat.reconstruct(int(r)) for r in rows]).astype(np.float32))
    for start in range(0, n, _CHUNK):
        ivf.add(flat.reconstruct_n(start, min(_CHUNK, n - start)))
    ivf.nprobe = params.nprobe
    return ivf


def create_index(root: str | os.PathLike[str], dim: int, bundle_hash: str, params: IndexParams | None = None) -> FrameIndex:
    """A new, empty (flat) index in `root`; InputError if `root` already holds one."""
    faiss = _faiss()
    root = Path(root)
    if (root / INDEX_JSON).exists():
        raise InputError(f"{root}: already holds an index")
    root.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT, "version": VERSION, "bundle_hash": bundle_hash, "dim": dim, "kind": "flat",
        "params": asdict(params or IndexParams()), "count": 0, "generation": 0, "exams": [],
        "faiss_version": faiss.__version__, "index_file": "", "frames_file": "",
    }
    index = FrameIndex(root, meta, faiss.IndexFlatIP(dim), np.zeros(0, dtype=np.int64))
    index._commit()
    return index


def open_index(root: str | os.PathLike[str], *, bundle_hash: str | None = None, dim: int | None = None) -> FrameIndex:
    """Read and validate ARCHIVE_OUT/ (see the module docstring); checks bundle hash and dim if given."""
    faiss = _faiss()
    root = Path(root)
    meta = _read_meta(root)
    if dim is not None and meta["dim"] != dim:
        raise InputError(f"{root}: the index was built with feature size {meta['dim']}; the embeddings are {dim}-d")
    if bundle_hash is not None and meta["bundle_hash"] != bundle_hash:
        raise InputError(f"{root}: the index was built from another bundle (hash {meta['bundle_hash'][:12]}...)")
    index = faiss.read_index(str(root / meta["index_file"]))
    frames = np.load(root / meta["frames_file"], mmap_mode="r", allow_pickle=False)
    if index.d != meta["dim"] or index.ntotal != meta["count"] or frames.shape != (meta["count"],) or frames.dtype != np.int64:
        raise InputError(f"{root}: index files disagree with {INDEX_JSON} (dim, count or frame table)")
    if meta["kind"] == "ivf-sq8":
        index.nprobe = IndexParams(**meta["params"]).nprobe
    return FrameIndex(root, meta, index, np.asarray(frames))


def _read_meta(root: Path) -> dict[str, Any]:
    path = root / INDEX_JSON
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: not found (create the index with `vce-stream index {root} --add EMB...`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable index description ({exc})") from None
    try:
        ok = (
            meta["format"] == FORMAT and meta["version"] == VERSION
            and isinstance(meta["dim"], int) and 1 <= meta["dim"] <= 65536
            and isinstance(meta["count"], int) and 0 <= meta["count"] <= MAX_ROWS
            and meta["kind"] in ("flat", "ivf-sq8") and isinstance(meta["generation"], int)
            and isinstance(meta["exams"], list) and len(meta["exams"]) <= MAX_EXAMS
            and _GEN_RE.match(meta["index_file"]) and _GEN_RE.match(meta["frames_file"])  # confined to root
        )
        IndexParams(**meta["params"])
        [ExamEntry(**e) for e in meta["exams"]]
    except (KeyError, TypeError, ConfigError):
        ok = False
    if not ok:
        raise InputError(f"{path}: not a vce-stream {VERSION} index description (bad or missing fields)")
    return meta


def open_or_create(root: str | os.PathLike[str], exams: Sequence[Embeddings], params: IndexParams | None = None) -> FrameIndex:
    """The index in `root`, created from the first exam's dim and bundle hash when absent."""
    root = Path(root)
    if (root / INDEX_JSON).exists():
        return open_index(root)
    if not exams:
        raise InputError(f"{root}: no index there yet; give embeddings to build it from (--add EMB...)")
    return create_index(root, exams[0].dim, exams[0].bundle_hash, params)

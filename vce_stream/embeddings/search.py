"""Exact search over embeddings files: frame-to-frame (`similar`) and text-to-frame (`search`).

Scores are cosine similarities: the stored features are unit vectors (fp16), the query is normalised,
so a dot product in float32 is the cosine. Exact search reads the memory-mapped vectors in chunks
(memory bounded by `chunk` rows, not by the archive) and keeps a running top K; it is the reference
the FAISS index (`vce_stream.embeddings.index`) is measured against, and what `similar` uses when no
index is given. Ties are broken by exam order then frame index, so results are deterministic.

Every embeddings file given together must come from the same bundle (content hash) and feature size;
the text encoder is injected (`TextEncoder`: list of texts -> (n, D) unit rows), so search itself never
loads a text tower.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from vce_stream.embeddings.store import Embeddings, read_embeddings
from vce_stream.errors import InputError

TextEncoder = Callable[[list[str]], np.ndarray]
DEFAULT_CHUNK = 65536


class Hit(NamedTuple):
    """One result: the exam (video id), the frame index and its cosine score."""

    exam: str
    frame: int
    score: float


class Exclusion(NamedTuple):
    """Frames of `exam` within `within` of `frame` are left out of the results (the query included)."""

    exam: str
    frame: int
    within: int


def open_exams(paths: Sequence[str | os.PathLike[str]], *, bundle_hash: str | None = None) -> list[Embeddings]:
    """Read and cross-check embeddings files: one bundle, one feature size, distinct exam ids.

    bundle_hash: when given (from --model), every file must carry it.
    """
    if not paths:
        raise InputError("no embeddings files given")
    exams = [read_embeddings(p) for p in paths]
    first = exams[0]
    seen: dict[str, Path] = {}
    for emb in exams:
        if bundle_hash is not None and emb.bundle_hash != bundle_hash:
            raise InputError(
                f"{emb.path}: embeddings come from another bundle (hash {emb.bundle_hash[:12]}..., "
                f"the model is {bundle_hash[:12]}...)"
            )
        if emb.bundle_hash != first.bundle_hash:
            raise InputError(
                f"{emb.path}: embeddings come from another bundle than {first.path} "
                f"(hash {emb.bundle_hash[:12]}... vs {first.bundle_hash[:12]}...)"
            )
        if emb.dim != first.dim:
            raise InputError(f"{emb.path}: feature size {emb.dim} differs from {first.path} ({first.dim})")
        if emb.video_id in seen:
            raise InputError(f"{emb.path}: exam {emb.video_id!r} is also in {seen[emb.video_id]}")
        seen[emb.video_id] = emb.path
    return exams


def parse_frame_ref(text: str) -> tuple[str, int]:
    """"EXAM:INDEX" -> (exam, index); the exam may itself contain colons (split at the last one)."""
    exam, sep, index = text.rpartition(":")
    if not sep or not exam or not index.strip().lstrip("-").isdigit():
        raise InputError(f"--frame {text!r}: expected EXAM:INDEX (an exam id and a frame index)")
    return exam, int(index)


def find_exam(exams: Sequence[Embeddings], name: str) -> Embeddings:
    """The exam whose video id (or file name, or file stem) is `name`."""
    for key in (lambda e: e.video_id, lambda e: e.path.name, lambda e: e.path.stem):
        matches = [e for e in exams if key(e) == name]
        if len(matches) == 1:
            return matches[0]
    known = ", ".join(repr(e.video_id) for e in exams[:10])
    raise InputError(f"--frame: no exam {name!r} among the embeddings given ({known})")


def query_vector(exam: Embeddings, frame: int) -> np.ndarray:
    """The stored feature of `frame` as a float32 unit vector; InputError if the frame is absent."""
    return _unit(np.asarray(exam.vectors[exam.row_of(frame)], dtype=np.float32))


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        raise InputError("the query feature is zero or not finite")
    return (vector / norm).astype(np.float32)


def exact_search(
    exams: Sequence[Embeddings],
    query: np.ndarray,
    top: int,
    exclude: Exclusion | None = None,
    *,
    chunk: int = DEFAULT_CHUNK,
) -> list[Hit]:
    """The `top` frames of `exams` by cosine with `query` (D,), best first, after `exclude`."""
    if top < 1:
        raise ValueError("top must be >= 1")
    query = np.asarray(query, dtype=np.float32).reshape(-1)
    best_scores = np.zeros(0, dtype=np.float32)
    best_keys = np.zeros((0, 2), dtype=np.int64)  # (exam position, frame index)
    for position, emb in enumerate(exams):
        for start in range(0, len(emb), chunk):
            rows = np.asarray(emb.vectors[start:start + chunk], dtype=np.float32)
            frames = np.asarray(emb.frame_indices[start:start + chunk])
            scores = rows @ query
            if exclude is not None and emb.video_id == exclude.exam:
                keep = np.abs(frames - exclude.frame) > exclude.within
                scores, frames = scores[keep], frames[keep]
            keys = np.stack([np.full(frames.shape, position, dtype=np.int64), frames], axis=1)
            best_scores, best_keys = _merge_top(
                np.concatenate([best_scores, scores]), np.concatenate([best_keys, keys]), top
            )
    return [Hit(exams[int(p)].video_id, int(f), float(s)) for s, (p, f) in zip(best_scores, best_keys)]


def _merge_top(scores: np.ndarray, keys: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """The best `top` of scores (keys: exam position, frame), sorted by score desc, then exam, frame."""
    if scores.size > top:
        # Keep everything tied with the cut-off so the tie-break below sees every candidate.
        cut = np.partition(scores, scores.size - top)[scores.size - top]
        keep = scores >= cut
        scores, keys = scores[keep], keys[keep]
    order = np.lexsort((keys[:, 1], keys[:, 0], -scores))[:top]
    return scores[order], keys[order]


def similar_frames(
    exams: Sequence[Embeddings],
    frame_ref: str,
    top: int,
    exclude_within: int = 0,
    *,
    index: object | None = None,
) -> tuple[Hit, list[Hit]]:
    """Frames most like the frame `EXAM:INDEX`, leaving out its own exam's frames within `exclude_within`.

    index: a `vce_stream.embeddings.index.FrameIndex` over the archive (same bundle); without it the
    search is exact over `exams`. Returns (the query as a Hit with score 1, the results).
    """
    if exclude_within < 0:
        raise InputError("--exclude-within must be >= 0")
    name, frame = parse_frame_ref(frame_ref)
    exam = find_exam(exams, name)
    query = query_vector(exam, frame)
    exclusion = Exclusion(exam.video_id, frame, exclude_within)
    if index is not None:
        hits = index.search(query, top, exclusion)  # type: ignore[attr-defined]
    else:
        hits = exact_search(exams, query, top, exclusion)
    return Hit(exam.video_id, frame, 1.0), hits


def encode_text_query(text: str, encoder: TextEncoder, dim: int) -> np.ndarray:
    """One text -> its unit feature (D,), checked against the embeddings' feature size."""
    if not text or not text.strip():
        raise InputError("--text is empty: give the finding to search for, e.g. --text 'fresh blood'")
    vectors = np.asarray(encoder([text.strip()]), dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != 1:
        raise ValueError(f"the text encoder returned shape {vectors.shape} for one text")
    if vectors.shape[1] != dim:
        raise InputError(f"the text encoder gives {vectors.shape[1]}-d features; the embeddings are {dim}-d")
    return _unit(vectors[0])


def text_search(exams: Sequence[Embeddings], text: str, encoder: TextEncoder, top: int) -> list[Hit]:
    """The `top` frames of `exams` closest to `text` (exact cosine)."""
    return exact_search(exams, encode_text_query(text, encoder, exams[0].dim), top)


class StoredPromptEncoder:
    """A TextEncoder from the bundle's stored prompt embeddings: no text tower, no tokenizer.

    Answers a text equal (case-insensitive) to one of the bundle's label names or label prompts with that
    label's stored embedding (`heads.text_embeddings`); any other text needs the bundle's text tower,
    which this encoder does not have (InputError naming the texts it knows).
    """

    def __init__(self, labels: Sequence[str], prompts: Sequence[str], embeddings: np.ndarray) -> None:
        if embeddings.shape[0] != len(labels) or len(prompts) != len(labels):
            raise ValueError("labels, prompts and embeddings disagree in count")
        self.labels = tuple(labels)
        self._rows = {text.strip().lower(): i for i, text in enumerate(labels)}
        self._rows.update({text.strip().lower(): i for i, text in enumerate(prompts)})
        self.embeddings = np.asarray(embeddings, dtype=np.float32)

    @classmethod
    def from_bundle(cls, bundle: object) -> StoredPromptEncoder:
        """The stored prompt embeddings of a loaded (hash-checked) ModelBundle."""
        return cls(bundle.labels, bundle.prompts, bundle.text_embeddings())  # type: ignore[attr-defined]

    def __call__(self, texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            row = self._rows.get(text.strip().lower())
            if row is None:
                raise InputError(
                    f"--text {text!r}: this bundle has no text tower, so only its labels (or their prompts) "
                    f"can be searched: {', '.join(self.labels)}"
                )
            rows.append(row)
        return self.embeddings[rows]


# --- output ---------------------------------------------------------------------------------------


def format_table(hits: Sequence[Hit]) -> str:
    """Ranked hits as an aligned text table."""
    width = max([len("exam")] + [len(h.exam) for h in hits])
    lines = [f"{'rank':>4}  {'exam':<{width}}  {'frame':>8}  {'score':>7}"]
    lines += [f"{rank:>4}  {h.exam:<{width}}  {h.frame:>8}  {h.score:>7.4f}" for rank, h in enumerate(hits, 1)]
    return "\n".join(lines)


def hits_json(query: dict, hits: Sequence[Hit]) -> str:
    """{"query": ..., "results": [{"rank", "exam", "frame", "score"}]} as JSON text."""
    results = [
        {"rank": rank, "exam": h.exam, "frame": h.frame, "score": round(h.score, 6)}
        for rank, h in enumerate(hits, 1)
    ]
    return json.dumps({"query": query, "results": results}, indent=2)

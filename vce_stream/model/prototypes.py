"""Few-shot findings: prototypes (mean unit features of a handful of example frames) stored in a bundle.

A prototype is a new finding label added without retraining: its vector is the normalised mean of the
examples' L2-normalised image features (the same feature `forward_with_features` returns and
`run --save-embeddings` stores), and its score for a frame is the cosine with that vector, mapped to a
probability by `prototype_probs` so `run` can push it through the same temporal post-processing as the
label probabilities (threshold 0.5 on the mapped value == the calibrated cosine threshold).

Calibration (per prototype, from the examples and the examples' exams' own background frames):
positives are leave-one-out cosines (each example against the mean of the others, so the examples do
not grade themselves), negatives are the cosines of background frames (frames of the example exams
farther than `background_gap` frames from every example). The threshold is the midpoint between the
lowest positive and the 99.9th percentile of the background, or that percentile itself when the two
overlap (favouring precision: a finding the examples cannot separate from background is flagged by a
`separable: false` note rather than firing everywhere). The mapping is
p = sigmoid((cos - threshold) / temperature), temperature = max(margin / 4, 0.01).

Storage: `BUNDLE/prototypes.v<N>.safetensors` (tensors `vectors` (P, D) float32, `thresholds` (P,),
`temperatures` (P,); metadata `prototypes`: JSON list of {label, examples, separable, ...}) and a
manifest entry under `extra.prototypes` = {file, sha256, version, labels, bundle_hash}: the bundle
manifest schema is unchanged and the weights (so the bundle's content hash and every built engine)
are untouched. Each `add` writes version N+1, then replaces the manifest atomically, then removes
version N. `load_prototypes(bundle)` checks the sha256, shapes, the bundle hash and the labels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vce_stream.atomic import atomic_write_bytes, atomic_write_text
from vce_stream.errors import InputError

MANIFEST_KEY = "prototypes"
MAX_PROTOTYPES = 1024
BACKGROUND_QUANTILE = 0.999
MAX_BACKGROUND = 50_000
_FILE_RE = re.compile(r"^prototypes\.v(\d+)\.safetensors$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _\-./()]{0,63}$")


@dataclass(frozen=True)
class Prototype:
    """One few-shot finding: label, unit vector (D,), cosine threshold, temperature, provenance."""

    label: str
    vector: np.ndarray
    threshold: float
    temperature: float
    examples: tuple[str, ...]
    separable: bool


@dataclass(frozen=True)
class PrototypeSet:
    """The bundle's prototypes (possibly none): labels, vectors (P, D), thresholds and temperatures (P,)."""

    version: int
    prototypes: tuple[Prototype, ...]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(p.label for p in self.prototypes)

    @property
    def vectors(self) -> np.ndarray:
        return np.stack([p.vector for p in self.prototypes]).astype(np.float32)


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        raise InputError("a feature vector is zero or not finite")
    return rows / norms


def build_prototype(label: str, examples: np.ndarray, background: np.ndarray, names: Sequence[str] = ()) -> Prototype:
    """A prototype from example features (k, D) and background features (m, D) (see module docstring)."""
    examples, background = unit(examples), unit(background)
    k = examples.shape[0]
    if k < 1 or background.shape[0] < 1:
        raise InputError(f"prototype {label!r}: needs at least one example and one background frame")
    vector = unit(examples.mean(axis=0))
    if k > 1:
        totals = examples.sum(axis=0)
        positives = np.array([float(examples[i] @ unit(totals - examples[i])) for i in range(k)])
    else:
        positives = examples @ vector
    negatives = background @ vector
    lowest = float(positives.min())
    high_background = float(np.quantile(negatives, BACKGROUND_QUANTILE))
    separable = lowest > high_background
    threshold = (lowest + high_background) / 2 if separable else high_background
    temperature = max(abs(lowest - high_background) / 4, 0.01)
    return Prototype(label, vector, float(threshold), float(temperature), tuple(names), bool(separable))


def prototype_probs(features: np.ndarray, prototypes: PrototypeSet) -> np.ndarray:
    """Unit features (B, D) -> (B, P) probabilities; 0.5 exactly at each prototype's cosine threshold."""
    if not prototypes.prototypes:
        return np.zeros((np.asarray(features).shape[0], 0), dtype=np.float32)
    cos = np.asarray(features, dtype=np.float32) @ prototypes.vectors.T
    thresholds = np.array([p.threshold for p in prototypes.prototypes], dtype=np.float32)
    temperatures = np.array([p.temperature for p in prototypes.prototypes], dtype=np.float32)
    z = np.clip((cos - thresholds) / temperatures, -60, 60)
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


# --- examples from embeddings files ---------------------------------------------------------------


def parse_example(text: str) -> tuple[str, int]:
    """"EMB:INDEX" -> (embeddings path, frame index)."""
    path, sep, index = text.strip().rpartition(":")
    if not sep or not path or not index.isdigit():
        raise InputError(f"--examples: {text!r} is not EMB:INDEX (an embeddings file and a frame index)")
    return path, int(index)


def gather_examples(
    refs: Sequence[str], bundle_hash: str, dim: int, background_gap: int = 50
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(example features (k, D), background features (m, D), example names) from EMB:INDEX references.

    Every file must come from the bundle (`bundle_hash`, `dim`); every index must be a stored frame.
    Background: the frames of the example files farther than `background_gap` from every example
    (an even sample of at most MAX_BACKGROUND).
    """
    from vce_stream.embeddings.store import read_embeddings

    by_file: dict[str, list[int]] = {}
    for ref in refs:
        path, frame = parse_example(ref)
        by_file.setdefault(path, []).append(frame)
    examples, background, names = [], [], []
    for path, frames in by_file.items():
        emb = read_embeddings(path)
        if emb.bundle_hash != bundle_hash:
            raise InputError(
                f"{path}: these embeddings come from another bundle (hash {emb.bundle_hash[:12]}..., the bundle is "
                f"{bundle_hash[:12]}...): the examples must be frames scored by this bundle"
            )
        if emb.dim != dim:
            raise InputError(f"{path}: feature size {emb.dim}, the bundle's is {dim}")
        rows = [emb.row_of(f) for f in frames]
        examples.append(np.asarray(emb.vectors[rows], dtype=np.float32))
        names += [f"{emb.video_id}:{f}" for f in frames]
        all_frames = np.asarray(emb.frame_indices)
        far = np.ones(len(emb), dtype=bool)
        for f in frames:
            far &= np.abs(all_frames - f) > background_gap
        keep = np.flatnonzero(far)
        if len(keep) > MAX_BACKGROUND:
            keep = keep[np.linspace(0, len(keep) - 1, MAX_BACKGROUND).astype(int)]
        background.append(np.asarray(emb.vectors[keep], dtype=np.float32))
    back = np.concatenate(background)
    if len(back) == 0:
        raise InputError(f"--examples: no background frames farther than {background_gap} from the examples")
    return np.concatenate(examples), back, names


# At most this many example images are read from a folder (a few-shot finding needs a handful).
MAX_IMAGE_EXAMPLES = 1_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_examples(folder: str | Path, bundle: Any) -> tuple[np.ndarray, list[str]]:
    """(unit features (k, D), names) of the images in `folder` (png/jpg, sorted by name), each prepared
    exactly as the pipeline prepares frames and scored by the bundle's own model (one pass each)."""
    import torch

    from vce_stream.sources.preprocess import read_image

    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder of example images")
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise InputError(f"{root}: no example images (.png, .jpg)")
    if len(paths) > MAX_IMAGE_EXAMPLES:
        raise InputError(f"{root}: {len(paths)} images; a few-shot finding takes at most {MAX_IMAGE_EXAMPLES}")
    frames = torch.from_numpy(np.stack([read_image(p, bundle.preprocess) for p in paths]))
    model = bundle.build_frame_model("cpu")
    with torch.inference_mode():
        _, features = model.forward_with_features(frames)
    return features.float().numpy(), [p.name for p in paths]


def background_features(path: str | Path, bundle_hash: str, dim: int) -> np.ndarray:
    """An even sample (at most MAX_BACKGROUND) of an exam's frames from its embeddings file, which must
    come from the bundle: the background a folder of example images is calibrated against."""
    from vce_stream.embeddings.store import read_embeddings

    emb = read_embeddings(path)
    if emb.bundle_hash != bundle_hash or emb.dim != dim:
        raise InputError(f"{path}: these embeddings come from another bundle or feature size; score the exam with this bundle first")
    keep = np.arange(len(emb))
    if len(keep) > MAX_BACKGROUND:
        keep = keep[np.linspace(0, len(keep) - 1, MAX_BACKGROUND).astype(int)]
    if len(keep) == 0:
        raise InputError(f"{path}: no frames to calibrate against")
    return np.asarray(emb.vectors[keep], dtype=np.float32)


# --- storage in the bundle ------------------------------------------------------------------------


def _entry(bundle: Any) -> dict[str, Any] | None:
    return bundle.manifest.extra.get(MANIFEST_KEY)


def load_prototypes(bundle: Any) -> PrototypeSet:
    """The prototypes recorded in `bundle`'s manifest (empty set when none), validated.

    Hook for bundle loading (one line in load_bundle or ModelBundle): `load_prototypes(bundle)`.
    """
    entry = _entry(bundle)
    if entry is None:
        return PrototypeSet(0, ())
    manifest = bundle.path / "manifest.yaml"
    try:
        name, sha, version = entry["file"], entry["sha256"], int(entry["version"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{manifest}: extra.prototypes lacks file, sha256 or version") from None
    match = _FILE_RE.match(str(name))
    if not match or int(match.group(1)) != version:
        raise InputError(f"{manifest}: extra.prototypes.file {name!r} is not prototypes.v{version}.safetensors")
    path = bundle.path / name
    try:
        data = path.read_bytes()
    except OSError:
        raise InputError(f"{path}: prototypes file missing or unreadable") from None
    if hashlib.sha256(data).hexdigest() != sha:
        raise InputError(f"{path}: content hash mismatch with the manifest's extra.prototypes.sha256")
    if entry.get("bundle_hash") != bundle.content_hash:
        raise InputError(f"{path}: prototypes were made for another bundle (its weights changed since)")
    from safetensors.numpy import load as load_st

    tensors = load_st(data)
    header_len = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8:8 + header_len]).get("__metadata__", {})
    items = json.loads(meta.get("prototypes", "[]"))
    vectors, thresholds, temps = tensors.get("vectors"), tensors.get("thresholds"), tensors.get("temperatures")
    p = len(items)
    dim = bundle.arch.feature_dim
    if (vectors is None or thresholds is None or temps is None or not 1 <= p <= MAX_PROTOTYPES
            or vectors.shape != (p, dim) or thresholds.shape != (p,) or temps.shape != (p,)):
        raise InputError(f"{path}: prototypes tensors do not match {p} prototypes of dim {dim}")
    protos = []
    for i, item in enumerate(items):
        label = item.get("label")
        if not isinstance(label, str) or not _LABEL_RE.match(label) or label in bundle.labels:
            raise InputError(f"{path}: prototype label {label!r} is invalid or collides with a bundle label")
        protos.append(Prototype(label, vectors[i], float(thresholds[i]), float(temps[i]),
                                tuple(item.get("examples", ())), bool(item.get("separable", False))))
    if len({p.label for p in protos}) != len(protos):
        raise InputError(f"{path}: duplicate prototype labels")
    return PrototypeSet(version, tuple(protos))


def add_prototype(bundle_path: str | Path, prototype: Prototype) -> PrototypeSet:
    """Add (or replace, by label) `prototype` in the bundle at `bundle_path`; returns the new set."""
    from safetensors.numpy import save as save_st

    from vce_stream.model.bundle import MANIFEST_NAME, load_bundle, manifest_yaml

    bundle = load_bundle(bundle_path)
    if not _LABEL_RE.match(prototype.label):
        raise InputError(f"--label {prototype.label!r}: use letters, digits, spaces and _-./() (at most 64)")
    if prototype.label in bundle.labels:
        raise InputError(f"--label {prototype.label!r} is one of the bundle's trained labels")
    if prototype.vector.shape != (bundle.arch.feature_dim,):
        raise InputError(f"prototype of dim {prototype.vector.shape} for a bundle of dim {bundle.arch.feature_dim}")
    current = load_prototypes(bundle)
    kept = tuple(p for p in current.prototypes if p.label != prototype.label) + (prototype,)
    if len(kept) > MAX_PROTOTYPES:
        raise InputError(f"{bundle.path}: at most {MAX_PROTOTYPES} prototypes")
    version = current.version + 1
    items = [dict(label=p.label, examples=list(p.examples), separable=p.separable) for p in kept]
    data = save_st(
        {
            "vectors": np.stack([p.vector for p in kept]).astype(np.float32),
            "thresholds": np.array([p.threshold for p in kept], dtype=np.float32),
            "temperatures": np.array([p.temperature for p in kept], dtype=np.float32),
        },
        metadata={"prototypes": json.dumps(items, sort_keys=True)},
    )
    name = f"prototypes.v{version}.safetensors"
    atomic_write_bytes(bundle.path / name, data)
    entry = dict(file=name, sha256=hashlib.sha256(data).hexdigest(), version=version,
                 labels=[p.label for p in kept], bundle_hash=bundle.content_hash)
    extra = {**bundle.manifest.extra, MANIFEST_KEY: entry}
    atomic_write_text(bundle.path / MANIFEST_NAME, manifest_yaml(dataclasses.replace(bundle.manifest, extra=extra)))
    old = _entry(bundle)
    if old is not None and _FILE_RE.match(str(old.get("file", ""))) and old["file"] != name:
        with contextlib.suppress(FileNotFoundError):
            (bundle.path / old["file"]).unlink()
    return load_prototypes(load_bundle(bundle.path))


# --- findings file --------------------------------------------------------------------------------

FINDINGS_FORMAT = "vce-stream-findings"


def findings_document(video_id: str, bundle_hash: str, prototypes: PrototypeSet, events: Sequence[Any]) -> dict:
    """The findings file's content: prototype events of one exam (never the RARE-VISION JSON)."""
    return {
        "format": FINDINGS_FORMAT,
        "version": 1,
        "video_id": video_id,
        "bundle_hash": bundle_hash,
        "prototypes_version": prototypes.version,
        "labels": list(prototypes.labels),
        "findings": [
            {"label": e.label, "start": int(e.start), "end": int(e.end), "score": round(float(e.score), 6)}
            for e in sorted(events, key=lambda e: (e.start, e.label))
        ],
    }


def write_findings(path: str | Path, video_id: str, bundle_hash: str, prototypes: PrototypeSet, events: Sequence[Any]) -> None:
    """Write the findings file atomically (JSON; see `findings_document`)."""
    atomic_write_text(path, json.dumps(findings_document(video_id, bundle_hash, prototypes, events), indent=1) + "\n")

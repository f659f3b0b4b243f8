"""The model bundle: one directory a user can copy, holding everything inference needs.

    BUNDLE/
      manifest.yaml         format version, labels, architecture, thresholds and post-processing,
                            preprocessing, label prompts, provenance, the weights' sha256
      weights.safetensors   the classifier's state_dict (text embeddings included); never pickle

`load_bundle` validates all of it before anything runs, and every problem is one InputError line
naming the file: a missing file, an unknown format version, a malformed or inconsistent manifest,
a weights hash mismatch, tensors that do not fit the architecture (e.g. a label count that disagrees
with the classifier). `save_bundle` writes a new bundle beside the target and renames it into place,
so a reader sees the old bundle or the new one, never a mix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from vce_stream import __version__
from vce_stream.atomic import atomic_directory, atomic_write_text, write_file_synced
from vce_stream.config import from_dict, load_yaml, to_dict
from vce_stream.postprocess.config import PostprocessConfig
from vce_stream.sources.preprocess import PreprocessConfig
from vce_stream.errors import ConfigError, InputError
from vce_stream.labels import LABELS, RARE_VISION, LabelSet
from vce_stream.model.classifier import DiffClipClassifier, FrameProbabilityModel, build_classifier
from vce_stream.model.config import ArchConfig
from vce_stream.model.heads import label_prompts, prompt_mismatch

BUNDLE_FORMAT = "vce-stream-bundle"
FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
MANIFEST_NAME = "manifest.yaml"
WEIGHTS_NAME = "weights.safetensors"
TEXT_EMBEDDINGS_KEY = "heads.text_embeddings"
CLASSIFIER_WEIGHT_KEY = "heads.classifier.weight"
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightsEntry:
    """The weights file (a name inside the bundle) and the sha256 of its bytes."""

    file: str = WEIGHTS_NAME
    sha256: str = ""


@dataclass(frozen=True)
class BundleManifest:
    """manifest.yaml, loaded with `from_dict` (unknown keys are errors).

    source: provenance (random seed, pretrained checkpoint, training run); extra: free-form notes
    (validation metrics, ...). Neither affects inference.
    """

    format: str
    format_version: int
    labels: tuple[str, ...]
    arch: ArchConfig
    postprocess: PostprocessConfig
    preprocess: PreprocessConfig
    prompts: tuple[str, ...]
    weights: WeightsEntry
    created_by: str = ""
    source: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelBundle:
    """A validated bundle. `content_hash` identifies the frame -> probability function: it covers the
    weights, architecture, labels and preprocessing (not thresholds or post-processing, which engines
    do not contain)."""

    path: Path
    manifest: BundleManifest
    content_hash: str

    @property
    def labels(self) -> tuple[str, ...]:
        return self.manifest.labels

    @property
    def label_set(self) -> LabelSet:
        """The bundle's labels with their kinds, anatomy order and landmark sections (`LabelSet.from_names`)."""
        return LabelSet.from_names(self.manifest.labels)

    @property
    def arch(self) -> ArchConfig:
        return self.manifest.arch

    @property
    def postprocess(self) -> PostprocessConfig:
        return self.manifest.postprocess

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.manifest.preprocess

    @property
    def prompts(self) -> tuple[str, ...]:
        return self.manifest.prompts

    @property
    def thresholds(self) -> tuple[float, ...]:
        return self.manifest.postprocess.thresholds_for(len(self.labels))

    @property
    def weights_path(self) -> Path:
        return self.path / self.manifest.weights.file

    def text_embeddings(self) -> np.ndarray:
        """The stored prompt embeddings (labels x feature size), read alone from the weights file."""
        from safetensors import safe_open

        with safe_open(str(self.weights_path), framework="np") as handle:
            return handle.get_tensor(TEXT_EMBEDDINGS_KEY)

    def read_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights, checked against the manifest's sha256 on the very bytes that are loaded."""
        from safetensors.torch import load as load_safetensors

        data = _read_file(self.weights_path)
        _check_sha256(self.weights_path, hashlib.sha256(data).hexdigest(), self.manifest.weights.sha256)
        return load_safetensors(data)

    def build_model(self, device: str | torch.device = "cpu") -> DiffClipClassifier:
        """The full classifier with the bundle's weights, in eval mode."""
        state = self.read_state_dict()
        model = build_classifier(self.arch, text_embeddings=state[TEXT_EMBEDDINGS_KEY])
        model.load_state_dict(state, strict=True)
        return model.to(device).eval()

    def build_frame_model(self, device: str | torch.device = "cpu") -> FrameProbabilityModel:
        """uint8 frames -> probabilities (normalisation inside), in eval mode: what engines export."""
        return FrameProbabilityModel(self.build_model(device), self.preprocess).to(device).eval()


# --- loading --------------------------------------------------------------------------------------


def load_bundle(path: str | os.PathLike[str], vocabulary: LabelSet | None = RARE_VISION) -> ModelBundle:
    """Read and validate the bundle at `path`; any problem is an InputError naming the file.

    vocabulary: the label set the bundle's names must come from. The default, RARE_VISION, is what
    every command that writes RARE-VISION event JSON needs; None admits any (distinct) names.
    """
    root = Path(path)
    if not root.is_dir():
        problem = "a model bundle is a directory, not a file" if root.exists() else "no such model bundle directory"
        raise InputError(f"{root}: {problem}")
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise InputError(f"{manifest_path}: file not found (a model bundle needs it)")
    manifest = _parse_manifest(manifest_path, vocabulary)
    weights_path = _weights_path(root, manifest, manifest_path)
    digest = _sha256_file(weights_path)
    _check_sha256(weights_path, digest, manifest.weights.sha256)
    _check_tensors(weights_path, manifest, manifest_path)
    return ModelBundle(root, manifest, _content_hash(manifest, digest))


def _parse_manifest(path: Path, vocabulary: LabelSet | None) -> BundleManifest:
    try:
        data = load_yaml(path)
    except ConfigError as exc:
        raise InputError(str(exc)) from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping, got {type(data).__name__}")
    if data.get("format") != BUNDLE_FORMAT:
        raise InputError(
            f"{path}: not a vce-stream model bundle manifest "
            f"(format is {data.get('format')!r}, expected {BUNDLE_FORMAT!r})"
        )
    version = data.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise InputError(
            f"{path}: unknown bundle format version {version!r}; "
            f"this vce-stream {__version__} reads {list(SUPPORTED_VERSIONS)}"
        )
    try:
        manifest = from_dict(BundleManifest, data, where=str(path))
    except ConfigError as exc:
        raise InputError(str(exc)) from None
    try:
        check_bundle_labels(manifest.labels, vocabulary)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from None
    n = len(manifest.labels)
    checks = [
        (manifest.arch.num_labels == n, f"arch.num_labels is {manifest.arch.num_labels} but {n} labels are listed"),
        (len(manifest.prompts) == n, f"{len(manifest.prompts)} prompts for {n} labels"),
        (
            manifest.preprocess.size == manifest.arch.img_size,
            f"preprocess.size {manifest.preprocess.size} differs from arch.img_size {manifest.arch.img_size}",
        ),
        (len(manifest.weights.sha256) == 64, "weights.sha256 must be 64 hex digits"),
    ]
    for ok, problem in checks:
        if not ok:
            raise InputError(f"{path}: {problem}")
    mismatch = prompt_mismatch(manifest.labels, manifest.prompts)
    if mismatch:
        raise InputError(f"{path}: {mismatch}")
    try:
        manifest.postprocess.thresholds_for(n)
    except ConfigError as exc:
        raise InputError(f"{path}: postprocess: {exc}") from None
    return manifest


def check_bundle_labels(labels: Sequence[str], vocabulary: LabelSet | None = RARE_VISION) -> tuple[str, ...]:
    """A bundle's label names as a tuple if they are distinct and (when `vocabulary` is given) all in
    `vocabulary`; else ValueError."""
    return vocabulary.check_names(labels) if vocabulary is not None else LabelSet.from_names(labels).names


def _weights_path(root: Path, manifest: BundleManifest, manifest_path: Path) -> Path:
    name = manifest.weights.file
    candidate = root / name
    # The weights must live inside the bundle: no absolute paths, no "..".
    if Path(name).is_absolute() or candidate.resolve().parent != root.resolve():
        raise InputError(f"{manifest_path}: weights.file {name!r} must be a file name inside the bundle")
    if not candidate.is_file():
        raise InputError(f"{candidate}: file not found (named by {manifest_path.name})")
    return candidate


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    return digest.hexdigest()


def _check_sha256(path: Path, actual: str, expected: str) -> None:
    if actual != expected:
        raise InputError(
            f"{path}: content hash mismatch: the manifest expects sha256 {expected[:12]}..., "
            f"the file has {actual[:12]}... (corrupt or replaced weights)"
        )


def _check_tensors(weights_path: Path, manifest: BundleManifest, manifest_path: Path) -> None:
    """Tensor names and shapes in the safetensors header against the architecture (no data loaded)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise InputError(f"{weights_path}: not a readable safetensors file ({exc})") from None
    n = len(manifest.labels)
    classifier_shape = shapes.get(CLASSIFIER_WEIGHT_KEY)
    if classifier_shape is not None and classifier_shape[0] != n:
        raise InputError(
            f"{weights_path}: the classifier has {classifier_shape[0]} outputs "
            f"but {manifest_path.name} lists {n} labels"
        )
    expected = expected_shapes(manifest.arch)
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(expected) & set(shapes) if expected[k] != shapes[k])
    if missing or unexpected or wrong:
        problems = (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
        parts = [f"{label} {keys[:3]}{' ...' if len(keys) > 3 else ''}" for label, keys in problems if keys]
        raise InputError(
            f"{weights_path}: tensors do not fit the architecture in {manifest_path.name}: {'; '.join(parts)}"
        )


def expected_shapes(arch: ArchConfig) -> dict[str, tuple[int, ...]]:
    """state_dict tensor shapes of the classifier for `arch`, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = build_classifier(arch, text_embeddings=torch.empty(arch.num_labels, arch.feature_dim))
    return {key: tuple(t.shape) for key, t in model.state_dict().items()}


def _content_hash(manifest: BundleManifest, weights_sha256: str) -> str:
    identity = {
        "format_version": manifest.format_version,
        "weights_sha256": weights_sha256,
        "arch": to_dict(manifest.arch),
        "labels": list(manifest.labels),
        "preprocess": to_dict(manifest.preprocess),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


# --- saving ---------------------------------------------------------------------------------------


def save_bundle(
    out_dir: str | os.PathLike[str],
    model: nn.Module,
    arch: ArchConfig,
    labels: Sequence[str] = LABELS,
    thresholds: float | Sequence[float] | None = None,
    postprocess: PostprocessConfig | None = None,
    preprocess: PreprocessConfig | None = None,
    prompts: Sequence[str] | None = None,
    text_embeddings: torch.Tensor | None = None,
    *,
    source: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    vocabulary: LabelSet | None = RARE_VISION,
) -> Path:
    """Write `model` (a DiffClipClassifier for `arch`) as a bundle at `out_dir`, atomically.

    thresholds: per label (or one for all); replaces `postprocess.thresholds` when given.
    postprocess: defaults to PostprocessConfig(); preprocess: defaults to PreprocessConfig(size=arch.img_size).
    prompts: one per label; defaults to the paper's template (heads.PROMPT_TEMPLATE).
    text_embeddings: optional check: must equal the model's `heads.text_embeddings` (where they live).
    vocabulary: the label set `labels` must come from (see `load_bundle`); None admits any names.
    An existing `out_dir` is replaced only if it is empty or a bundle; anything else is refused.
    Returns the bundle path.
    """
    out = Path(out_dir)
    labels = check_bundle_labels(list(labels), vocabulary)
    if arch.num_labels != len(labels):
        raise ValueError(f"arch.num_labels is {arch.num_labels} but {len(labels)} labels were given")
    if getattr(model, "arch", arch) != arch:
        raise ValueError("the model was built for a different architecture than `arch`")
    postprocess = postprocess or PostprocessConfig()
    if thresholds is not None:
        values = float(thresholds) if isinstance(thresholds, (int, float)) else tuple(float(t) for t in thresholds)
        postprocess = dataclasses.replace(postprocess, thresholds=values)
    postprocess.thresholds_for(len(labels))
    preprocess = preprocess or PreprocessConfig(size=arch.img_size)
    prompts = tuple(prompts) if prompts is not None else tuple(label_prompts(labels))
    mismatch = prompt_mismatch(labels, prompts)
    if mismatch:
        raise ValueError(mismatch)

    state = {key: t.detach().to("cpu").contiguous().clone() for key, t in model.state_dict().items()}
    if set(state) != set(expected_shapes(arch)):
        raise ValueError("the model's state_dict does not match the classifier for `arch`")
    if text_embeddings is not None:
        stored = state[TEXT_EMBEDDINGS_KEY]
        given = torch.nn.functional.normalize(text_embeddings.detach().float().cpu(), dim=-1)
        if given.shape != stored.shape or not torch.allclose(given, stored, atol=1e-6):
            raise ValueError("text_embeddings differ from the model's heads.text_embeddings")

    from safetensors.torch import save as save_safetensors

    # One metadata key: safetensors writes metadata in hash-map order, and identical bundles should
    # be identical bytes.
    data = save_safetensors(state, metadata={"format": "pt"})
    manifest = BundleManifest(
        format=BUNDLE_FORMAT,
        format_version=FORMAT_VERSION,
        labels=labels,
        arch=arch,
        postprocess=postprocess,
        preprocess=preprocess,
        prompts=prompts,
        weights=WeightsEntry(WEIGHTS_NAME, hashlib.sha256(data).hexdigest()),
        created_by=f"vce-stream {__version__}",
        source=dict(source or {}),
        extra=dict(extra or {}),
    )
    with atomic_directory(out, marker=MANIFEST_NAME, what="a model bundle") as staged:
        write_file_synced(staged / WEIGHTS_NAME, data)
        write_file_synced(staged / MANIFEST_NAME, manifest_yaml(manifest).encode("utf-8"))
    return out


def manifest_yaml(manifest: BundleManifest) -> str:
    """manifest.yaml's text (the one place a manifest is serialised)."""
    return yaml.safe_dump(to_dict(manifest), sort_keys=False, allow_unicode=True, width=110)


def replace_postprocess(path: str | os.PathLike[str], postprocess: PostprocessConfig) -> ModelBundle:
    """Give the bundle at `path` new post-processing settings (thresholds, temporal, decoding).

    The settings are checked against the bundle's labels before anything is written, and the manifest
    is replaced atomically; the weights are untouched, so the content hash (and every engine built
    from the bundle) stays valid. Returns the reloaded bundle.
    """
    bundle = load_bundle(path)
    manifest_path = bundle.path / MANIFEST_NAME
    try:
        postprocess.thresholds_for(len(bundle.labels))
    except ConfigError as exc:
        raise InputError(f"{manifest_path}: postprocess: {exc}") from None
    atomic_write_text(manifest_path, manifest_yaml(dataclasses.replace(bundle.manifest, postprocess=postprocess)))
    return load_bundle(path)

"""The manifest of an engine directory: what the engine is, what it was built for, how well it agrees.

`vce-stream run --engine DIR` reads it and refuses an engine built for another bundle, device, library
version or batch profile, with one line that names the mismatch and the `build-engine` command that
fixes it; nothing is rebuilt behind the user's back.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vce_stream.engine.device import DeviceFacts
from vce_stream.engine.profile import BatchProfile
from vce_stream.atomic import atomic_write_text
from vce_stream.config import from_dict, to_dict
from vce_stream.errors import ConfigError, InputError, VceError

MANIFEST_NAME = "manifest.json"
# 2: the artifact's sha256 and size are recorded and checked when the engine is opened. A format-1
# manifest vouches for whatever file lies beside it, so it is refused with a rebuild hint.
FORMAT_VERSION = 2
MAX_MANIFEST_BYTES = 1 << 20  # a manifest is a few kB; refuse to parse anything absurd
_HASH_CHUNK = 1 << 20

# Library versions that must match for an engine to be used. Others (the driver, the ONNX exporter)
# are recorded for people: a newer driver runs older engines, and an exported ONNX file does not
# depend on the exporter once written.
REQUIRED_VERSIONS: dict[str, tuple[str, ...]] = {
    "tensorrt": ("torch", "torch_tensorrt", "tensorrt", "cuda"),
    "onnxruntime": ("onnxruntime",),
    "torch": ("torch",),
}

# How many characters of a content hash a message shows.
HASH_SHOWN = 12


class EngineMismatchError(VceError):
    """An engine directory does not fit the bundle, device, libraries or batch size of this run."""


class EngineArtifactError(InputError):
    """An engine's model file is not the one its manifest describes (outside the directory, missing,
    truncated, replaced or unreadable)."""


@dataclass(frozen=True)
class Agreement:
    """Measured agreement with the PyTorch model on the calibration batch.

    max_abs_diff: largest |p_engine - p_torch| over all frames and labels.
    tolerance: the bound this precision promises (the build fails above it).
    frames: calibration frames compared.
    """

    max_abs_diff: float
    tolerance: float
    frames: int


@dataclass(frozen=True)
class Manifest:
    """Everything `run` needs to decide whether an engine may be used, and what to rebuild if not."""

    backend: str
    precision: str
    profile: BatchProfile
    bundle_hash: str
    labels: tuple[str, ...]
    image_size: int
    device: DeviceFacts
    versions: dict[str, str]
    agreement: Agreement
    artifact: str | None = None  # file name inside the engine directory; None for the torch backend
    artifact_sha256: str | None = None  # sha256 of the artifact's bytes, checked when the engine is opened
    artifact_bytes: int | None = None  # its size, checked first (a truncated file is refused without hashing)
    options: dict[str, Any] = field(default_factory=dict)  # backend options (torch: compile)
    created: str = ""
    format_version: int = FORMAT_VERSION
    # What the engine's graph runs in, checked at build time (tensorrt: the exported program's matmul,
    # LayerNorm, softmax and differential-combination dtypes and the output dtype); {} for other backends.
    precision_report: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineExpectation:
    """What this run needs from an engine. `batch_size` (the run's) is recorded for messages only: any
    batch size is padded or split into an engine's profile."""

    bundle_hash: str
    labels: tuple[str, ...]
    device: DeviceFacts
    versions: dict[str, str]
    batch_size: int | None = None


def write_manifest(engine_dir: str | Path, manifest: Manifest) -> Path:
    path = Path(engine_dir) / MANIFEST_NAME
    atomic_write_text(path, json.dumps(to_dict(manifest), indent=2, sort_keys=True) + "\n")
    return path


def read_manifest(engine_dir: str | Path) -> Manifest:
    """The manifest of `engine_dir`; an InputError naming the directory when it is missing or broken."""
    path = Path(engine_dir) / MANIFEST_NAME
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise InputError(f"{path}: {path.stat().st_size:,} bytes, too large to be an engine manifest")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{engine_dir}: not an engine directory (no {MANIFEST_NAME}); build one with vce-stream build-engine"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InputError(f"{path}: unreadable manifest ({' '.join(str(exc).split()) or type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: manifest is not a JSON object")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise InputError(
            f"{path}: manifest format {version!r} is not the one this vce-stream reads ({FORMAT_VERSION}); "
            "rebuild the engine with vce-stream build-engine"
        )
    try:
        manifest = from_dict(Manifest, data, where=str(path))
    except ConfigError as exc:
        raise InputError(str(exc)) from None
    if manifest.artifact is not None:
        check_artifact_name(manifest.artifact, path)
        if manifest.artifact_sha256 is None or manifest.artifact_bytes is None:
            raise EngineArtifactError(f"{path}: records no sha256 and size of {manifest.artifact!r}; rebuild the engine")
    return manifest


def check_artifact_name(name: str, where: str | Path) -> None:
    """An artifact is named by a plain file name inside the engine directory: no separator, no "..",
    no absolute path, nothing hidden. EngineArtifactError (naming `where`) otherwise."""
    plain = bool(name) and name not in (".", "..") and not name.startswith(".") and not any(c in name for c in "/\\\0:")
    if not plain or Path(name).is_absolute() or Path(name).name != name:
        raise EngineArtifactError(f"{where}: artifact {name!r} must be a plain file name inside the engine directory")


def file_digest(path: str | Path) -> tuple[str, int]:
    """(sha256 hex digest, size in bytes) of a file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def verified_artifact(engine_dir: str | Path, manifest: Manifest) -> Path:
    """The path of `manifest`'s artifact, after checking that it is the very file the build wrote:
    a plain name, inside `engine_dir` once links are resolved, of the recorded size and sha256.
    EngineArtifactError (one line naming the file and a rebuild hint) otherwise."""
    if manifest.artifact is None:
        raise EngineArtifactError(f"{engine_dir}: its manifest names no engine file")
    root = Path(engine_dir)
    check_artifact_name(manifest.artifact, root / MANIFEST_NAME)
    path = root / manifest.artifact
    try:
        resolved = path.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise EngineArtifactError(f"{path}: engine file missing (named by the manifest); rebuild the engine") from None
    if resolved.parent != root.resolve():
        raise EngineArtifactError(f"{path}: links to {resolved}, outside the engine directory; refusing to load it")
    if not resolved.is_file():
        raise EngineArtifactError(f"{path}: not a regular file; rebuild the engine")
    if manifest.artifact_sha256 is None or manifest.artifact_bytes is None:
        raise EngineArtifactError(f"{root / MANIFEST_NAME}: records no sha256 and size of {manifest.artifact!r}; rebuild the engine")
    size = resolved.stat().st_size
    if size != manifest.artifact_bytes:
        raise EngineArtifactError(
            f"{path}: {size:,} bytes, but the manifest records {manifest.artifact_bytes:,} (truncated or replaced); rebuild the engine"
        )
    try:
        actual, _ = file_digest(resolved)
    except OSError as exc:
        raise EngineArtifactError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if actual != manifest.artifact_sha256:
        raise EngineArtifactError(
            f"{path}: content hash mismatch: the manifest expects sha256 {short_hash(manifest.artifact_sha256)}..., "
            f"the file has {short_hash(actual)}... (replaced or corrupt); rebuild the engine"
        )
    return resolved


def short_hash(content_hash: str) -> str:
    return content_hash[:HASH_SHOWN]


def find_mismatches(manifest: Manifest, expected: EngineExpectation) -> list[str]:
    """Every way `manifest` does not fit `expected`, each a short phrase; empty when it fits."""
    problems = []
    if manifest.bundle_hash != expected.bundle_hash:
        problems.append(
            f"built for another bundle ({short_hash(manifest.bundle_hash)}, this bundle is {short_hash(expected.bundle_hash)})"
        )
    elif tuple(manifest.labels) != tuple(expected.labels):
        problems.append("built for another label set")
    if manifest.device != expected.device:
        problems.append(f"built for {manifest.device.summary}, this machine has {expected.device.summary}")
    for name in REQUIRED_VERSIONS.get(manifest.backend, ()):
        built, here = manifest.versions.get(name), expected.versions.get(name)
        if built != here:
            problems.append(f"built with {name} {built or 'absent'}, this machine has {name} {here or 'absent'}")
    # The run's batch size is not a mismatch: an engine pads a smaller batch and splits a larger one
    # into its profile (`profile.run_in_profile`), so every batch size is served, at some cost in speed.
    return problems


def build_command(
    bundle_path: str | Path | None, backend: str, precision: str, profile: BatchProfile, out: str | Path | None
) -> str:
    """The `vce-stream build-engine` command line that builds this engine (shell-quoted)."""
    words = ["vce-stream", "build-engine", "--model", str(bundle_path or "BUNDLE"), "--backend", backend,
             "--precision", precision, "--batch", profile.text]  # fmt: skip
    if out is not None:
        words += ["--out", str(out)]
    return shlex.join(words)


def check_engine(
    engine_dir: str | Path, manifest: Manifest, expected: EngineExpectation, bundle_path: str | Path | None = None
) -> None:
    """Raise EngineMismatchError (one line: the mismatches, then the fixing command) unless it fits."""
    problems = find_mismatches(manifest, expected)
    if problems:
        command = build_command(bundle_path, manifest.backend, manifest.precision, manifest.profile, engine_dir)
        raise EngineMismatchError(f"engine {engine_dir} cannot be used: {'; '.join(problems)}; rebuild it with: {command}")

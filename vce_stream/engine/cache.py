"""The engine cache: one folder per machine, one engine directory per build key.

A user builds an engine once per machine: the directory name carries a key hashed from everything
that makes an engine usable (bundle content hash, backend, precision, batch profile, device facts,
required library versions, backend options), so a changed bundle, GPU or library simply misses the
cache instead of loading a stale engine. `vce-stream engines list|clear` shows and empties it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vce_stream.engine.device import DeviceFacts
from vce_stream.engine.manifest import (
    MANIFEST_NAME,
    REQUIRED_VERSIONS,
    EngineExpectation,
    Manifest,
    find_mismatches,
    read_manifest,
)
from vce_stream.engine.profile import BatchProfile
from vce_stream.config import to_dict
from vce_stream.errors import VceError

CACHE_ENV = "VCE_STREAM_ENGINE_CACHE"
KEY_CHARS = 16
TEMP_PREFIX = ".building-"
TIMING_DIR = ".timing"  # TensorRT timing caches, one per GPU and library versions, shared by builds


def default_cache_root() -> Path:
    """$VCE_STREAM_ENGINE_CACHE, else $XDG_CACHE_HOME/vce-stream/engines, else ~/.cache/vce-stream/engines."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vce-stream" / "engines"


def cache_key(
    bundle_hash: str,
    backend: str,
    precision: str,
    profile: BatchProfile,
    device: DeviceFacts,
    versions: dict[str, str],
    options: dict[str, Any] | None = None,
) -> str:
    """Hex digest of everything that decides whether an engine can be reused (versions: only those
    `REQUIRED_VERSIONS` names for the backend, so a driver update keeps the cache)."""
    required = {name: versions.get(name) for name in REQUIRED_VERSIONS.get(backend, ())}
    payload = {
        "bundle": bundle_hash,
        "backend": backend,
        "precision": precision,
        "profile": [profile.min, profile.opt, profile.max],
        "device": to_dict(device),
        "versions": required,
        "options": options or {},
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:KEY_CHARS]


def timing_cache_path(root: str | Path, device: DeviceFacts, versions: dict[str, str]) -> Path:
    """Where TensorRT builds on this GPU with these libraries keep their timing cache."""
    payload = {"device": to_dict(device), "versions": {k: versions.get(k) for k in REQUIRED_VERSIONS["tensorrt"]}}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:KEY_CHARS]
    return Path(root) / TIMING_DIR / f"timing-{digest}.bin"


def entry_name(backend: str, precision: str, profile: BatchProfile, key: str) -> str:
    """Readable and unique: "onnxruntime-int8-b1-16-32-<key>"."""
    return f"{backend}-{precision}-b{profile.min}-{profile.opt}-{profile.max}-{key}"


@dataclass(frozen=True)
class CachedEngine:
    """One entry of the cache: its directory, and its manifest (None with `problem` when unreadable)."""

    path: Path
    manifest: Manifest | None
    problem: str | None = None


def list_cached(root: str | Path) -> list[CachedEngine]:
    """Engine directories under `root` (sorted by name); a broken one is listed with its problem."""
    root = Path(root)
    if not root.is_dir():
        return []
    entries = []
    for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            entries.append(CachedEngine(path, read_manifest(path)))
        except VceError as exc:
            entries.append(CachedEngine(path, None, str(exc)))
    return entries


def find_cached(
    root: str | Path, expected: EngineExpectation, backend: str, precision: str | None = None
) -> list[tuple[Path, Manifest]]:
    """Usable engines of `backend` (and `precision`) for `expected`, best first: a profile whose
    optimum is the run's batch size, then the narrowest profile."""
    found = []
    for entry in list_cached(root):
        manifest = entry.manifest
        if manifest is None or manifest.backend != backend:
            continue
        if precision is not None and manifest.precision != precision:
            continue
        if manifest.artifact is not None and not (entry.path / manifest.artifact).exists():
            continue
        if not find_mismatches(manifest, expected):
            found.append((entry.path, manifest))

    def preference(item: tuple[Path, Manifest]) -> tuple[int, int, str]:
        profile = item[1].profile
        exact = 0 if expected.batch_size is not None and profile.opt == expected.batch_size else 1
        return exact, profile.max - profile.min, item[0].name

    return sorted(found, key=preference)


def clear_cache(root: str | Path, bundle_hash: str | None = None, backend: str | None = None) -> list[Path]:
    """Remove cached engines (all, or those of one bundle / backend) and leftovers of interrupted
    builds. Only directories holding a manifest (or named as build leftovers) are ever removed."""
    root = Path(root)
    if not root.is_dir():
        return []
    removed = []
    for path in sorted(root.iterdir()):
        if not path.is_dir():
            continue
        if path.name.startswith(TEMP_PREFIX) or path.name == TIMING_DIR:
            if bundle_hash is None and backend is None:
                shutil.rmtree(path)
                removed.append(path)
            continue
        if not (path / MANIFEST_NAME).exists():
            continue
        try:
            manifest = read_manifest(path)
        except VceError:
            manifest = None
        if manifest is not None:
            if bundle_hash is not None and not manifest.bundle_hash.startswith(bundle_hash):
                continue
            if backend is not None and manifest.backend != backend:
                continue
        elif bundle_hash is not None or backend is not None:
            continue
        shutil.rmtree(path)
        removed.append(path)
    return removed

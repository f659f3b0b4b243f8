"""Choosing and loading an engine for `vce-stream run`: `--engine DIR` and `--backend auto|...`.

An engine directory is used only if its manifest fits this run (bundle, device, library versions,
batch size); otherwise one line names the mismatch and the `build-engine` command that fixes it.
Nothing is ever built here: `--backend auto` takes the best engine already in the cache, trying the
backends of the table (`vce_stream.engine.backends`) in their declared order (a TensorRT engine on
CUDA; an ONNX Runtime engine only for a run on the CPU), and otherwise the bundle's own PyTorch model on
the run's device.

How `run` calls it:

    scorer = make_scorer(bundle, backend=args.backend, engine_dir=args.engine, device=args.device,
                         batch_size=args.batch_size)

and may call `choose_engine` with the same arguments first to print which engine it took and why.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vce_stream.engine.cache import default_cache_root, find_cached
from vce_stream.engine.backends import backend_names, get_backend, library_versions
from vce_stream.engine.device import device_facts
from vce_stream.engine.manifest import (
    EngineExpectation,
    EngineMismatchError,
    Manifest,
    build_command,
    check_engine,
    read_manifest,
    verified_artifact,
)
from vce_stream.engine.profile import BatchProfile
from vce_stream.engine.base import FrameScorer
from vce_stream.errors import ConfigError, VceError

log = logging.getLogger(__name__)

# `--backend` of `run` and `batch`: every backend of the table, or the best one available.
BACKEND_CHOICES = ("auto", *backend_names())

# The profile suggested in "build one with: ..." when no engine exists yet.
DEFAULT_PROFILE = BatchProfile()  # the `build-engine --batch` default


@dataclass(frozen=True)
class EngineChoice:
    """What `make_scorer` will run: backend, device, the engine directory (None for the bundle's own
    PyTorch model), its manifest, and why it was chosen (one line for the run log)."""

    backend: str
    device: torch.device
    engine_dir: Path | None
    manifest: Manifest | None
    reason: str
    precision: str = "fp32"  # the torch backend's, when no engine directory is used


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The one place a device name becomes a device. None or "auto": CUDA where there is a device,
    else the CPU. "cuda" without an index becomes "cuda:<current device>" here, once, so nothing
    downstream ever sees an index of None. A name torch does not know, CUDA on a machine without it, or
    an index the machine does not have is a VceError (exit 2)."""
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {device}: not a device (cpu, cuda, cuda:N or auto)") from None
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise VceError(f"device {device} was asked for, but this machine has no CUDA device")
    if device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    if not 0 <= device.index < torch.cuda.device_count():
        raise VceError(f"device {device} was asked for, but this machine has {torch.cuda.device_count()} CUDA device(s): cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return device


def backend_device(backend: str, device: torch.device) -> torch.device:
    """The device an engine of `backend` runs on for a run on `device` (the table's device rule)."""
    return get_backend(backend).run_device(device)


def expectation_for(bundle: Any, backend: str, device: torch.device, batch_size: int | None = None) -> EngineExpectation:
    """What an engine of `backend` must have been built for to serve `bundle` here."""
    return EngineExpectation(
        bundle_hash=bundle.content_hash,
        labels=tuple(bundle.labels),
        device=device_facts(backend_device(backend, device)),
        versions=library_versions(backend),
        batch_size=batch_size,
    )


def open_engine(
    engine_dir: str | Path, manifest: Manifest, bundle: Any, device: torch.device, threads: int | None = None
) -> FrameScorer:
    """The scorer of an engine directory. `choose_engine` checks the manifest against the run first;
    the backend checks the artifact itself (confined to `engine_dir`, its recorded size and sha256)."""
    return get_backend(manifest.backend).open(Path(engine_dir), manifest, bundle, device, threads)


def choose_engine(
    bundle: Any,
    backend: str = "auto",
    *,
    engine_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    cache_root: str | Path | None = None,
    precision: str = "auto",
) -> EngineChoice:
    """Decide what to run, refusing unusable engines; never builds anything.

    precision: the torch backend's when it runs without an engine directory: fp32, bf16, fp16, or
    auto (bf16 autocast on a CUDA device, fp32 on the CPU). Engines carry their own precision.
    """
    if backend not in BACKEND_CHOICES:
        raise ConfigError(f"--backend must be one of {BACKEND_CHOICES}, got {backend!r}")
    device = resolve_device(device)
    torch_precision = torch_run_precision(precision, device)
    bundle_path = getattr(bundle, "path", None)

    if engine_dir is not None:
        engine_dir = Path(engine_dir)
        manifest = read_manifest(engine_dir)
        if backend != "auto" and manifest.backend != backend:
            raise EngineMismatchError(
                f"engine {engine_dir} is a {manifest.backend} engine, but --backend {backend} was asked for; "
                f"build one with: {build_command(bundle_path, backend, _default_precision(backend), manifest.profile, None)}"
            )
        run_device = backend_device(manifest.backend, device)
        check_engine(engine_dir, manifest, expectation_for(bundle, manifest.backend, run_device, batch_size), bundle_path)
        if manifest.artifact is not None:
            verified_artifact(engine_dir, manifest)  # refused here, before the run prints its choice
        return EngineChoice(manifest.backend, run_device, engine_dir, manifest, f"engine {engine_dir} ({_describe(manifest, batch_size)})")

    root = Path(cache_root) if cache_root is not None else default_cache_root()
    if backend == "torch":
        return EngineChoice("torch", device, None, None, f"PyTorch eager on {device}{_in(torch_precision)}", torch_precision)
    if backend != "auto":
        run_device = backend_device(backend, device)
        entry = get_backend(backend)
        found = _cached(root, bundle, backend, run_device, batch_size, entry.auto_precisions or entry.precisions)
        if found is None:
            profile = _profile_for(batch_size)
            raise VceError(
                f"no {backend} engine for this bundle in the engine cache {root}; build one with: "
                f"{build_command(bundle_path, backend, _default_precision(backend), profile, None)}"
            )
        path, manifest = found
        return EngineChoice(backend, run_device, path, manifest, f"cached engine {path.name} ({_describe(manifest, batch_size)})")

    for candidate in backend_names():
        entry = get_backend(candidate)
        if not entry.auto_precisions or not entry.available(device):
            continue
        run_device = backend_device(candidate, device)
        found = _cached(root, bundle, candidate, run_device, batch_size, entry.auto_precisions)
        if found is not None:
            path, manifest = found
            return EngineChoice(candidate, run_device, path, manifest, f"auto: cached engine {path.name} ({_describe(manifest, batch_size)})")
    return EngineChoice("torch", device, None, None, f"auto: no cached engine fits, PyTorch eager on {device}{_in(torch_precision)}", torch_precision)


TORCH_PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def torch_run_precision(precision: str, device: torch.device) -> str:
    """The torch backend's precision for a run: `auto` is bf16 autocast on CUDA, fp32 on the CPU."""
    if precision not in TORCH_PRECISIONS:
        raise ConfigError(f"--precision must be one of {TORCH_PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def _in(precision: str) -> str:
    return "" if precision == "fp32" else f" in {precision} autocast"


def make_scorer(
    bundle: Any,
    backend: str = "auto",
    engine_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    *,
    batch_size: int | None = None,
    cache_root: str | Path | None = None,
    threads: int | None = None,
    precision: str = "auto",
) -> FrameScorer:
    """The FrameScorer `run` uses: see `choose_engine` for the choice, `open_engine` for the scorer.

    backend: "auto" | "tensorrt" | "onnxruntime" | "torch". engine_dir: an engine directory
    (`--engine`), checked against this run. device: "cpu", "cuda", "cuda:N" or None (CUDA if present).
    batch_size: the run's batch size, which must lie in the engine's profile. threads: ONNX Runtime
    intra-op threads (None: its default).
    """
    choice = choose_engine(bundle, backend, engine_dir=engine_dir, device=device, batch_size=batch_size, cache_root=cache_root, precision=precision)
    log.info("engine: %s", choice.reason)
    return open_choice(choice, bundle, threads)


def open_choice(choice: EngineChoice, bundle: Any, threads: int | None = None) -> FrameScorer:
    """The scorer for what `choose_engine` decided: PyTorch eager, or the chosen engine directory."""
    if choice.engine_dir is None:
        return get_backend(choice.backend).open(None, None, bundle, choice.device, threads, choice.precision)
    assert choice.manifest is not None
    return open_engine(choice.engine_dir, choice.manifest, bundle, choice.device, threads)


def _cached(
    root: Path, bundle: Any, backend: str, device: torch.device, batch_size: int | None, precisions: tuple[str, ...]
) -> tuple[Path, Manifest] | None:
    expected = expectation_for(bundle, backend, device, batch_size)
    for precision in precisions:
        found = find_cached(root, expected, backend, precision)
        if found:
            return found[0]
    return None


def _default_precision(backend: str) -> str:
    return get_backend(backend).default_precision


def _profile_for(batch_size: int | None) -> BatchProfile:
    """The profile a "build one with" hint suggests: the default, centred on the run's batch size."""
    if batch_size is None:
        return DEFAULT_PROFILE
    return BatchProfile(1, batch_size, max(DEFAULT_PROFILE.max, batch_size))


def _describe(manifest: Manifest, batch_size: int | None = None) -> str:
    fit = ""
    if batch_size is not None and not manifest.profile.contains(batch_size):
        fit = f" (run batch {batch_size} is {'split' if batch_size > manifest.profile.max else 'padded'} to fit)"
    return (
        f"{manifest.backend} {manifest.precision}, batch {manifest.profile.text}{fit}, "
        f"max |dp| {manifest.agreement.max_abs_diff:.2g} vs PyTorch"
    )

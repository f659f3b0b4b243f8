"""The build flow shared by every backend: build, check the engine has what was asked for, measure
its agreement with the PyTorch model, write the manifest, and move the directory into place.

A build happens in a temporary directory beside the target and is renamed into place only when every
check passed, so an engine directory is either complete (with its manifest) or absent.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engines import BuildContext, get_builder
from vce_stream.atomic import check_replaceable, replace_directory
from vce_stream.engine.cache import TEMP_PREFIX, cache_key, default_cache_root, entry_name, timing_cache_path
from vce_stream.engine.backends import get_backend, library_versions
from vce_stream.engine.device import DeviceFacts, device_facts
from vce_stream.engine.manifest import MANIFEST_NAME, Agreement, Manifest, file_digest, write_manifest
from vce_stream.engine.profile import BatchProfile
from vce_stream.errors import ConfigError, VceError


class EngineBuildError(VceError):
    """A built engine failed its checks (wrong properties, or too far from the PyTorch model)."""


@dataclass(frozen=True)
class AgreementTolerance:
    """Largest max |p_engine - p_torch| each precision may show on the calibration batch.

    fp32: engines reorder floating-point sums, nothing more (measured ONNX Runtime: ~1e-7 on the tiny
    bundle and on ViT-B/16). int8: dynamic quantisation of the linear layers (measured: ~2e-3 tiny,
    ~5e-3 ViT-B/16 with random weights; examples/bench_engines.py). fp16 / bf16: TensorRT autocast,
    10 / 7 mantissa bits (not measurable here: no GPU).
    """

    fp32: float = 1e-4
    fp16: float = 2e-2
    bf16: float = 5e-2
    int8: float = 5e-2

    def for_precision(self, precision: str) -> float:
        return float(getattr(self, precision))


@dataclass(frozen=True)
class BuildConfig:
    """tolerance: see AgreementTolerance. calibration_seed: the synthetic calibration frames' seed.
    Calibration frames number profile.max + 1, so the check also runs a split and a padded batch."""

    tolerance: AgreementTolerance = AgreementTolerance()
    calibration_seed: int = 0


def calibration_frames(count: int, size: int, seed: int = 0) -> torch.Tensor:
    """`count` uint8 frames (count, size, size, 3): smooth random colour fields plus grain, closer to
    endoscopy images than white noise (no real frames ship with the package)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, max(2, size // 16), max(2, size // 16), generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    grain = 0.05 * torch.randn(count, 3, size, size, generator=generator)
    frames = ((smooth + grain).clamp(0, 1) * 255).round().to(torch.uint8)
    return frames.permute(0, 2, 3, 1).contiguous()


def max_abs_difference(engine_probs: np.ndarray, reference_probs: np.ndarray) -> float:
    if engine_probs.shape != reference_probs.shape:
        raise EngineBuildError(f"engine returned shape {engine_probs.shape}, the PyTorch model {reference_probs.shape}")
    if not np.all(np.isfinite(engine_probs)):
        raise EngineBuildError("engine returned non-finite probabilities")
    return float(np.max(np.abs(engine_probs.astype(np.float64) - reference_probs.astype(np.float64))))


def default_engine_dir(
    cache_root: Path, bundle_hash: str, backend: str, precision: str, profile: BatchProfile,
    device: DeviceFacts, versions: dict[str, str], options: dict[str, Any] | None = None,
) -> Path:  # fmt: skip
    key = cache_key(bundle_hash, backend, precision, profile, device, versions, options)
    return cache_root / entry_name(backend, precision, profile, key)


def build_engine(
    bundle: Any,
    backend: str,
    precision: str = "fp32",
    profile: BatchProfile = BatchProfile(),
    *,
    out: str | Path | None = None,
    cache_root: str | Path | None = None,
    device: str | torch.device | None = None,
    config: BuildConfig = BuildConfig(),
) -> tuple[Path, Manifest]:
    """Build `bundle`'s frame model for `backend` / `precision` / `profile` on this machine.

    out: the engine directory (default: its entry in the engine cache). device: where a TensorRT or
    torch engine runs ("cuda:0"); ONNX Runtime engines are CPU engines. Returns (directory, manifest).
    Raises ConfigError for an impossible request and EngineBuildError when the engine fails its checks.
    """
    from vce_stream.engine.select import backend_device, open_engine, resolve_device

    entry, builder = get_backend(backend), get_builder(backend)
    if precision not in entry.precisions:
        raise ConfigError(f"{backend} engines are built in {entry.precisions}, not {precision!r}")
    run_device = backend_device(backend, resolve_device(device))
    facts = device_facts(run_device)
    versions = library_versions(backend)
    if backend == "tensorrt" and "torch_tensorrt" not in versions:
        raise VceError("tensorrt engines need torch_tensorrt (pip install 'vce-stream[tensorrt]'), which is not installed")
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    target = Path(out) if out is not None else default_engine_dir(
        root, bundle.content_hash, backend, precision, profile, facts, versions
    )  # fmt: skip
    _check_replaceable(target)

    image_size = int(bundle.preprocess.size)
    model = bundle.build_frame_model(run_device)
    target.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{target.name}.", dir=target.parent))
    os.chmod(workdir, 0o755)  # mkdtemp makes it private; an engine directory is an ordinary folder
    try:
        context = BuildContext(device=run_device, timing_cache=timing_cache_path(root, facts, versions))
        artifact = builder.build(model, workdir, precision, profile, image_size, context)
        digest, size = file_digest(workdir / artifact) if artifact is not None else (None, None)
        manifest = Manifest(
            backend=backend,
            precision=precision,
            profile=profile,
            bundle_hash=bundle.content_hash,
            labels=tuple(bundle.labels),
            image_size=image_size,
            device=facts,
            versions=versions,
            agreement=Agreement(max_abs_diff=float("nan"), tolerance=config.tolerance.for_precision(precision), frames=0),
            artifact=artifact,
            artifact_sha256=digest,
            artifact_bytes=size,
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        )
        problems = builder.verify(workdir / str(artifact), precision, image_size) if artifact is not None else []
        if problems:
            raise EngineBuildError(
                f"the {backend} {precision} engine does not have the requested properties: {'; '.join(problems)}"
            )
        agreement = _measure(model, open_engine(workdir, manifest, bundle, run_device), profile, image_size, precision, config)
        manifest = dataclasses.replace(manifest, agreement=agreement, precision_report=builder.report(workdir))
        write_manifest(workdir, manifest)
        _move_into_place(workdir, target)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return target, manifest


def _measure(
    model: torch.nn.Module, scorer: Any, profile: BatchProfile, image_size: int, precision: str, config: BuildConfig
) -> Agreement:
    """Agreement of `scorer` with `model` (fp32 eager) on profile.max + 1 calibration frames."""
    frames = calibration_frames(profile.max + 1, image_size, config.calibration_seed)
    device = next(model.parameters()).device
    with torch.inference_mode():
        reference = model(frames.to(device)).float().cpu().numpy()
    diff = max_abs_difference(np.asarray(scorer.score(frames)), reference)
    tolerance = config.tolerance.for_precision(precision)
    if not diff <= tolerance:
        raise EngineBuildError(
            f"the {precision} engine's probabilities differ from the PyTorch model's by up to {diff:.3g}, "
            f"more than the {precision} tolerance {tolerance:g}"
        )
    return Agreement(max_abs_diff=diff, tolerance=tolerance, frames=int(frames.shape[0]))


def _check_replaceable(target: Path) -> None:
    """An existing target may be replaced only if it is an engine directory (or empty)."""
    check_replaceable(target, MANIFEST_NAME, "an engine directory")


def _move_into_place(workdir: Path, target: Path) -> None:
    """Rename the finished build over `target` (an old engine there is removed only afterwards)."""
    replace_directory(workdir, target, marker=MANIFEST_NAME, what="an engine directory", temp_prefix=f"{TEMP_PREFIX}{target.name}.")

"""The tensorrt backend: a torch-tensorrt ExportedProgram (built by `vce-stream build-engine --backend
tensorrt`) reloaded without the build step and run on a CUDA device.

uint8 frames cross to the GPU (a quarter of the bytes of float; `non_blocking` from pinned memory)
and are normalised inside the engine. Batches are fitted into the engine's min/opt/max profile.
"""

from __future__ import annotations

from pathlib import Path

from typing import Any

import numpy as np
import torch

from vce_stream.engine.backends import Backend, register_backend
from vce_stream.engine.base import check_frames
from vce_stream.engine.device import cuda_driver_version, package_version, tensorrt_version
from vce_stream.engine.manifest import verified_artifact
from vce_stream.engine.profile import BatchProfile, run_in_profile
from vce_stream.errors import InputError, VceError


def tensorrt_available() -> bool:
    """A CUDA device and an importable torch_tensorrt (which registers the ops the program calls)."""
    if not torch.cuda.is_available():
        return False
    try:
        import torch_tensorrt  # noqa: F401
    except Exception:  # noqa: BLE001 - without libnvinfer its __init__ raises a plain Exception
        return False
    return True


class TensorRTScorer:
    """`FrameScorer` over a saved torch-tensorrt program on `device` (a CUDA device)."""

    def __init__(
        self, program_path: str | Path, labels: tuple[str, ...], profile: BatchProfile, device: str | torch.device = "cuda"
    ) -> None:
        import torch_tensorrt

        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"TensorRT engines run on a CUDA device, not {self.device}")
        try:
            with torch.cuda.device(self.device):
                self.module = torch_tensorrt.load(str(program_path)).module()
        except Exception as exc:  # a damaged program fails in torch.export / TensorRT deserialisation
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(f"{program_path}: not a usable TensorRT engine file ({first[:200]}); rebuild the engine") from None
        self.labels = tuple(labels)
        self.profile = profile

    def _outputs(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The engine's outputs: (probabilities, features) for engines built with both, else (probabilities,)."""
        with torch.inference_mode():
            out = self.module(frames.to(self.device, non_blocking=True))
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    def _run(self, frames: torch.Tensor) -> np.ndarray:
        return self._outputs(frames)[0].float().cpu().numpy()

    def score(self, frames: torch.Tensor) -> np.ndarray:
        check_frames(frames)
        if frames.shape[0] == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return run_in_profile(frames, self.profile, self._run)

    def score_with_features(self, frames: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Both outputs of the engine (probabilities, unit features) from its one pass."""
        check_frames(frames)

        def both(batch: torch.Tensor) -> np.ndarray:
            outputs = self._outputs(batch)
            if len(outputs) < 2:
                raise VceError("this TensorRT engine was built without the image-feature output; rebuild it with `vce-stream build-engine`")
            return torch.cat([outputs[0].float(), outputs[1].float()], dim=1).cpu().numpy()

        joined = run_in_profile(frames, self.profile, both)
        return joined[:, : len(self.labels)], joined[:, len(self.labels) :]


def _run_device(device: torch.device) -> torch.device:
    if device.type != "cuda":
        raise VceError("tensorrt engines need a CUDA device and torch_tensorrt; this machine has no CUDA device")
    return device


def _versions() -> dict[str, str]:
    found = {
        "torch_tensorrt": package_version("torch_tensorrt") or package_version("torch-tensorrt"),
        "tensorrt": tensorrt_version(),
        "cuda": torch.version.cuda,
        "driver": cuda_driver_version(),
    }
    return {name: version for name, version in found.items() if version is not None}


def _open(engine_dir: Path | None, manifest: Any, bundle: Any, device: torch.device, threads: int | None, precision: str | None = None) -> TensorRTScorer:
    assert engine_dir is not None and manifest is not None
    return TensorRTScorer(verified_artifact(engine_dir, manifest), tuple(bundle.labels), manifest.profile, _run_device(device))


BACKEND = register_backend(
    Backend(
        name="tensorrt",
        precisions=("fp16", "bf16", "fp32"),
        auto_precisions=("fp16", "bf16", "fp32"),
        auto_rank=10,
        run_device=_run_device,
        available=lambda device: device.type == "cuda" and tensorrt_available(),
        versions=_versions,
        open=_open,
    )
)

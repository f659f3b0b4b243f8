"""The onnxruntime backend: an exported frame model (fp32 or int8) run on the CPU.

Built by `vce-stream build-engine --backend onnxruntime` (engines/onnx_builder.py). The graph takes
uint8 frames and returns probabilities, so this class only fits batches into the engine's profile and
hands numpy arrays to the session.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import importlib.util
from typing import Any

import numpy as np
import torch

from vce_stream.engine.backends import Backend, register_backend
from vce_stream.engine.base import check_frames
from vce_stream.engine.device import package_version
from vce_stream.engine.manifest import verified_artifact
from vce_stream.engine.profile import BatchProfile, run_in_profile
from vce_stream.errors import InputError, VceError


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    """threads: intra-op threads (None: ONNX Runtime's default, one per physical core).
    inter_op_threads: parallel branches; a ViT is one chain, so 1."""

    threads: int | None = None
    inter_op_threads: int = 1


class OnnxScorer:
    """`FrameScorer` over an ONNX Runtime CPU session; any batch size (split or padded to `profile`)."""

    def __init__(
        self, model_path: str | Path, labels: tuple[str, ...], profile: BatchProfile,
        options: OnnxRuntimeOptions = OnnxRuntimeOptions(),
    ) -> None:  # fmt: skip
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session_options.inter_op_num_threads = options.inter_op_threads
        if options.threads is not None:
            session_options.intra_op_num_threads = options.threads
        session_options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(str(model_path), session_options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own classes for every kind of unusable file
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(f"{model_path}: not a usable ONNX engine file ({first[:200]}); rebuild the engine") from None
        self.input_name = self.session.get_inputs()[0].name
        self.labels = tuple(labels)
        self.profile = profile

    def _run(self, frames: torch.Tensor) -> np.ndarray:
        return self.session.run(None, {self.input_name: frames.contiguous().numpy()})[0]

    def score(self, frames: torch.Tensor) -> np.ndarray:
        check_frames(frames)
        if frames.shape[0] == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return run_in_profile(frames.cpu(), self.profile, self._run).astype(np.float32, copy=False)

    def score_with_features(self, frames: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Both outputs of the engine's graph (probabilities, unit features): one forward pass."""
        check_frames(frames)
        if len(self.session.get_outputs()) < 2:
            raise VceError("this ONNX Runtime engine was built without the image-feature output; rebuild it with `vce-stream build-engine`")

        def both(batch: torch.Tensor) -> np.ndarray:
            probs, features = self.session.run(None, {self.input_name: batch.contiguous().numpy()})[:2]
            return np.concatenate([probs, features], axis=1)

        joined = run_in_profile(frames.cpu(), self.profile, both).astype(np.float32, copy=False)
        return joined[:, : len(self.labels)], joined[:, len(self.labels) :]


def _installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def _run_device(device: torch.device) -> torch.device:
    """ONNX Runtime engines are CPU engines, whatever device the run asked for."""
    if not _installed():
        raise VceError("onnxruntime engines need onnxruntime (pip install 'vce-stream[onnx]'), which is not installed")
    return torch.device("cpu")


def _versions() -> dict[str, str]:
    found = {"onnxruntime": package_version("onnxruntime"), "onnx": package_version("onnx")}
    return {name: version for name, version in found.items() if version is not None}


def _open(engine_dir: Path | None, manifest: Any, bundle: Any, device: torch.device, threads: int | None, precision: str | None = None) -> OnnxScorer:
    assert engine_dir is not None and manifest is not None
    return OnnxScorer(verified_artifact(engine_dir, manifest), tuple(bundle.labels), manifest.profile, OnnxRuntimeOptions(threads=threads))


BACKEND = register_backend(
    Backend(
        name="onnxruntime",
        precisions=("fp32", "int8"),
        auto_precisions=("int8", "fp32"),
        auto_rank=20,
        run_device=_run_device,
        # A CPU engine is never `auto`'s choice for a run on a GPU: torch on the GPU is faster.
        available=lambda device: device.type == "cpu" and _installed(),
        versions=_versions,
        open=_open,
    )
)

"""The ONNX Runtime engine: an exported frame model (fp32 or int8) run on the CPU.

Built by `vce-stream build-engine --backend onnxruntime` (engines/onnx_builder.py). The graph takes
uint8 frames and returns probabilities, so this class only fits batches into the engine's profile and
hands numpy arrays to the session.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engines.profile import BatchProfile, run_in_profile
from vce_stream.engine.base import check_frames
from vce_stream.errors import InputError


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

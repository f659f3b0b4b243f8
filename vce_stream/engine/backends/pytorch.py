"""The torch backend (module named pytorch so it does not shadow the torch package): a bundle's FrameProbabilityModel run eagerly on the CPU or a CUDA device.

It needs no engine file (an engine directory of it holds only a manifest) and is what `--backend auto`
falls back to when no compiled engine fits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vce_stream.engine.backends import Backend, register_backend
from vce_stream.engine.base import check_frames


class TorchScorer:
    """`FrameScorer` over a uint8-in, probabilities-out module (`FrameProbabilityModel`).

    Frames (B, S, S, 3) uint8 RGB on the CPU (pinned or not) are copied to `device` with
    `non_blocking=True` when it is a CUDA device, so a copy from pinned memory overlaps the host's
    work; normalisation runs inside the model, on the device.
    """

    def __init__(self, model: nn.Module, labels: tuple[str, ...], device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.labels = tuple(labels)

    def score(self, frames: torch.Tensor) -> np.ndarray:
        check_frames(frames)
        if frames.shape[0] == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        if self.device.type == "cuda":
            frames = frames.to(self.device, non_blocking=True)
        with torch.inference_mode():
            probs = self.model(frames)
        return probs.float().cpu().numpy()

    def score_with_features(self, frames: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and unit image features from one forward pass (`forward_with_features`)."""
        check_frames(frames)
        if self.device.type == "cuda":
            frames = frames.to(self.device, non_blocking=True)
        with torch.inference_mode():
            probs, features = self.model.forward_with_features(frames)
        return probs.float().cpu().numpy(), features.float().cpu().numpy()


def torch_scorer(bundle: Any, device: str | torch.device = "cpu") -> TorchScorer:
    """The bundle's own PyTorch model as a scorer on `device`."""
    device = torch.device(device)
    return TorchScorer(bundle.build_frame_model(device), tuple(bundle.labels), device)


def _open(engine_dir: Path | None, manifest: Any, bundle: Any, device: torch.device, threads: int | None) -> TorchScorer:
    return torch_scorer(bundle, device)


BACKEND = register_backend(
    Backend(
        name="torch",
        precisions=("fp32",),
        auto_precisions=(),
        auto_rank=100,
        run_device=lambda device: device,
        available=lambda device: True,
        versions=dict,
        open=_open,
    )
)

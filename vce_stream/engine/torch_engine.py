"""The torch engine: a bundle's FrameProbabilityModel run eagerly on the CPU or a CUDA device."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

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

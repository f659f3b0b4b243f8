"""The one interface every engine (torch, ONNX Runtime, TensorRT) offers to the pipeline."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class FrameScorer(Protocol):
    """Scores batches of prepared frames.

    Input: a uint8 tensor (B, H, W, 3), RGB, already resized and cropped to the model size
    (`vce_stream.sources.preprocess`), on the CPU and possibly in pinned memory. Normalisation happens
    inside the engine. Output: float32 numpy array (B, len(labels)) of probabilities in label order.
    Any batch size B >= 1 is accepted (engines with a fixed profile pad or split internally).
    """

    labels: tuple[str, ...]

    def score(self, frames: torch.Tensor) -> np.ndarray: ...

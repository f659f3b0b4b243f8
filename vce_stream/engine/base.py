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


def check_frames(frames: torch.Tensor) -> None:
    """Raise ValueError unless `frames` is what `FrameScorer.score` accepts: uint8 (B, H, W, 3)."""
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (B, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")


@runtime_checkable
class FeatureScorer(FrameScorer, Protocol):
    """A FrameScorer that also returns each frame's L2-normalised image feature from the same forward
    pass (for `run --save-embeddings`): (probabilities (B, L), features (B, D)), both float32 numpy."""

    def score_with_features(self, frames: torch.Tensor) -> tuple[np.ndarray, np.ndarray]: ...

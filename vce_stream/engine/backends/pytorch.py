"""The torch backend (module named pytorch so it does not shadow the torch package): a bundle's FrameProbabilityModel run eagerly on the CPU or a CUDA device.

It needs no engine file (an engine directory of it holds only a manifest) and is what `--backend auto`
falls back to when no compiled engine fits. Precision: fp32, or bf16 / fp16 under `torch.autocast`
(matrix products in the low precision; autocast keeps softmax, LayerNorm and reductions in fp32). On a
CUDA device `--backend auto` runs bf16 (same range as fp32, no overflow); its agreement with fp32 is
measured when the scorer opens (`measure_agreement`) and stated in the run log, as a built engine's is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vce_stream.engine.backends import Backend, register_backend
from vce_stream.engine.base import check_frames
from vce_stream.errors import VceError


# precision -> autocast dtype (None: plain fp32).
AUTOCAST: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class TorchScorer:
    """`FrameScorer` over a uint8-in, probabilities-out module (`FrameProbabilityModel`).

    Frames (B, S, S, 3) uint8 RGB on the CPU (pinned or not) are copied to `device` with
    `non_blocking=True` when it is a CUDA device, so a copy from pinned memory overlaps the host's
    work; normalisation runs inside the model, on the device.
    """

    def __init__(self, model: nn.Module, labels: tuple[str, ...], device: str | torch.device = "cpu", precision: str = "fp32") -> None:
        if precision not in AUTOCAST:
            raise ValueError(f"torch runs in {tuple(AUTOCAST)}, not {precision!r}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.labels = tuple(labels)
        self.precision = precision

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = AUTOCAST[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def score(self, frames: torch.Tensor) -> np.ndarray:
        check_frames(frames)
        if frames.shape[0] == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return halving_on_oom(self._score, frames, self.device)

    def _score(self, frames: torch.Tensor) -> np.ndarray:
        if self.device.type == "cuda":
            frames = frames.to(self.device, non_blocking=True)
        with torch.inference_mode(), self._autocast():
            probs = self.model(frames)
        return probs.float().cpu().numpy()

    def score_with_features(self, frames: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and unit image features from one forward pass (`forward_with_features`)."""
        check_frames(frames)
        if self.device.type == "cuda":
            frames = frames.to(self.device, non_blocking=True)
        with torch.inference_mode(), self._autocast():
            probs, features = self.model.forward_with_features(frames)
        return probs.float().cpu().numpy(), features.float().cpu().numpy()


def halving_on_oom(score: Callable[[torch.Tensor], np.ndarray], frames: torch.Tensor, device: torch.device) -> np.ndarray:
    """`score(frames)`; a batch that does not fit in GPU memory is retried once as two halves, and a
    half that still does not fit is a one-line VceError (exit 2) asking for a smaller --batch-size."""
    try:
        return score(frames)
    except torch.OutOfMemoryError:
        if frames.shape[0] < 2:
            raise VceError(f"one frame does not fit in the memory of {device}; use another device") from None
    if device.type == "cuda":
        torch.cuda.empty_cache()
    half = frames.shape[0] // 2
    try:
        return np.concatenate([score(frames[:half]), score(frames[half:])])
    except torch.OutOfMemoryError:
        raise VceError(
            f"a batch of {frames.shape[0]} frames does not fit in the memory of {device}, nor its halves; "
            f"use --batch-size {max(1, half // 2)} or less"
        ) from None


def torch_scorer(bundle: Any, device: str | torch.device = "cpu", precision: str = "fp32") -> TorchScorer:
    """The bundle's own PyTorch model as a scorer on `device`, in `precision` (fp32, bf16, fp16)."""
    device = torch.device(device)
    return TorchScorer(bundle.build_frame_model(device), tuple(bundle.labels), device, precision)


def measure_agreement(scorer: TorchScorer, image_size: int, frames: int = 8, seed: int = 0) -> float:
    """max |p - p_fp32| of `scorer` against the same model in fp32, on `frames` smooth random frames."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(frames, 3, max(2, image_size // 16), max(2, image_size // 16), generator=generator)
    batch = torch.nn.functional.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False)
    batch = (batch * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    reference = TorchScorer(scorer.model, scorer.labels, scorer.device, "fp32").score(batch)
    return float(np.abs(scorer.score(batch).astype(np.float64) - reference).max())


def _open(engine_dir: Path | None, manifest: Any, bundle: Any, device: torch.device, threads: int | None, precision: str | None = None) -> TorchScorer:
    return torch_scorer(bundle, device, (manifest.precision if manifest is not None else precision) or "fp32")


BACKEND = register_backend(
    Backend(
        name="torch",
        precisions=("fp32", "bf16", "fp16"),
        auto_precisions=(),
        auto_rank=100,
        run_device=lambda device: device,
        available=lambda device: True,
        versions=dict,
        open=_open,
    )
)

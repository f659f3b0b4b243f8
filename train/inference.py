"""Validation inference: sigmoid probabilities of every validation frame, batch by batch.

Frames are normalised by the runtime's own `UInt8Normalize` (vce_stream.model.classifier), the one
place the normalisation is defined for inference engines and training alike.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from vce_stream.model.classifier import UInt8Normalize
from vce_stream.sources.preprocess import PreprocessConfig

from train.config import TrainConfig
from train.data import FrameDataset, VideoFrames, concat_videos


class Normalizer(torch.nn.Module):
    """The training batches' (B, 3, S, S) uint8 frames -> normalised float32, through `UInt8Normalize`
    (which takes the engines' (B, S, S, 3) layout)."""

    def __init__(self, preprocess: PreprocessConfig) -> None:
        super().__init__()
        self.normalize = UInt8Normalize(preprocess)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.normalize(frames.permute(0, 2, 3, 1))


@torch.no_grad()
def predict_videos(
    model: torch.nn.Module,
    videos: dict[str, VideoFrames],
    config: TrainConfig,
    device: torch.device,
    normalizer: Normalizer,
    amp_dtype: torch.dtype | None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Sigmoid probabilities of every (sampled) validation frame: video id -> (indices, probs)."""
    files, targets = concat_videos(list(videos.values()))
    dataset = FrameDataset(files, targets, config.preprocess)
    loader = DataLoader(dataset, batch_size=config.eval_batch_size, shuffle=False, num_workers=config.data.num_workers)
    model.eval()
    outputs = []
    for frames, _ in loader:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(normalizer(frames.to(device, non_blocking=True))).logits
        outputs.append(torch.sigmoid(logits.float()).cpu().numpy())
    probs = np.concatenate(outputs) if outputs else np.zeros((0, len(config.labels)), np.float32)
    out, start = {}, 0
    for vid, video in videos.items():
        out[vid] = (video.index, probs[start : start + len(video)])
        start += len(video)
    return out

"""Mixup (Zhang et al., 2018) for multi-label frames: one coefficient per batch for images and labels.

mixed x = lam x + (1 - lam) x[perm], mixed y = lam y + (1 - lam) y[perm], lam ~ Beta(alpha, alpha).
The draw comes from a generator the loop seeds per step, so a resumed run mixes the same pairs.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch


class MixupDraw(NamedTuple):
    lam: float
    permutation: torch.Tensor  # (B,) int64: partner of each sample


def draw_mixup(batch_size: int, alpha: float, prob: float, rng: np.random.Generator) -> MixupDraw | None:
    """The coefficient and partners of one batch, or None when this batch is not mixed."""
    if alpha <= 0 or batch_size < 2 or rng.random() >= prob:
        return None
    lam = float(rng.beta(alpha, alpha))
    permutation = torch.from_numpy(rng.permutation(batch_size).astype(np.int64))
    return MixupDraw(lam, permutation)


def apply_mixup(images: torch.Tensor, targets: torch.Tensor, draw: MixupDraw) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix float images (B, ...) and targets (B, L) with the same coefficient and partners."""
    perm = draw.permutation.to(images.device)
    lam = draw.lam
    return lam * images + (1.0 - lam) * images[perm], lam * targets + (1.0 - lam) * targets[perm]

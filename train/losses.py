"""The training loss (SPEC §9): asymmetric loss on the classifier logits + weighted contrastive BCE.

Asymmetric loss (Ridnik et al., ICCV 2021), for probability p = sigmoid(x) and target y:
    L = -[ w_c y (1 - p)^gamma+ log(p) + (1 - y) p_m^gamma- log(1 - p_m) ],  p_m = max(p - m, 0)
with per-class positive weight w_c and log arguments clamped at eps. For 0/1 targets this is the
published formula; soft targets (label smoothing, mixup) weight the two terms by y and 1 - y.
Reduction: sum over labels, mean over the batch (both terms alike).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from train.config import LossConfig


def positive_weights(targets: np.ndarray, low: float, high: float) -> np.ndarray:
    """Per-class negatives / positives over training frames, clipped to [low, high] (no positives: high)."""
    targets = np.asarray(targets, dtype=bool)
    positives = targets.sum(axis=0).astype(np.float64)
    negatives = targets.shape[0] - positives
    ratio = np.divide(negatives, positives, out=np.full_like(positives, high), where=positives > 0)
    return np.clip(ratio, low, high).astype(np.float32)


def smooth_labels(targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Multi-label smoothing: y (1 - s) + s / 2 (1 -> 1 - s/2, 0 -> s/2)."""
    return targets * (1.0 - smoothing) + 0.5 * smoothing


def asymmetric_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
    gamma_pos: float = 1.0,
    gamma_neg: float = 4.0,
    margin: float = 0.05,
    eps: float = 1e-8,
) -> torch.Tensor:
    """ASL of (B, L) logits against (B, L) targets in [0, 1]; a scalar (see the module docstring)."""
    logits = logits.float()
    p = torch.sigmoid(logits)
    p_m = (p - margin).clamp(min=0) if margin > 0 else p
    positive = targets * torch.log(p.clamp(min=eps))
    negative = (1 - targets) * torch.log((1 - p_m).clamp(min=eps))
    if gamma_pos:
        positive = positive * (1 - p).pow(gamma_pos)
    if gamma_neg:
        negative = negative * p_m.pow(gamma_neg)
    if pos_weight is not None:
        positive = positive * pos_weight
    return -(positive + negative).sum(dim=1).mean()


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor, pos_weight: torch.Tensor | None) -> torch.Tensor:
    """BCE-with-logits with per-class positive weights; sum over labels, mean over the batch."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), targets, pos_weight=pos_weight, reduction="none")
    return loss.sum(dim=1).mean()


class LossParts(NamedTuple):
    total: torch.Tensor
    asl: torch.Tensor
    contrastive: torch.Tensor


class TrainingLoss(torch.nn.Module):
    """ASL(logits) + contrastive_weight x BCE(contrastive logits), both with the same positive weights
    and the same label-smoothed targets."""

    def __init__(self, cfg: LossConfig, pos_weight: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("pos_weight", torch.as_tensor(pos_weight, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, contrastive_logits: torch.Tensor, targets: torch.Tensor) -> LossParts:
        cfg = self.cfg
        soft = smooth_labels(targets.float(), cfg.label_smoothing)
        asl = asymmetric_loss(logits, soft, self.pos_weight, cfg.gamma_pos, cfg.gamma_neg, cfg.margin, cfg.eps)
        bce = weighted_bce(contrastive_logits, soft, self.pos_weight)
        return LossParts(asl + cfg.contrastive_weight * bce, asl.detach(), bce.detach())

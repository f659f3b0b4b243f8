"""The training loss: ASL against a direct per-element implementation of the published formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from train.config import LossConfig
from train.losses import TrainingLoss, asymmetric_loss, positive_weights, smooth_labels, weighted_bce


def asl_reference(logits, targets, pos_weight, gamma_pos, gamma_neg, clip, eps):
    """Ridnik et al. (2021), element by element, as in their reference code (hard 0/1 targets):
    xs_neg = min(1 - p + clip, 1); loss = y log(p) + (1 - y) log(xs_neg), each clamped at eps,
    times (1 - pt)^gamma with pt = p for positives and xs_neg for negatives; here positives also x w_c.
    Summed over labels, averaged over the batch."""
    total = 0.0
    rows, cols = len(logits), len(logits[0])
    for i in range(rows):
        for c in range(cols):
            p = 1.0 / (1.0 + math.exp(-logits[i][c]))
            xs_neg = min(1.0 - p + clip, 1.0)
            y = targets[i][c]
            if y == 1:
                term = pos_weight[c] * math.log(max(p, eps)) * (1.0 - p) ** gamma_pos
            else:
                term = math.log(max(xs_neg, eps)) * (1.0 - xs_neg) ** gamma_neg
            total -= term
    return total / rows


FIXED_LOGITS = [[2.0, -1.5, 0.3, -4.0], [-0.2, 3.1, -0.7, 0.05], [6.0, -6.0, 1.2, -0.01]]
FIXED_TARGETS = [[1, 0, 1, 0], [0, 1, 0, 0], [1, 1, 0, 1]]
FIXED_WEIGHTS = [1.0, 2.5, 7.0, 100.0]


def test_asl_matches_the_published_formula_on_fixed_inputs():
    got = asymmetric_loss(torch.tensor(FIXED_LOGITS), torch.tensor(FIXED_TARGETS, dtype=torch.float32),
                          torch.tensor(FIXED_WEIGHTS), gamma_pos=1.0, gamma_neg=4.0, margin=0.05, eps=1e-8)
    want = asl_reference(FIXED_LOGITS, FIXED_TARGETS, FIXED_WEIGHTS, 1.0, 4.0, 0.05, 1e-8)
    assert float(got) == pytest.approx(want, rel=1e-5)


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.tuples(st.floats(-8, 8), st.booleans()), min_size=6, max_size=6),
    gamma_pos=st.sampled_from([0.0, 1.0, 2.0]),
    gamma_neg=st.sampled_from([0.0, 2.0, 4.0]),
    clip=st.sampled_from([0.0, 0.05, 0.2]),
)
def test_asl_matches_the_formula_for_any_logits(data, gamma_pos, gamma_neg, clip):
    logits = [[x for x, _ in data[:3]], [x for x, _ in data[3:]]]
    targets = [[int(y) for _, y in data[:3]], [int(y) for _, y in data[3:]]]
    weights = [1.0, 3.0, 0.5]
    got = asymmetric_loss(torch.tensor(logits, dtype=torch.float64), torch.tensor(targets, dtype=torch.float64),
                          torch.tensor(weights, dtype=torch.float64), gamma_pos, gamma_neg, clip, 1e-8)
    assert float(got) == pytest.approx(asl_reference(logits, targets, weights, gamma_pos, gamma_neg, clip, 1e-8), rel=1e-4, abs=1e-6)


def test_asl_without_focusing_or_margin_is_weighted_bce():
    torch.manual_seed(0)
    logits = torch.randn(5, 4)
    targets = (torch.rand(5, 4) > 0.5).float()
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0])
    asl = asymmetric_loss(logits, targets, weights, gamma_pos=0.0, gamma_neg=0.0, margin=0.0)
    bce = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weights, reduction="sum") / 5
    assert float(asl) == pytest.approx(float(bce), rel=1e-5)


def test_positive_weights_are_negatives_over_positives_clipped():
    targets = np.zeros((200, 4), dtype=np.uint8)
    targets[:100, 0] = 1  # 100 neg / 100 pos = 1
    targets[:10, 1] = 1  # 190 / 10 = 19
    targets[:1, 2] = 1  # 199 -> clipped to 100
    # label 3 has no positives -> the maximum
    assert positive_weights(targets, 1.0, 100.0).tolist() == [1.0, 19.0, 100.0, 100.0]
    targets[:150, 0] = 1  # 50 / 150 < 1 -> clipped up to 1
    assert positive_weights(targets, 1.0, 100.0)[0] == 1.0


def test_label_smoothing_moves_targets_towards_one_half():
    smoothed = smooth_labels(torch.tensor([0.0, 1.0, 0.25]), 0.05)
    assert smoothed.tolist() == pytest.approx([0.025, 0.975, 0.25 * 0.95 + 0.025])


def test_training_loss_is_asl_plus_weighted_contrastive_bce_on_smoothed_targets():
    cfg = LossConfig()
    torch.manual_seed(1)
    logits, contrastive = torch.randn(4, 17), torch.randn(4, 17) * 5
    targets = (torch.rand(4, 17) > 0.7).float()
    weights = torch.linspace(1, 50, 17)
    parts = TrainingLoss(cfg, weights)(logits, contrastive, targets)
    soft = targets * 0.95 + 0.025
    asl = asymmetric_loss(logits, soft, weights, cfg.gamma_pos, cfg.gamma_neg, cfg.margin, cfg.eps)
    bce = weighted_bce(contrastive, soft, weights)
    assert float(parts.total) == pytest.approx(float(asl + 0.4 * bce), rel=1e-6)
    assert float(parts.asl) == pytest.approx(float(asl)) and float(parts.contrastive) == pytest.approx(float(bce))

"""Mixup mixes labels with the images' coefficient; the EMA update is exactly the formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from train.ema import ModelEma, ema_decay
from train.mixup import apply_mixup, draw_mixup


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(2, 9), alpha=st.floats(0.05, 2.0), seed=st.integers(0, 2**31))
def test_mixup_mixes_labels_with_the_same_coefficient_as_images(batch, alpha, seed):
    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.normal(size=(batch, 3, 4, 4))).double()
    targets = torch.from_numpy(rng.integers(0, 2, size=(batch, 5))).double()
    draw = draw_mixup(batch, alpha, 1.0, rng)
    assert draw is not None and 0.0 <= draw.lam <= 1.0
    assert sorted(draw.permutation.tolist()) == list(range(batch))
    mixed_x, mixed_y = apply_mixup(images, targets, draw)
    partner_x, partner_y = images[draw.permutation], targets[draw.permutation]
    # Recover each sample's image coefficient from the pixels, and check the labels used it.
    for i in range(batch):
        diff = images[i] - partner_x[i]
        if diff.abs().max() > 1e-6:
            lam_i = float(((mixed_x[i] - partner_x[i]) * diff).sum() / (diff * diff).sum())
            assert lam_i == pytest.approx(draw.lam, abs=1e-9)
        assert torch.allclose(mixed_y[i], draw.lam * targets[i] + (1 - draw.lam) * partner_y[i])


def test_mixup_is_off_with_alpha_zero_or_probability_zero():
    rng = np.random.default_rng(0)
    assert draw_mixup(8, 0.0, 1.0, rng) is None
    assert draw_mixup(8, 0.3, 0.0, rng) is None
    assert draw_mixup(1, 0.3, 1.0, rng) is None


def test_mixup_draw_is_reproducible_from_the_seed():
    a = draw_mixup(16, 0.3, 1.0, np.random.default_rng(7))
    b = draw_mixup(16, 0.3, 1.0, np.random.default_rng(7))
    assert a.lam == b.lam and torch.equal(a.permutation, b.permutation)


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_update_is_exact(warmup):
    torch.manual_seed(0)
    model = Small()
    ema = ModelEma(model, decay=0.9, warmup=warmup)
    expected = {k: v.clone().double() for k, v in model.state_dict().items()}
    for n in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            model.bn.running_mean.add_(1.0)
            model.bn.num_batches_tracked += 3
        ema.update(model)
        d = min(0.9, (1 + n) / (10 + n)) if warmup else 0.9
        assert ema_decay(0.9, n, warmup) == d
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                expected[k] = d * expected[k] + (1 - d) * v.double()
            else:
                expected[k] = v.clone()
    assert ema.updates == 5
    for k, v in ema.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v.double(), expected[k], rtol=1e-6, atol=1e-6)
        else:
            assert torch.equal(v, expected[k].to(v.dtype))  # integer buffers are copied


def test_ema_copy_is_frozen_and_independent():
    model = Small()
    ema = ModelEma(model, decay=0.5)
    assert not any(p.requires_grad for p in ema.module.parameters())
    with torch.no_grad():
        model.fc.weight.fill_(1.0)
    assert not torch.equal(ema.module.fc.weight, model.fc.weight)

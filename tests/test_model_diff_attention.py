"""Differential attention: the fused call equals the formula, the conversion is exact, gradients flow."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from timm.layers import Attention

from vce_stream.model.config import ArchConfig, arch_preset, depth_lambda_init
from vce_stream.model.backbone import VisionTower
from vce_stream.model.diff_attention import (
    DifferentialAttention,
    calibrate_head_rmsnorm,
    convert_to_differential,
    differential_modules,
)


def explicit_differential_attention(m: DifferentialAttention, x: torch.Tensor) -> torch.Tensor:
    """SPEC §8 written out: two softmax maps, their lambda-weighted difference, times V, / (1 - lambda_init)."""
    B, N, _ = x.shape
    H, D = m.num_heads, m.head_dim
    q1, k1, v = m.qkv(x).view(B, N, 3, H, D).permute(2, 0, 3, 1, 4)
    q2, k2 = m.qk2(x).view(B, N, 2, H, D).permute(2, 0, 3, 1, 4)
    a1 = torch.softmax(q1 @ k1.transpose(-2, -1) / math.sqrt(D), dim=-1)
    a2 = torch.softmax(q2 @ k2.transpose(-2, -1) / math.sqrt(D), dim=-1)
    lam = math.exp(float(m.lambda_q1 @ m.lambda_k1)) - math.exp(float(m.lambda_q2 @ m.lambda_k2)) + m.lambda_init
    out = ((a1 - lam * a2) @ v) / (1.0 - m.lambda_init)
    return m.proj(out.transpose(1, 2).reshape(B, N, H * D))


def randomise_group2(m: DifferentialAttention, generator: torch.Generator) -> None:
    """Move group 2 and the lambda vectors away from the symmetric start."""
    with torch.no_grad():
        m.qk2.weight.copy_(torch.randn(m.qk2.weight.shape, generator=generator) * 0.2)
        m.qk2.bias.copy_(torch.randn(m.qk2.bias.shape, generator=generator) * 0.2)
        for p in (m.lambda_q1, m.lambda_k1, m.lambda_q2, m.lambda_k2):
            p.copy_(torch.randn(p.shape, generator=generator) * 0.3)


@settings(max_examples=25, deadline=None)
@given(
    heads=st.integers(1, 4),
    head_dim=st.sampled_from([4, 8, 16]),
    tokens=st.integers(1, 20),
    batch=st.integers(1, 3),
    lambda_init=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**16),
)
def test_fused_attention_equals_explicit_formula(heads, head_dim, tokens, batch, lambda_init, seed):
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    dim = heads * head_dim
    m = DifferentialAttention(dim, heads, lambda_init=lambda_init).eval()
    randomise_group2(m, generator)
    x = torch.randn(batch, tokens, dim, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(m(x), explicit_differential_attention(m, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("lambda_init", [0.0, 0.2, 0.5, 0.8, 0.95])
def test_converted_attention_block_equals_pretrained_block(lambda_init):
    torch.manual_seed(0)
    attn = Attention(48, num_heads=6, qkv_bias=True).eval()
    converted = DifferentialAttention.from_attention(attn, lambda_init).eval()
    x = torch.randn(2, 17, 48)
    with torch.no_grad():
        assert float(converted.lambda_full()) == pytest.approx(lambda_init, abs=1e-7)
        torch.testing.assert_close(converted(x), attn(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("schedule,lambda_init", [("constant", 0.2), ("constant", 0.8), ("depth", 0.8)])
def test_converted_random_vit_features_match_original(schedule, lambda_init):
    arch = ArchConfig(img_size=32, patch_size=8, width=96, depth=3, num_heads=6, feature_dim=32,
                      lambda_init=lambda_init, lambda_schedule=schedule)
    torch.manual_seed(1)
    plain = VisionTower(arch).eval()
    converted = copy.deepcopy(plain)
    convert_to_differential(converted.trunk, [arch.lambda_init_for(i) for i in range(arch.depth)])
    converted.eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        cosine = F.cosine_similarity(converted(images), plain(images), dim=-1)
    assert cosine.min() >= 0.9999
    inits = [m.lambda_init for _, m in differential_modules(converted)]
    assert inits == [arch.lambda_init_for(i) for i in range(arch.depth)]


def test_depth_schedule_is_the_differential_transformer_default():
    assert depth_lambda_init(0) == pytest.approx(0.2)
    assert depth_lambda_init(11) == pytest.approx(0.8 - 0.6 * math.exp(-3.3))
    arch = ArchConfig(lambda_schedule="depth")
    assert [arch.lambda_init_for(i) for i in range(3)] == [depth_lambda_init(i) for i in range(3)]


def test_gradient_on_q2_is_minus_lambda_times_gradient_on_q1_at_step_0():
    torch.manual_seed(2)
    attn = Attention(32, num_heads=4, qkv_bias=True)
    m = DifferentialAttention.from_attention(attn, lambda_init=0.8)
    x = torch.randn(2, 9, 32)
    m(x).pow(2).sum().backward()
    rows = m.attn_dim
    grad_q1, grad_q2 = m.qkv.weight.grad[:rows], m.qk2.weight.grad[:rows]
    assert grad_q1.abs().max() > 0
    torch.testing.assert_close(grad_q2, -0.8 * grad_q1, atol=1e-5, rtol=1e-4)


def test_one_optimiser_step_changes_q2_k2_and_lambda_vectors():
    torch.manual_seed(3)
    arch = arch_preset("tiny")
    tower = VisionTower(arch)
    convert_to_differential(tower.trunk, arch.lambda_init)
    diff = [m for _, m in differential_modules(tower)]
    before = [{n: p.detach().clone() for n, p in m.named_parameters()} for m in diff]
    optimiser = torch.optim.SGD(tower.parameters(), lr=0.1)
    target = torch.randn(4, arch.feature_dim)
    F.mse_loss(tower(torch.randn(4, 3, 32, 32)), target).backward()
    optimiser.step()
    for m, old in zip(diff, before):
        for name in ("qk2.weight", "qk2.bias", "lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
            assert not torch.equal(dict(m.named_parameters())[name], old[name]), name
        # After the step the two groups differ, so lambda has moved off lambda_init.
        assert float(m.lambda_full().detach()) != pytest.approx(m.lambda_init, abs=1e-9)


def test_conversion_refuses_attention_with_qk_norm():
    attn = Attention(32, num_heads=4, qk_norm=True, norm_layer=torch.nn.LayerNorm)
    with pytest.raises(ValueError, match="q_norm"):
        DifferentialAttention.from_attention(attn)


def test_head_rmsnorm_calibration_restores_pretrained_scale():
    torch.manual_seed(4)
    arch = ArchConfig(img_size=32, patch_size=8, width=64, depth=2, num_heads=4, feature_dim=32)
    plain = VisionTower(arch).eval()
    normed = copy.deepcopy(plain)
    convert_to_differential(normed.trunk, 0.8, head_rmsnorm=True)
    normed.eval()
    images = [torch.randn(8, 3, 32, 32) for _ in range(2)]
    with torch.no_grad():
        uncalibrated = normed(images[0])
        assert calibrate_head_rmsnorm(normed, images) == arch.depth
        calibrated = normed(images[0])
        reference = plain(images[0])
    error_before = (uncalibrated - reference).norm() / reference.norm()
    error_after = (calibrated - reference).norm() / reference.norm()
    # Per-token RMS varies around the per-head mean, so calibration is close, not exact.
    assert error_after < 0.5 * error_before
    assert F.cosine_similarity(calibrated, reference, dim=-1).min() > 0.95


def test_inference_cache_follows_parameter_updates():
    torch.manual_seed(5)
    m = DifferentialAttention.from_attention(Attention(32, num_heads=4, qkv_bias=True)).eval()
    x = torch.randn(2, 7, 32)
    with torch.inference_mode():
        first = m(x)
    with torch.no_grad():
        m.qk2.weight.add_(0.5)  # an in-place update, as an optimiser or load_state_dict does
    with torch.inference_mode():
        after = m(x)
    with torch.no_grad():
        expected = explicit_differential_attention(m, x)
    assert not torch.allclose(first, after)
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-5)


def test_inference_cache_follows_replaced_parameters():
    torch.manual_seed(6)
    m = DifferentialAttention.from_attention(Attention(32, num_heads=4, qkv_bias=True)).eval()
    x = torch.randn(2, 7, 32)
    with torch.no_grad():
        first = m(x)
        replacement = {k: v.clone() for k, v in m.state_dict().items()}
        replacement["qk2.weight"] = replacement["qk2.weight"] + 0.5
        m.load_state_dict(replacement, assign=True)  # new parameter objects, version counters at 0
        after = m(x)
        expected = explicit_differential_attention(m, x)
    assert not torch.allclose(first, after)
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-5)

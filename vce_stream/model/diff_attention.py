"""Differential attention, and the conversion of pretrained self-attention that is exact at step 0.

Differential attention (SPEC §8): A = softmax(Q1 K1^T / sqrt(d)) - lambda softmax(Q2 K2^T / sqrt(d)),
output A V, with lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init (one scalar per layer).

The conversion keeps every pretrained head as group 1 and adds group 2 as a copy of Q1/K1 with
lq2 = lq1, lk2 = lk1; the output is divided by (1 - lambda_init). At step 0 the two softmax maps are
equal, lambda = lambda_init, so the block computes (1 - lambda_init) A1 V / (1 - lambda_init) = A1 V:
exactly the pretrained block. Training breaks the symmetry: the gradient on Q2 is -lambda times the
gradient on Q1. (Splitting the pretrained heads into two half-size groups instead gives features with
cosine 0.34 to 0.47 to the pretrained ones at step 0.)

Both groups run in one fused `scaled_dot_product_attention` call over 2H heads: [Q1; Q2], [K1; K2],
[V; V], then out = o[:, :H] - lambda o[:, H:]. (The forward folds lambda and 1 / (1 - lambda_init)
into the two copies of V, [s V; -lambda s V], so the combination is one sum; the same arithmetic.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

# Standard deviation of the lambda re-parameterisation vectors at initialisation (Differential
# Transformer reference code); any value works for exactness because group 2 copies group 1.
LAMBDA_VECTOR_STD = 0.1
RMSNORM_EPS = 1e-5


class HeadRMSNorm(nn.Module):
    """RMSNorm over each head's channels, with a per-head, per-channel gain.

    Off by default. Normalising removes the pretrained output scale, so the gain is calibrated from
    data (`calibrate_head_rmsnorm`) rather than left at 1.
    """

    def __init__(self, num_heads: int, head_dim: int, eps: float = RMSNORM_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_heads, 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, N, D)
        rms = x.float().pow(2).mean(-1, keepdim=True).add(self.eps).rsqrt()
        return (x.float() * rms).to(x.dtype) * self.weight


class DifferentialAttention(nn.Module):
    """Multi-head differential self-attention with timm `Attention`'s interface and parameter names.

    Parameters: `qkv` (Q1, K1, V; the pretrained projection), `qk2` (Q2, K2), `lambda_q1`, `lambda_k1`,
    `lambda_q2`, `lambda_k2` (head_dim each), `proj` (the pretrained output projection), `norm`
    (HeadRMSNorm or None). `differential_parameter_names()` lists the new ones (qk2, lambdas, norm).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        head_dim: int | None = None,
        dim_out: int | None = None,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        lambda_init: float = 0.8,
        head_rmsnorm: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= lambda_init < 1.0:
            raise ValueError(f"lambda_init must lie in [0, 1), got {lambda_init}")
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        self.attn_dim = self.num_heads * self.head_dim
        self.lambda_init = float(lambda_init)
        self.qkv = nn.Linear(dim, 3 * self.attn_dim, bias=qkv_bias)
        self.qk2 = nn.Linear(dim, 2 * self.attn_dim, bias=qkv_bias)
        self.lambda_q1 = nn.Parameter(torch.empty(self.head_dim).normal_(0.0, LAMBDA_VECTOR_STD))
        self.lambda_k1 = nn.Parameter(torch.empty(self.head_dim).normal_(0.0, LAMBDA_VECTOR_STD))
        self.lambda_q2 = nn.Parameter(self.lambda_q1.detach().clone())
        self.lambda_k2 = nn.Parameter(self.lambda_k1.detach().clone())
        self.norm = HeadRMSNorm(self.num_heads, self.head_dim) if head_rmsnorm else None
        self.attn_drop = attn_drop
        self.proj = nn.Linear(self.attn_dim, dim_out or dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)
        self.calibration: list[torch.Tensor] | None = None  # per-batch head RMS while calibrating
        self._fused_cache: tuple | None = None  # (parameters, their versions, weight, bias), inference only

    @classmethod
    @torch.no_grad()
    def from_attention(
        cls, attn: nn.Module, lambda_init: float = 0.8, head_rmsnorm: bool = False
    ) -> DifferentialAttention:
        """Convert a timm `Attention` (plain: no q/k norm, no output norm, no gate) exactly (SPEC §8)."""
        for name in ("q_norm", "k_norm", "norm"):
            if not isinstance(getattr(attn, name, nn.Identity()), nn.Identity):
                raise ValueError(f"cannot convert attention with a {name} layer: {type(attn).__name__}")
        if getattr(attn, "gate", None) is not None:
            raise ValueError(f"cannot convert gated attention: {type(attn).__name__}")
        qkv: nn.Linear = attn.qkv
        proj: nn.Linear = attn.proj
        new = cls(
            qkv.in_features,
            attn.num_heads,
            head_dim=attn.head_dim,
            dim_out=proj.out_features,
            qkv_bias=qkv.bias is not None,
            proj_bias=proj.bias is not None,
            lambda_init=lambda_init,
            head_rmsnorm=head_rmsnorm,
            attn_drop=attn.attn_drop.p,
            proj_drop=attn.proj_drop.p,
        ).to(device=qkv.weight.device, dtype=qkv.weight.dtype)
        new.qkv.load_state_dict(qkv.state_dict())
        new.proj.load_state_dict(proj.state_dict())
        new.copy_group1_to_group2()
        return new

    @torch.no_grad()
    def copy_group1_to_group2(self) -> None:
        """Q2/K2 := Q1/K1 and lq2/lk2 := lq1/lk1: both maps equal, lambda = lambda_init."""
        rows = 2 * self.attn_dim  # qkv rows are laid out q, k, v
        self.qk2.weight.copy_(self.qkv.weight[:rows])
        if self.qkv.bias is not None:
            self.qk2.bias.copy_(self.qkv.bias[:rows])
        self.lambda_q2.copy_(self.lambda_q1)
        self.lambda_k2.copy_(self.lambda_k1)

    def lambda_full(self) -> torch.Tensor:
        """lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init (a 0-d tensor)."""
        lambda_1 = torch.exp(torch.dot(self.lambda_q1, self.lambda_k1))
        lambda_2 = torch.exp(torch.dot(self.lambda_q2, self.lambda_k2))
        return lambda_1 - lambda_2 + self.lambda_init

    def differential_parameter_names(self) -> list[str]:
        """Names (relative to this module) of the parameters the conversion added."""
        return [name for name, _ in self.named_parameters() if not name.startswith(("qkv.", "proj."))]

    def _fused_projection(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight (and bias) of Q1, K1, V, Q2, K2 as one projection, rows ordered [Q1, Q2, K1, K2, V].

        With this order the projected tokens view as (B, N, 5, H, D) and [Q1; Q2], [K1; K2] are
        contiguous blocks of 2H heads: no copy of Q or K is needed for the fused attention call, and one
        matrix product replaces two. When no gradient is needed (inference) the concatenated weight is
        cached, keyed to the parameter objects themselves (held, so a replaced parameter can never be
        mistaken for a new one at a reused address) and their version counters, so it is rebuilt exactly
        when a parameter is replaced or changed in place; tracing and export always see the concatenation.
        """
        tensors = tuple(t for t in (self.qkv.weight, self.qk2.weight, self.qkv.bias, self.qk2.bias) if t is not None)
        cacheable = not (torch.is_grad_enabled() or torch.compiler.is_compiling() or torch.compiler.is_exporting())
        if cacheable:
            versions = tuple(t._version for t in tensors)
            cached = self._fused_cache
            if (
                cached is not None
                and len(cached[0]) == len(tensors)
                and all(a is b for a, b in zip(cached[0], tensors))
                and cached[1] == versions
            ):
                return cached[2], cached[3]
        C = self.attn_dim

        def reorder(group1: torch.Tensor, group2: torch.Tensor) -> torch.Tensor:
            return torch.cat((group1[:C], group2[:C], group1[C : 2 * C], group2[C:], group1[2 * C :]))

        weight = reorder(self.qkv.weight, self.qk2.weight)
        bias = None if self.qkv.bias is None else reorder(self.qkv.bias, self.qk2.bias)
        if cacheable:
            self._fused_cache = (tensors, versions, weight, bias)
        return weight, bias

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        B, N, _ = x.shape
        H, D = self.num_heads, self.head_dim
        weight, bias = self._fused_projection()
        qqkkv = F.linear(x, weight, bias).view(B, N, 5, H, D)
        q = qqkkv[:, :, 0:2].reshape(B, N, 2 * H, D).transpose(1, 2)  # (B, 2H, N, D) [Q1; Q2], a view
        k = qqkkv[:, :, 2:4].reshape(B, N, 2 * H, D).transpose(1, 2)  # [K1; K2], a view
        # [c1 V; c2 V] with (c1, c2) = (s, -lambda s): A1 c1 V + A2 c2 V = s (A1 - lambda A2) V, so the
        # differential combination and the 1 / (1 - lambda_init) rescale ride on the copy of V that the
        # fused call needs anyway, and the output is one sum of the two halves.
        exact_rescale = self.norm is None or self.calibration is not None
        s = 1.0 / (1.0 - self.lambda_init) if exact_rescale else 1.0
        coefficients = torch.stack((torch.ones_like(self.lambda_q1[0]), -self.lambda_full())) * s
        v = (qqkkv[:, :, 4:5] * coefficients.view(1, 1, 2, 1, 1)).reshape(B, N, 2 * H, D).transpose(1, 2)
        if attn_mask is not None and attn_mask.dim() == 4 and attn_mask.size(1) == H:
            attn_mask = torch.cat((attn_mask, attn_mask), dim=1)
        o = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.attn_drop if self.training else 0.0,
            is_causal=is_causal,
        )
        o = o[:, :H] + o[:, H:]  # (B, H, N, D): s (A1 - lambda A2) V
        if self.calibration is not None:
            # RMS of the un-rescaled differential output (1 - lambda_init) A1 V, per head.
            self.calibration.append((o.detach().float() / s).pow(2).mean(-1).sqrt().mean(dim=(0, 2)))
        elif self.norm is not None:
            o = self.norm(o) * (1.0 - self.lambda_init)
        x = o.transpose(1, 2).reshape(B, N, self.attn_dim)
        return self.proj_drop(self.proj(x))


def _attention_blocks(vit: nn.Module) -> list[nn.Module]:
    blocks = getattr(vit, "blocks", None)
    if blocks is None:
        raise ValueError(f"{type(vit).__name__} has no `blocks`: not a timm VisionTransformer")
    return list(blocks)


def convert_to_differential(
    vit: nn.Module, lambda_init: float | Sequence[float] = 0.8, head_rmsnorm: bool = False
) -> nn.Module:
    """Replace every block's self-attention of a timm ViT by its exact differential conversion.

    `lambda_init` is one value for all blocks or one per block. Returns `vit`, changed in place.
    """
    blocks = _attention_blocks(vit)
    values = [float(lambda_init)] * len(blocks) if isinstance(lambda_init, (int, float)) else list(lambda_init)
    if len(values) != len(blocks):
        raise ValueError(f"{len(values)} lambda_init values for {len(blocks)} blocks")
    for block, value in zip(blocks, values):
        block.attn = DifferentialAttention.from_attention(block.attn, value, head_rmsnorm)
    return vit


def differential_modules(model: nn.Module) -> Iterable[tuple[str, DifferentialAttention]]:
    """(qualified name, module) of every differential attention block in `model`."""
    return ((name, m) for name, m in model.named_modules() if isinstance(m, DifferentialAttention))


@torch.no_grad()
def calibrate_head_rmsnorm(model: nn.Module, images: Iterable[torch.Tensor]) -> int:
    """Set each HeadRMSNorm gain so the normalised block keeps the pretrained output scale.

    Runs `model` on the batches in `images` with the norms bypassed (the exact, pretrained-equivalent
    path), records each head's mean RMS of the differential output o = (1 - lambda_init) A1 V, and sets
    the gain to mean RMS(A1 V) / (1 - lambda_init) (SPEC §8): the forward multiplies the normalised
    output by (1 - lambda_init), so the block's output RMS matches the pretrained one on average.
    Returns the number of blocks calibrated.
    """
    targets = [m for _, m in differential_modules(model) if m.norm is not None]
    for m in targets:
        m.calibration = []
    was_training = model.training
    model.eval()
    try:
        for batch in images:
            model(batch)
        for m in targets:
            if not m.calibration:
                raise ValueError("calibrate_head_rmsnorm needs at least one batch of images")
            rms_diff = torch.stack(m.calibration).mean(0)  # (H,) RMS of (1 - lambda_init) A1 V
            rms_pretrained = rms_diff / (1.0 - m.lambda_init)
            gain = rms_pretrained / (1.0 - m.lambda_init)
            m.norm.weight.copy_(gain.view(-1, 1, 1).expand_as(m.norm.weight))
    finally:
        for m in targets:
            m.calibration = None
        model.train(was_training)
    return len(targets)

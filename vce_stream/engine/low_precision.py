"""Reduced-precision frame models whose precision is written in the graph: fp16/bf16 with fp32 islands.

Why: torch-tensorrt 2.14 builds strongly typed TensorRT networks (TensorRT 11 has no fp16 builder
flag); its only way to lower precision for us would be its rule-based autocast pass, which casts
`node.meta["val"]` of every node it classifies and dies on the SymInt of `aten.sym_size.int` that a
dynamic batch puts in the graph (`'SymInt' object has no attribute 'to'`). So reduced-precision
engines are built from a model that is already in the low precision, exported with the dynamic
batch, and compiled with autocast off: TensorRT runs every layer in the type the graph gives it.

The islands kept in fp32 (each an explicit `.float()` in the graph, so an inspection of the exported
program proves them; `precision_report`):
- the uint8 -> normalised input and the final sigmoid (the engine's output is fp32 probabilities);
- every LayerNorm (statistics over 768 channels);
- the softmax of each attention group (scores are cast to fp32 before the softmax: max and sum in fp32);
- the differential combination A = s (softmax_1 - lambda softmax_2) (SPEC §8), computed on the attention
  maps in fp32 and cast to the low precision once, just before the product with V.
Matrix products (patch embedding, q/k/v, scores, A V, projections, MLP, heads) run in the low precision
(fp32 accumulation is asked of TensorRT with `use_fp32_acc`).

Measured (CPU emulation: inputs rounded to fp16/bf16, products accumulated in fp32, errors against
float64; `python -m vce_stream.engine.low_precision`; 197 tokens, 64 channels, 12 heads, logits of
std 2, lambda 0.8, lambda_init 0.8, seed 0): relative RMS error of differential attention divided by
plain attention's, for group 2 diverged from group 1 by d (0: step 0 of the exact conversion):

    d     folded into V, halves summed (training model)   halves summed in fp32   fp32 map combination (here)
    0.0   1.94x (fp16) 1.93x (bf16)                      1.94x / 1.93x           1.00x / 1.00x
    0.1   4.69x (fp16) 4.70x (bf16)                      4.69x / 4.70x           4.44x / 4.45x
    0.3   2.28x (fp16) 2.27x (bf16)                      2.28x / 2.27x           2.17x / 2.17x

So the issue's "4.7x" is real near step 0, and most of it is intrinsic: the result is a difference of
two nearly equal maps, so any rounding of what enters the subtraction (the scores) is amplified; doing
the subtraction itself in fp32 removes only the rounding of the halves (all of it at step 0, ~5% later).
fp32 islands are still the right place for it: they cost no extra product, and they make step 0 exact.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

LOW_PRECISION_DTYPES: dict[str, torch.dtype] = {"fp16": torch.float16, "bf16": torch.bfloat16}
DTYPE_NAMES: dict[torch.dtype, str] = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


class Fp32LayerNorm(nn.Module):
    """LayerNorm computed in fp32 (its own fp32 parameters) on a low-precision input, cast back."""

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.normalized_shape = tuple(norm.normalized_shape)
        self.eps = float(norm.eps)
        self.weight = None if norm.weight is None else nn.Parameter(norm.weight.detach().float().clone(), requires_grad=False)
        self.bias = None if norm.bias is None else nn.Parameter(norm.bias.detach().float().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


class IslandAttention(nn.Module):
    """Self-attention (plain or differential) with low-precision products and fp32 softmax/combination.

    Built from a `DifferentialAttention` (two groups, SPEC §8) or a timm `Attention` (one group); the
    projections are copies in `dtype`, the lambda vectors stay fp32. Frame models have no attention
    mask; one is refused.
    """

    def __init__(self, attn: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        from vce_stream.model.diff_attention import DifferentialAttention

        self.num_heads = int(attn.num_heads)
        self.head_dim = int(attn.head_dim)
        self.differential = isinstance(attn, DifferentialAttention)
        with torch.no_grad():
            if self.differential:
                weight, bias = attn._fused_projection()  # rows [Q1, Q2, K1, K2, V]
                self.lambda_init = float(attn.lambda_init)
                self.lambda_vectors = nn.Parameter(
                    torch.stack([attn.lambda_q1, attn.lambda_k1, attn.lambda_q2, attn.lambda_k2]).detach().float().clone(),
                    requires_grad=False,
                )
                exact = attn.norm is None
                self.rescale = 1.0 / (1.0 - self.lambda_init) if exact else 1.0
                self.norm = None if attn.norm is None else copy.deepcopy(attn.norm).float()
            else:
                for name in ("q_norm", "k_norm", "norm"):
                    if not isinstance(getattr(attn, name, nn.Identity()), nn.Identity):
                        raise ValueError(f"cannot lower attention with a {name} layer: {type(attn).__name__}")
                weight, bias = attn.qkv.weight, attn.qkv.bias  # rows [Q, K, V]
                self.norm = None
            self.qkv = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None).to(dtype)
            self.qkv.weight.copy_(weight)
            if bias is not None:
                self.qkv.bias.copy_(bias)
            self.proj = copy.deepcopy(attn.proj).to(dtype)
        self.scale = self.head_dim**-0.5

    def lambda_full(self) -> torch.Tensor:
        lq1, lk1, lq2, lk2 = self.lambda_vectors
        return torch.exp(torch.dot(lq1, lk1)) - torch.exp(torch.dot(lq2, lk2)) + self.lambda_init

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("frame models have no attention mask")
        B, N, _ = x.shape
        H, D = self.num_heads, self.head_dim
        groups = 2 if self.differential else 1
        qkv = self.qkv(x).view(B, N, 2 * groups + 1, H, D)
        q = qkv[:, :, :groups].reshape(B, N, groups * H, D).transpose(1, 2)
        k = qkv[:, :, groups : 2 * groups].reshape(B, N, groups * H, D).transpose(1, 2)
        v = qkv[:, :, 2 * groups].transpose(1, 2)  # (B, H, N, D)
        scores = torch.matmul(q * self.scale, k.transpose(-2, -1))  # low precision product
        maps = torch.softmax(scores.float(), dim=-1)  # fp32 softmax statistics
        if self.differential:
            maps = (maps[:, :H] - self.lambda_full() * maps[:, H:]) * self.rescale  # fp32 combination
        o = torch.matmul(maps.to(x.dtype), v)  # (B, H, N, D), low precision product
        if self.norm is not None:
            o = (self.norm(o.float()) * (1.0 - self.lambda_init)).to(x.dtype)
        return self.proj(o.transpose(1, 2).reshape(B, N, H * D))


class LowPrecisionFrameModel(nn.Module):
    """uint8 frames -> fp32 probabilities, with the classifier in `dtype` and the fp32 islands above.

    with_features: return (probabilities, unit image features) from the one pass, both fp32, as
    `FrameProbabilityModel.forward_with_features` does (the engine's second output, for embeddings).
    """

    def __init__(self, frame_model: nn.Module, dtype: torch.dtype, *, with_features: bool = False) -> None:
        super().__init__()
        self.dtype = dtype
        self.with_features = with_features
        self.normalize = copy.deepcopy(frame_model.normalize).float()
        self.classifier = lower_module(frame_model.classifier, dtype)

    def forward(self, frames: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        images = self.normalize(frames).to(self.dtype)  # normalised in fp32, then one cast
        if not self.with_features:
            return torch.sigmoid(self.classifier(images).logits.float())
        features = self.classifier.visual(images)
        probs = torch.sigmoid(self.classifier.heads(features).logits.float())
        return probs, torch.nn.functional.normalize(features.float(), dim=-1)  # normalised in fp32


def lower_module(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of `module` in `dtype` with every LayerNorm and self-attention replaced by its fp32-island
    version (the original is untouched)."""
    from timm.layers import Attention

    from vce_stream.model.diff_attention import DifferentialAttention

    replacements: dict[str, nn.Module] = {}
    for name, sub in module.named_modules():
        if isinstance(sub, nn.LayerNorm):
            replacements[name] = Fp32LayerNorm(sub)
        elif isinstance(sub, (DifferentialAttention, Attention)):
            replacements[name] = IslandAttention(sub, dtype)
    lowered = copy.deepcopy(module).to(dtype).eval()
    for name, new in replacements.items():
        parent_name, _, child = name.rpartition(".")
        setattr(lowered.get_submodule(parent_name) if parent_name else lowered, child, new)
    return lowered


def low_precision_model(frame_model: nn.Module, precision: str, *, with_features: bool = False) -> nn.Module:
    """The engine-export version of a `FrameProbabilityModel` in `precision` ("fp32": the model itself,
    or a shallow copy that also returns the image features when `with_features`)."""
    if precision == "fp32":
        if not with_features:
            return frame_model
        both = copy.copy(frame_model)  # shares the weights; only the output flag differs
        both.with_features = True
        return both
    if precision not in LOW_PRECISION_DTYPES:
        raise ValueError(f"low-precision models are {tuple(LOW_PRECISION_DTYPES)}, not {precision!r}")
    device = next(frame_model.parameters()).device
    return LowPrecisionFrameModel(frame_model, LOW_PRECISION_DTYPES[precision], with_features=with_features).to(device).eval()


# --- what the exported graph says ------------------------------------------------------------------

MATMUL_OPS = ("aten.mm", "aten.addmm", "aten.bmm", "aten.matmul", "aten.linear", "aten.convolution", "aten.conv2d")
LAYER_NORM_OPS = ("aten.layer_norm", "aten.native_layer_norm")
SOFTMAX_OPS = ("aten.softmax", "aten._softmax", "aten._safe_softmax")


@dataclass(frozen=True)
class PrecisionReport:
    """The dtypes of the operations of an exported program, grouped by what they are.

    output: dtype name of the program's output. matmul / layer_norm / softmax / combination: the set of
    dtype names those nodes produce (combination: the `sub` nodes that combine two softmax outputs).
    """

    output: str
    matmul: tuple[str, ...]
    layer_norm: tuple[str, ...]
    softmax: tuple[str, ...]
    combination: tuple[str, ...]
    source: str = "exported-program"

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "output": self.output, "matmul": list(self.matmul),
                "layer_norm": list(self.layer_norm), "softmax": list(self.softmax),
                "combination": list(self.combination)}  # fmt: skip


def _dtype_of(node: torch.fx.Node) -> str | None:
    val = node.meta.get("val")
    if isinstance(val, (tuple, list)):
        val = val[0] if val else None
    dtype = getattr(val, "dtype", None)
    return None if dtype is None else DTYPE_NAMES.get(dtype, str(dtype).replace("torch.", ""))


def _op_name(node: torch.fx.Node) -> str:
    return str(node.target).split(".default")[0].split(".int")[0].split(".Tensor")[0]


def _is_softmax_derived(node: torch.fx.Node, depth: int = 4) -> bool:
    """Whether `node` is a softmax or reached from one through at most `depth` slicing/scaling nodes."""
    if depth < 0 or node.op != "call_function":
        return False
    if _op_name(node).startswith(SOFTMAX_OPS):
        return True
    return any(isinstance(a, torch.fx.Node) and _is_softmax_derived(a, depth - 1) for a in node.args)


def precision_report(program: torch.export.ExportedProgram) -> PrecisionReport:
    """Group the exported program's nodes into matmuls, LayerNorms, softmaxes and the differential
    combination (a `sub` of two softmax-derived tensors) and record the dtypes they produce."""
    groups: dict[str, set[str]] = {"matmul": set(), "layer_norm": set(), "softmax": set(), "combination": set()}
    output = "unknown"
    for node in program.graph.nodes:
        if node.op == "output":
            first = node.args[0][0] if isinstance(node.args[0], (tuple, list)) else node.args[0]
            output = _dtype_of(first) or "unknown"
        if node.op != "call_function":
            continue
        name, dtype = _op_name(node), _dtype_of(node)
        if dtype is None:
            continue
        if name.startswith(MATMUL_OPS):
            groups["matmul"].add(dtype)
        elif name.startswith(LAYER_NORM_OPS):
            groups["layer_norm"].add(dtype)
        elif name.startswith(SOFTMAX_OPS):
            groups["softmax"].add(dtype)
        elif name == "aten.sub" and sum(isinstance(a, torch.fx.Node) and _is_softmax_derived(a) for a in node.args) == 2:
            groups["combination"].add(dtype)
    return PrecisionReport(output=output, **{k: tuple(sorted(v)) for k, v in groups.items()})


def report_problems(report: PrecisionReport, precision: str) -> list[str]:
    """Where `report` contradicts `precision` with fp32 islands; empty when the graph is what it claims."""
    problems = []
    if report.output != "fp32":
        problems.append(f"output is {report.output}, not fp32 probabilities")
    if precision == "fp32":
        low = sorted(set(report.matmul) - {"fp32"})
        if low:
            problems.append(f"fp32 model has matrix products in {low}")
        return problems
    if report.matmul != (precision,):
        problems.append(f"matrix products run in {list(report.matmul)}, not {precision}")
    for island in ("layer_norm", "softmax", "combination"):
        found = getattr(report, island)
        if found and found != ("fp32",):
            problems.append(f"{island.replace('_', ' ')} runs in {list(found)}, not fp32")
    return problems


# --- measured precision of the differential combination -------------------------------------------


def combination_errors(
    dtype: torch.dtype = torch.float16, *, batch: int = 4, heads: int = 12, tokens: int = 197, head_dim: int = 64,
    logit_std: float = 2.0, divergence: float = 0.3, lambda_: float = 0.8, lambda_init: float = 0.8, seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """Relative RMS error (against float64) of attention computed with `dtype` inputs and fp32
    accumulation, for: plain attention; differential attention as the training model writes it
    (coefficients folded into V, halves summed in `dtype`); the same with the halves summed in fp32;
    and the fp32 map-domain combination of `IslandAttention`. q/k entries have the std that gives
    attention logits of std `logit_std`; group 2 is group 1 plus `divergence` relative noise."""
    g = torch.Generator().manual_seed(seed)
    sigma = logit_std**0.5  # q.k / sqrt(d) with q, k ~ N(0, sigma^2) has std sigma^2
    shape = (batch, heads, tokens, head_dim)
    q1, k1, v = (torch.randn(shape, generator=g, dtype=torch.float64) * s for s in (sigma, sigma, 1.0))
    q2 = q1 + divergence * sigma * torch.randn(shape, generator=g, dtype=torch.float64)
    k2 = k1 + divergence * sigma * torch.randn(shape, generator=g, dtype=torch.float64)
    scale, s = head_dim**-0.5, 1.0 / (1.0 - lambda_init)

    def r(t: torch.Tensor) -> torch.Tensor:  # round to the low precision, compute on in fp32
        return t.to(dtype).float()

    def maps(q: torch.Tensor, k: torch.Tensor, low: bool) -> torch.Tensor:
        if not low:
            return torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1)
        return torch.softmax(r(r(q * scale) @ r(k).transpose(-2, -1)), dim=-1)  # fp32 softmax of rounded scores

    p1, p2 = maps(q1, k1, False), maps(q2, k2, False)
    plain_ref, diff_ref = p1 @ v, s * (p1 - lambda_ * p2) @ v
    lp1, lp2, rv = maps(q1, k1, True), maps(q2, k2, True), r(v)
    plain = r(r(lp1) @ rv)
    half1, half2 = r(lp1) @ r(s * rv), r(lp2) @ r(-lambda_ * s * rv)
    folded = r(r(half1) + r(half2))
    folded_fp32_sum = r(r(half1).double() + r(half2).double())
    islands = r(r(s * (lp1 - lambda_ * lp2)) @ rv)

    def rel(x: torch.Tensor, ref: torch.Tensor) -> float:
        return float((x.double() - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())

    plain_err = rel(plain, plain_ref)
    out = {"plain": plain_err, "folded": rel(folded, diff_ref), "folded_fp32_sum": rel(folded_fp32_sum, diff_ref),
           "fp32_islands": rel(islands, diff_ref)}  # fmt: skip
    out.update({f"{k}_ratio": v / plain_err for k, v in list(out.items()) if k != "plain"})
    return out


def main() -> None:
    """Print the measured errors (the figures quoted in the module docstring)."""
    for divergence in (0.0, 0.1, 0.3):
        for name, dtype in LOW_PRECISION_DTYPES.items():
            errors = combination_errors(dtype, divergence=divergence)
            print(f"d={divergence} {name}", " ".join(f"{k}={v:.3g}" for k, v in errors.items()))


if __name__ == "__main__":
    main()

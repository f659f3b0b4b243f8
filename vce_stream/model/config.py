"""Architecture configuration of the classifier (one frozen dataclass, stored in every bundle manifest).

Sizes are configuration: the BiomedCLIP ViT-B/16 is the default, the "tiny" preset is the same
architecture shrunk so tests build and run it in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from vce_stream.errors import ConfigError
from vce_stream.limits import MAX_IMAGE_SIDE, check_maxima

LAMBDA_SCHEDULES = ("constant", "depth")


@dataclass(frozen=True)
class ArchConfig:
    """The image classifier: timm ViT trunk -> linear projection -> heads (SPEC §7 to §9).

    timm_model: the timm entry point whose block design (norms, activations, class token) is used; the
        size fields below override its sizes, so a tiny test model is the same design.
    img_size, patch_size, width, depth, num_heads, mlp_ratio: the vision trunk.
    feature_dim: width of the projected image feature (512 for BiomedCLIP; the text embeddings' width).
    num_labels: classifier outputs; a bundle checks it against its label list.
    differential: replace every self-attention block by differential attention (SPEC §8).
    lambda_init: lambda_init of every layer for the "constant" schedule (the paper's 0.8).
    lambda_schedule: "constant", or "depth" for the Differential Transformer's 0.8 - 0.6 exp(-0.3 l).
    head_rmsnorm: per-head RMSNorm after the differential attention (off; needs calibration when on).
    dropout: before the linear classifier (SPEC §9: 0.4).
    se_hidden: hidden width of the excitation block (SPEC §9: 32).
    logit_scale_init: initial log of the contrastive temperature factor exp(tau) (CLIP's log(1/0.07)).
    logit_scale_max: exp(tau) is clamped to at most exp(logit_scale_max) (SPEC §9: 100).
    """

    timm_model: str = "vit_base_patch16_224"
    img_size: int = 224
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    feature_dim: int = 512
    num_labels: int = 17
    differential: bool = True
    lambda_init: float = 0.8
    lambda_schedule: str = "constant"
    head_rmsnorm: bool = False
    dropout: float = 0.4
    se_hidden: int = 32
    logit_scale_init: float = 2.659260036932778
    logit_scale_max: float = 4.605170185988092

    def __post_init__(self) -> None:
        check_maxima(self, "arch.", {"img_size": MAX_IMAGE_SIDE, "patch_size": MAX_IMAGE_SIDE, "width": 16_384, "depth": 256, "num_heads": 1_024, "mlp_ratio": 64, "feature_dim": 16_384, "num_labels": 1_024, "se_hidden": 16_384})
        if self.img_size % self.patch_size:
            raise ConfigError(f"arch.img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.width % self.num_heads:
            raise ConfigError(f"arch.width {self.width} is not divisible by num_heads {self.num_heads}")
        if min(self.depth, self.num_heads, self.feature_dim, self.num_labels, self.se_hidden) < 1:
            raise ConfigError("arch sizes (depth, num_heads, feature_dim, num_labels, se_hidden) must be >= 1")
        if not 0.0 <= self.lambda_init < 1.0:
            raise ConfigError(f"arch.lambda_init must lie in [0, 1), got {self.lambda_init}")
        if self.lambda_schedule not in LAMBDA_SCHEDULES:
            raise ConfigError(f"arch.lambda_schedule must be one of {LAMBDA_SCHEDULES}, got {self.lambda_schedule!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"arch.dropout must lie in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    def lambda_init_for(self, layer: int) -> float:
        """lambda_init of block `layer` (0-based) under the configured schedule."""
        return depth_lambda_init(layer) if self.lambda_schedule == "depth" else self.lambda_init


def depth_lambda_init(layer: int) -> float:
    """The Differential Transformer's default: 0.8 - 0.6 exp(-0.3 * depth), depth 0-based (SPEC §8)."""
    import math

    return 0.8 - 0.6 * math.exp(-0.3 * layer)


# Named architectures for `create_random_bundle` and `vce-stream demo-bundle`.
ARCH_PRESETS: dict[str, ArchConfig] = {
    # BiomedCLIP's image tower (SPEC §7) with differential attention: the real model.
    "vit_base_patch16_224": ArchConfig(),
    # The same design at toy size for tests: 32 px input, 4x4 patches of 8 px, 2 blocks of 4 heads.
    "tiny": ArchConfig(
        img_size=32, patch_size=8, width=64, depth=2, num_heads=4, feature_dim=32, se_hidden=8
    ),
}
ARCH_PRESETS["biomedclip"] = ARCH_PRESETS["vit_base_patch16_224"]


def arch_preset(name: str) -> ArchConfig:
    """The preset called `name`; ConfigError listing the presets otherwise."""
    try:
        return ARCH_PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown architecture preset {name!r}; presets: {sorted(ARCH_PRESETS)}") from None

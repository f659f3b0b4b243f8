"""The trainable classifier and the uint8-in, probabilities-out model that engines export.

`build_classifier(arch)` gives `DiffClipClassifier`: normalised images (B, 3, S, S) -> ClassifierOutput
(logits, contrastive logits). `FrameProbabilityModel` wraps it for inference: uint8 frames (B, S, S, 3)
-> sigmoid probabilities (B, L), normalisation inside, so engines move uint8 (a quarter of the bytes of
float32) and the exported graph is the whole frame -> probability function. With
`with_features=True` its forward returns (probabilities, L2-normalised image features) from the one
pass over the backbone, so an exported graph has both as outputs (frame embeddings, issue 13).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vce_stream.sources.preprocess import PreprocessConfig
from vce_stream.errors import ConfigError
from vce_stream.model.backbone import (
    VisionTower,
    arch_from_open_clip,
    locate_open_clip,
    read_open_clip_state,
    load_visual_weights,
)
from vce_stream.model.config import ArchConfig
from vce_stream.model.diff_attention import (
    DifferentialAttention,
    calibrate_head_rmsnorm,
    convert_to_differential,
)
from vce_stream.model.heads import ClassifierOutput, LabelHeads, random_text_embeddings

PARAM_GROUPS = ("backbone", "differential", "heads")


class DiffClipClassifier(nn.Module):
    """Vision tower (differential attention when `arch.differential`) + label heads.

    forward(normalised float images (B, 3, S, S)) -> ClassifierOutput(logits, contrastive_logits).
    The state_dict is plain tensors (EMA-friendly); `heads.text_embeddings` is a buffer.
    """

    def __init__(self, arch: ArchConfig, visual: VisionTower, heads: LabelHeads) -> None:
        super().__init__()
        self.arch = arch
        self.visual = visual
        self.heads = heads

    def forward(self, images: torch.Tensor) -> ClassifierOutput:
        return self.heads(self.visual(images))

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """The projected image feature (B, feature_dim) before the heads."""
        return self.visual(images)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role, for per-group learning rates or freezing.

        "differential": what the conversion added (Q2/K2, lambda vectors, head norms);
        "backbone": the rest of the vision tower (pretrained when loaded); "heads": the label heads.
        """
        differential: set[str] = set()
        for name, module in self.visual.named_modules():
            if isinstance(module, DifferentialAttention):
                differential.update(f"visual.{name}.{p}" for p in module.differential_parameter_names())
        groups: dict[str, list[nn.Parameter]] = {group: [] for group in PARAM_GROUPS}
        for name, param in self.named_parameters():
            if name.startswith("heads."):
                groups["heads"].append(param)
            elif name in differential:
                groups["differential"].append(param)
            else:
                groups["backbone"].append(param)
        return groups


def build_classifier(
    arch: ArchConfig,
    text_embeddings: torch.Tensor | None = None,
    pretrained: str | Path | None = None,
    *,
    calibration_images: list[torch.Tensor] | None = None,
    seed: int | None = None,
) -> DiffClipClassifier:
    """The classifier for `arch`, in train mode.

    pretrained: an open_clip model directory or `hf-hub:` id; its image tower is loaded (its sizes must
        equal `arch`'s, see `arch_from_open_clip`) before the exact differential conversion, so at step 0
        the features are the pretrained ones. Without it the weights are random.
    text_embeddings: (num_labels, feature_dim) label prompt embeddings (normalised here); None gives
        seeded random unit vectors (`random_text_embeddings`, for tests and random bundles).
    calibration_images: normalised image batches to calibrate the head RMSNorm gains (arch.head_rmsnorm).
    seed: seeds the random initialisation (the global RNG is left as it was).
    """
    if arch.differential and arch.head_rmsnorm and pretrained is not None and not calibration_images:
        raise ConfigError("arch.head_rmsnorm with pretrained weights needs calibration_images (uncalibrated "
                          "head norms destroy the pretrained output scale)")
    checkpoint = locate_open_clip(pretrained) if pretrained is not None else None
    theirs = arch_from_open_clip(checkpoint, arch) if checkpoint is not None else arch
    if theirs != arch:
        raise ConfigError(
            f"{pretrained}: image tower sizes differ from the architecture "
            f"({theirs.timm_model} {theirs.img_size}px width {theirs.width} depth {theirs.depth} "
            f"feature {theirs.feature_dim} vs {arch.timm_model} {arch.img_size}px width {arch.width} "
            f"depth {arch.depth} feature {arch.feature_dim}); use arch_from_open_clip to get its sizes"
        )
    with _seeded(seed):
        visual = VisionTower(arch)
        logit_scale = arch.logit_scale_init
        if checkpoint is not None:
            loaded_scale = load_visual_weights(visual, read_open_clip_state(checkpoint), str(checkpoint.weights))
            if loaded_scale is not None:
                logit_scale = float(loaded_scale)
        if arch.differential:
            convert_to_differential(
                visual.trunk, [arch.lambda_init_for(i) for i in range(arch.depth)], arch.head_rmsnorm
            )
            if arch.head_rmsnorm and calibration_images:
                calibrate_head_rmsnorm(visual, calibration_images)
        if text_embeddings is None:
            text_embeddings = random_text_embeddings(arch.num_labels, arch.feature_dim, seed or 0)
        heads = LabelHeads(
            arch.feature_dim,
            arch.num_labels,
            se_hidden=arch.se_hidden,
            dropout=arch.dropout,
            text_embeddings=text_embeddings,
            logit_scale_init=logit_scale,
            logit_scale_max=arch.logit_scale_max,
        )
    return DiffClipClassifier(arch, visual, heads)


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Seed the CPU RNG for the block and restore it afterwards; no-op for None."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class UInt8Normalize(nn.Module):
    """uint8 frames (B, S, S, 3) RGB -> normalised float32 (B, 3, S, S): (x / 255 - mean) / std.

    One multiply-add with folded constants; the one place the normalisation of PreprocessConfig is
    applied to frames (inference engines and training alike).
    """

    def __init__(self, preprocess: PreprocessConfig) -> None:
        super().__init__()
        mean = torch.tensor(preprocess.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(preprocess.std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std), persistent=False)
        self.register_buffer("shift", -mean / std, persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.permute(0, 3, 1, 2).float() * self.scale + self.shift


class FrameProbabilityModel(nn.Module):
    """uint8 frames (B, S, S, 3) RGB -> float32 label probabilities (B, L): what engines export.

    S is `preprocess.size`, which must equal the classifier's `arch.img_size`.
    with_features: forward returns `forward_with_features(frames)` instead, so exporting this module
    gives a graph with two outputs, probabilities (B, L) and unit image features (B, feature_dim).
    """

    def __init__(
        self, classifier: DiffClipClassifier, preprocess: PreprocessConfig, *, with_features: bool = False
    ) -> None:
        super().__init__()
        if preprocess.size != classifier.arch.img_size:
            raise ValueError(f"preprocess.size {preprocess.size} differs from arch.img_size {classifier.arch.img_size}")
        self.normalize = UInt8Normalize(preprocess)
        self.classifier = classifier
        self.with_features = with_features

    @property
    def feature_dim(self) -> int:
        return self.classifier.arch.feature_dim

    def forward(self, frames: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if self.with_features:
            return self.forward_with_features(frames)
        return torch.sigmoid(self.classifier(self.normalize(frames)).logits)

    def forward_with_features(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probabilities (B, L), L2-normalised image features (B, feature_dim)) from one backbone pass.

        The probabilities are computed exactly as `forward` computes them (same ops on the same feature);
        the feature is the projected CLS feature the heads read, normalised as CLIP compares features.
        """
        features = self.classifier.visual(self.normalize(frames))
        probabilities = torch.sigmoid(self.classifier.heads(features).logits)
        return probabilities, F.normalize(features, dim=-1)

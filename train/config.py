"""The training configuration: one typed tree (`TrainConfig`), loaded from one YAML file.

Defaults are the paper's recipe (SPEC §9); every number a run depends on lives here, so the resolved
config saved beside the checkpoints says exactly what was trained. Unknown keys are errors
(`vce_stream.config.from_dict`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vce_stream.config import from_dict, load_yaml
from vce_stream.postprocess.config import PostprocessConfig
from vce_stream.postprocess.tuning import threshold_grid
from vce_stream.sources.preprocess import PreprocessConfig
from vce_stream.errors import ConfigError
from vce_stream.labels import LABELS, validate_labels
from vce_stream.model.config import ArchConfig, arch_preset
from vce_stream.limits import MAX_BATCH, MAX_COUNT, MAX_SCORE_FRAMES, MAX_THREADS, check_maxima

MISSING_IMAGE_POLICIES = ("error", "skip")
TRAINABLE = ("all", "differential", "heads")
SELECT_METRICS = ("temporal_map50", "temporal_map95", "macro_ap", "macro_auc", "macro_f1")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DataConfig:
    """Reading a Galar-layout folder (SPEC §5) and splitting it.

    every_k: keep every k-th frame (by position in the CSV, sorted by `index`) for training; the paper
        uses 5 (neighbouring capsule frames are near duplicates).
    val_every_k: the same for validation frames; temporal mAP still uses every frame's ground truth
        (each prediction holds until the next sampled frame).
    val_fraction: share of videos (never frames) held out for validation; at least one video each way.
    val_videos: explicit validation video ids (overrides val_fraction when not empty).
    videos: restrict to these video ids (empty: every video with a CSV in Labels/).
    split_seed: seeds the video shuffle of the split.
    missing_image: a CSV row whose image file is absent: "error" (default) or "skip" (counted warning).
        An image without a CSV row is always skipped and counted; a label CSV without its frame folder
        is an error.
    labels: the labels to train, taken from the CSV columns of the same name (other columns ignored).
    column_aliases: CSV column name -> label, for CSVs that spell a label differently.
    num_workers: DataLoader worker processes decoding and augmenting frames.
    """

    every_k: int = 5
    val_every_k: int = 5
    val_fraction: float = 0.2
    val_videos: tuple[str, ...] = ()
    videos: tuple[str, ...] = ()
    split_seed: int = 42
    missing_image: str = "error"
    labels: tuple[str, ...] = LABELS
    column_aliases: dict[str, str] = field(default_factory=dict)
    num_workers: int = 2

    def __post_init__(self) -> None:
        check_maxima(self, "data.", {"every_k": MAX_COUNT, "val_every_k": MAX_COUNT, "num_workers": MAX_THREADS})
        if self.every_k < 1 or self.val_every_k < 1:
            raise ConfigError("data.every_k and data.val_every_k must be >= 1")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must lie in (0, 1), got {self.val_fraction}")
        if self.missing_image not in MISSING_IMAGE_POLICIES:
            raise ConfigError(f"data.missing_image must be one of {MISSING_IMAGE_POLICIES}, got {self.missing_image!r}")
        if self.num_workers < 0:
            raise ConfigError("data.num_workers must be >= 0")
        try:
            validate_labels(self.labels)
        except ValueError as exc:
            raise ConfigError(f"data.labels: {exc}") from None
        unknown = sorted(set(self.column_aliases.values()) - set(self.labels))
        if unknown:
            raise ConfigError(f"data.column_aliases maps to label(s) not trained: {unknown}")


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentations (SPEC §9), applied to the runtime's prepared uint8 frame.

    crop_scale: random resized crop area range (output size stays preprocess.size).
    brightness, contrast, saturation, hue: colour jitter strengths (torchvision ColorJitter).
    hflip, vflip: flip probabilities. rotation: maximum degrees either way.
    erasing: random erasing probability (one rectangle set to 0); erasing_scale: its area range, as a
        share of the frame.
    """

    enabled: bool = True
    crop_scale: tuple[float, float] = (0.7, 1.0)
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    hflip: float = 0.5
    vflip: float = 0.5
    rotation: float = 15.0
    erasing: float = 0.25
    erasing_scale: tuple[float, float] = (0.02, 0.2)

    def __post_init__(self) -> None:
        for name in ("crop_scale", "erasing_scale"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high <= 1.0:
                raise ConfigError(f"augment.{name} must satisfy 0 < low <= high <= 1, got {getattr(self, name)}")
        if not all(0.0 <= p <= 1.0 for p in (self.hflip, self.vflip, self.erasing)):
            raise ConfigError("augment.hflip, vflip and erasing are probabilities in [0, 1]")
        if not 0.0 <= self.hue <= 0.5:
            raise ConfigError(f"augment.hue must lie in [0, 0.5], got {self.hue}")


@dataclass(frozen=True)
class LossConfig:
    """Asymmetric loss + contrastive BCE (SPEC §9).

    gamma_pos, gamma_neg: focusing exponents; margin: probability shift of negatives; eps: log clamp.
    pos_weight_min, pos_weight_max: per-class positive weight negatives/positives (training frames) is
        clipped to this range (a class without positives gets pos_weight_max).
    contrastive_weight: factor of the BCE-with-logits term on the contrastive logits.
    label_smoothing: targets become y (1 - s) + s / 2.
    """

    gamma_pos: float = 1.0
    gamma_neg: float = 4.0
    margin: float = 0.05
    eps: float = 1e-8
    pos_weight_min: float = 1.0
    pos_weight_max: float = 100.0
    contrastive_weight: float = 0.4
    label_smoothing: float = 0.05

    def __post_init__(self) -> None:
        if min(self.gamma_pos, self.gamma_neg, self.margin, self.contrastive_weight) < 0:
            raise ConfigError("loss.gamma_pos, gamma_neg, margin and contrastive_weight must be >= 0")
        if not 0.0 < self.pos_weight_min <= self.pos_weight_max:
            raise ConfigError("loss.pos_weight_min must satisfy 0 < pos_weight_min <= pos_weight_max")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"loss.label_smoothing must lie in [0, 1), got {self.label_smoothing}")


@dataclass(frozen=True)
class MixupConfig:
    """Mixup: lam ~ Beta(alpha, alpha) per batch, applied with probability `prob` (alpha 0: off)."""

    alpha: float = 0.3
    prob: float = 1.0

    def __post_init__(self) -> None:
        if self.alpha < 0 or not 0.0 <= self.prob <= 1.0:
            raise ConfigError("mixup.alpha must be >= 0 and mixup.prob in [0, 1]")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with per-group learning rates under OneCycleLR (SPEC §9).

    lr_backbone: max LR of the pretrained trunk; lr_heads: max LR of the heads; lr_differential: max LR
        of the parameters the differential conversion added (None: lr_heads, they start untrained).
    trainable: "all", "differential" (differential parameters and heads only) or "heads" (frozen trunk).
    pct_start, div_factor, final_div_factor: OneCycleLR's warm-up share and start/end LR divisors.
    cycle_momentum: False keeps AdamW's betas fixed at `betas` (the paper's (0.9, 0.999)).
    grad_clip: maximum global gradient norm (0: no clipping, the norm is still checked for finiteness).
    """

    lr_backbone: float = 9e-5
    lr_heads: float = 3e-4
    lr_differential: float | None = None
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 5e-4
    trainable: str = "all"
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    cycle_momentum: bool = False
    grad_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.trainable not in TRAINABLE:
            raise ConfigError(f"optim.trainable must be one of {TRAINABLE}, got {self.trainable!r}")
        if min(self.lr_backbone, self.lr_heads) <= 0 or (self.lr_differential is not None and self.lr_differential <= 0):
            raise ConfigError("optim learning rates must be > 0")
        if not 0.0 < self.pct_start < 1.0:
            raise ConfigError(f"optim.pct_start must lie in (0, 1), got {self.pct_start}")
        if self.grad_clip < 0:
            raise ConfigError("optim.grad_clip must be >= 0")


@dataclass(frozen=True)
class EmaConfig:
    """Exponential moving average of the weights, used for validation and the bundle.

    warmup: use min(decay, (1 + n) / (10 + n)) at update n, so short runs are not dominated by the
        random initial weights (TensorFlow's ExponentialMovingAverage with num_updates).
    """

    decay: float = 0.999
    warmup: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.decay < 1.0:
            raise ConfigError(f"ema.decay must lie in [0, 1), got {self.decay}")


@dataclass(frozen=True)
class ThresholdSearchConfig:
    """Per-class thresholds chosen on the validation frames (F1-maximising, SPEC §9).

    low, high, step: the searched grid (the paper searches from 0.05 so rare classes get low thresholds).
    default: the threshold of a class without validation positives (nothing to choose it on).
    """

    low: float = 0.05
    high: float = 0.95
    step: float = 0.01
    default: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < self.low <= self.high < 1.0 or self.step <= 0:
            raise ConfigError("thresholds: need 0 < low <= high < 1 and step > 0")
        if not 0.0 <= self.default <= 1.0:
            raise ConfigError("thresholds.default must lie in [0, 1]")

    def grid(self) -> np.ndarray:
        """The searched thresholds: low, low + step, ... up to high."""
        return threshold_grid(self.low, self.high, self.step)


@dataclass(frozen=True)
class PresenceConfig:
    """The per-video presence rule (SPEC §3: presence decisions dominate temporal mAP).

    The runtime's presence gates (`postprocess.decoding.gating`): a label is written in a video only if
    its most convincing run reaches the label's gate. Gates are searched per label (coordinate ascent,
    `rounds` passes) on the validation temporal mAP@0.5, and stored in the bundle's post-processing
    only if they raise that score.
    """

    enabled: bool = True
    rounds: int = 2

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError("presence.rounds must be >= 1")


@dataclass(frozen=True)
class ModelConfig:
    """The network: an architecture preset name or ArchConfig fields, and optional pretrained weights.

    pretrained: a local open_clip model directory (BiomedCLIP's image tower); None: random weights.
    text_embeddings: a .safetensors file holding `text_embeddings` (labels x feature_dim) of the label
        prompts; None: computed from `pretrained` when given, else seeded random unit vectors.
    """

    arch: str | ArchConfig = "biomedclip"
    pretrained: str | None = None
    text_embeddings: str | None = None

    def resolved_arch(self, num_labels: int) -> ArchConfig:
        arch = arch_preset(self.arch) if isinstance(self.arch, str) else self.arch
        if arch.num_labels != num_labels:
            import dataclasses

            arch = dataclasses.replace(arch, num_labels=num_labels)
        return arch


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on.

    batch_size, epochs, seed: the paper's 128, 5, 42.
    samples_per_epoch: frames drawn (with replacement) per epoch; None: the number of training frames.
    device: "auto" (CUDA when present), "cpu" or "cuda". amp: mixed precision (bfloat16 autocast with a
        float32 master copy; only on CUDA).
    select_metric: validation metric that picks the best epoch.
    checkpoint_every_steps: also checkpoint inside an epoch every this many steps (0: epoch ends only).
    eval_batch_size: batch size of validation inference.
    threads: torch CPU threads of the training process (None: torch's default, one per core). Results
        are bit-for-bit reproducible for a fixed thread count; a resumed run should keep it.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    mixup: MixupConfig = field(default_factory=MixupConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    thresholds: ThresholdSearchConfig = field(default_factory=ThresholdSearchConfig)
    presence: PresenceConfig = field(default_factory=PresenceConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    batch_size: int = 128
    eval_batch_size: int = 256
    epochs: int = 5
    samples_per_epoch: int | None = None
    seed: int = 42
    device: str = "auto"
    amp: bool = True
    select_metric: str = "temporal_map50"
    checkpoint_every_steps: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        check_maxima(self, "", {"batch_size": MAX_BATCH, "eval_batch_size": MAX_BATCH, "epochs": MAX_COUNT, "samples_per_epoch": MAX_SCORE_FRAMES, "checkpoint_every_steps": MAX_COUNT, "threads": MAX_THREADS})
        if self.batch_size < 1 or self.eval_batch_size < 1 or self.epochs < 1:
            raise ConfigError("batch_size, eval_batch_size and epochs must be >= 1")
        if self.samples_per_epoch is not None and self.samples_per_epoch < 1:
            raise ConfigError("samples_per_epoch must be >= 1")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.select_metric not in SELECT_METRICS:
            raise ConfigError(f"select_metric must be one of {SELECT_METRICS}, got {self.select_metric!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("threads must be >= 1")
        if self.checkpoint_every_steps < 0:
            raise ConfigError("checkpoint_every_steps must be >= 0")
        arch = self.arch
        if arch.img_size != self.preprocess.size:
            raise ConfigError(f"preprocess.size {self.preprocess.size} differs from the model's img_size {arch.img_size}")

    @property
    def labels(self) -> tuple[str, ...]:
        return self.data.labels

    @property
    def arch(self) -> ArchConfig:
        return self.model.resolved_arch(len(self.data.labels))


def load_train_config(path: str | Path) -> TrainConfig:
    """Read a training YAML (safe_load); ConfigError naming the file for any bad key or value."""
    return from_dict(TrainConfig, load_yaml(path), where=str(path))


def config_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two `to_dict` trees (for `--resume` refusals)."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(config_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append(f"{prefix}{key}")
    return out

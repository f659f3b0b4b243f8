"""Settings of post-processing (frame probabilities -> events), as one frozen dataclass tree.

`PostprocessConfig` is what a bundle, a calibration file (`postprocess:` section) and the command line
carry: per-label thresholds, the SPEC §6 filter (`TemporalConfig`), how events are written, and the
metric-aware decoding (`DecodingConfig()` means "off": the paper's post-processing runs unchanged).
`with_command_line` applies `--thresholds/--order/--segmentation` last.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vce_stream.config import layered_settings
from vce_stream.errors import ConfigError
from vce_stream.limits import MAX_COUNT, MAX_FILL, MAX_GAP, MAX_LOOKAHEAD, MAX_MIN_LEN, MAX_WINDOW, check_maxima

PerLabel = float | tuple[float, ...]


def per_label(values: PerLabel, num_labels: int, name: str) -> tuple[float, ...]:
    """One number for every label, or exactly one per label, as a tuple of `num_labels` floats.

    The one broadcast of a per-label setting (thresholds, presence gates, evidence powers); `name`
    says which in the error ("3 thresholds given for 17 labels").
    """
    if isinstance(values, (int, float)):
        return (float(values),) * num_labels
    if len(values) != num_labels:
        raise ConfigError(f"{len(values)} {name} given for {num_labels} labels")
    return tuple(float(v) for v in values)


def _values(values: PerLabel) -> tuple[float, ...]:
    return (float(values),) if isinstance(values, (int, float)) else tuple(float(v) for v in values)


@dataclass(frozen=True)
class GatingConfig:
    """Per-class presence gates: a label is written in a video only if one of its runs is convincing.

    A run's evidence is `mean probability x length ** evidence_power` (0: confidence alone; 1: the
    probability mass). The label is present when some run's evidence reaches its gate; then all its runs
    are written (runs ranked after the true ones cost nothing under the scorer, SPEC §3), otherwise none.
    The rule is causal once a run passes: in a live stream, runs before the first passing one are
    provisional until the video ends.
    gates, evidence_power: one per label (model order) or one for all; a gate of 0 keeps every label
        that has a run.
    """

    enabled: bool = False
    gates: PerLabel = 0.0
    evidence_power: PerLabel = 0.0

    def __post_init__(self) -> None:
        if any(g < 0 for g in _values(self.gates)):
            raise ConfigError(f"decoding.gating.gates must be >= 0, got {self.gates}")
        if not all(0.0 <= p <= 2.0 for p in _values(self.evidence_power)):
            raise ConfigError(f"decoding.gating.evidence_power must lie in [0, 2], got {self.evidence_power}")


@dataclass(frozen=True)
class AnatomyConfig:
    """The five sections as one monotone left-to-right path (mouth -> ... -> colon), by Viterbi.

    Each frame is in exactly one section; a section may be skipped, never revisited. The emission of a
    section is the logit of its probability (the log-likelihood ratio of a sigmoid output); every change
    of section costs `switch_penalty` (log units). `lag` is the fixed lag, in frames, of the online form:
    a streamed frame's section is final `lag` frames later.
    """

    enabled: bool = False
    switch_penalty: float = 30.0
    lag: int = 1000
    eps: float = 1e-4  # probabilities are clipped to [eps, 1 - eps] before the logit

    def __post_init__(self) -> None:
        check_maxima(self, "decoding.anatomy.", {"lag": MAX_LOOKAHEAD})
        if self.switch_penalty < 0:
            raise ConfigError(f"decoding.anatomy.switch_penalty must be >= 0, got {self.switch_penalty}")
        if self.lag < 1:
            raise ConfigError(f"decoding.anatomy.lag must be >= 1, got {self.lag}")
        if not 0 < self.eps < 0.5:
            raise ConfigError(f"decoding.anatomy.eps must lie in (0, 0.5), got {self.eps}")


@dataclass(frozen=True)
class LandmarksConfig:
    """Landmarks are brief and sit at a section change: z-line at esophagus -> stomach, pylorus at
    stomach -> small intestine, ileocecal valve at small intestine -> colon.

    With anatomy decoding on, a landmark run is kept only within `radius` frames of its decoded
    transition (and not at all if the path never makes that transition); then at most `max_events` runs
    per landmark, the most confident first.
    """

    enabled: bool = False
    max_events: int = 2
    radius: int = 500

    def __post_init__(self) -> None:
        check_maxima(self, "decoding.landmarks.", {"max_events": MAX_COUNT, "radius": MAX_LOOKAHEAD})
        if self.max_events < 1:
            raise ConfigError(f"decoding.landmarks.max_events must be >= 1, got {self.max_events}")
        if self.radius < 0:
            raise ConfigError(f"decoding.landmarks.radius must be >= 0, got {self.radius}")


@dataclass(frozen=True)
class RankingConfig:
    """How decided runs become ranked single-label events.

    tuple_cuts: cut each label's runs wherever the set of decided labels changes (the ground truth's
        tuple segmentation), so a perfect prediction scores exactly like tuple events.
    length_power: an event's confidence is `mean probability over the event x length ** length_power`;
        the file lists each label's events by descending confidence (the scorer's ranking).
    """

    tuple_cuts: bool = True
    length_power: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.length_power <= 2.0:
            raise ConfigError(f"decoding.ranking.length_power must lie in [0, 2], got {self.length_power}")


@dataclass(frozen=True)
class DecodingConfig:
    """Metric-aware decoding. `enabled: false` (the default) is exactly the paper's post-processing.

    When enabled, frame probabilities go through the paper's per-class filter (thresholds, median, gap,
    minimum length), then anatomy, landmarks and gating as configured, then ranking; the result is
    single-label events, to be written with `segmentation: label` and `order: confidence`.
    """

    enabled: bool = False
    gating: GatingConfig = field(default_factory=GatingConfig)
    anatomy: AnatomyConfig = field(default_factory=AnatomyConfig)
    landmarks: LandmarksConfig = field(default_factory=LandmarksConfig)
    ranking: RankingConfig = field(default_factory=RankingConfig)


@dataclass(frozen=True)
class TemporalConfig:
    """Per-class temporal post-processing (SPEC §6; defaults from the paper).

    window: median-filter window in frames (odd; majority vote with edge replication).
    gap: runs separated by at most this many zero frames are merged.
    min_len: runs shorter than this many frames are dropped.
    max_fill: missing-frame policy. A hole of at most `max_fill` absent frame indices is filled with the
        last probabilities seen (counted as filled frames); a longer hole ends every open event, and the
        frames after it start afresh (counted as a break). Indices are never shifted to close a hole.
    """

    window: int = 7
    gap: int = 5
    min_len: int = 3
    max_fill: int = 2

    def __post_init__(self) -> None:
        check_maxima(self, "temporal.", {"window": MAX_WINDOW, "gap": MAX_GAP, "min_len": MAX_MIN_LEN, "max_fill": MAX_FILL})
        if self.window < 1 or self.window % 2 == 0:
            raise ConfigError(f"temporal.window must be an odd number >= 1, got {self.window}")
        if self.gap < 0:
            raise ConfigError(f"temporal.gap must be >= 0, got {self.gap}")
        if self.min_len < 1:
            raise ConfigError(f"temporal.min_len must be >= 1, got {self.min_len}")
        if self.max_fill < 0:
            raise ConfigError(f"temporal.max_fill must be >= 0, got {self.max_fill}")

    @property
    def lag(self) -> int:
        """Worst-case frames between an event's last frame and the push that emits it."""
        return self.window // 2 + self.gap + 1


SEGMENTATIONS = ("tuple", "label")
ORDERS = ("confidence", "time")


@dataclass(frozen=True)
class PostprocessConfig:
    """How frame probabilities become the event JSON.

    thresholds: one per label (model order), or a single number for all; p >= t is positive.
    segmentation: "tuple" (ground-truth style, a new event whenever the set of labels changes) or
        "label" (one event per label run).
    order: "confidence" (best for the scorer: file order is the ranking) or "time".
    decoding: metric-aware decoding (`postprocess.decode`); off by default. When on, it produces
        single-label events that keep tuple boundaries, so it needs segmentation "label".
    """

    thresholds: float | tuple[float, ...] = 0.5
    temporal: TemporalConfig = field(default_factory=TemporalConfig)
    segmentation: str = "tuple"
    order: str = "confidence"
    decoding: DecodingConfig = field(default_factory=DecodingConfig)

    def __post_init__(self) -> None:
        if self.segmentation not in SEGMENTATIONS:
            raise ConfigError(f"segmentation must be one of {SEGMENTATIONS}, got {self.segmentation!r}")
        if self.order not in ORDERS:
            raise ConfigError(f"order must be one of {ORDERS}, got {self.order!r}")
        if self.decoding.enabled and self.segmentation != "label":
            raise ConfigError("decoding.enabled needs segmentation: label (decoded events already keep tuple boundaries)")
        if not all(0.0 <= t <= 1.0 for t in _values(self.thresholds)):
            raise ConfigError(f"thresholds must lie in [0, 1], got {self.thresholds}")

    def thresholds_for(self, num_labels: int) -> tuple[float, ...]:
        """The per-label thresholds as a tuple of `num_labels` floats."""
        return per_label(self.thresholds, num_labels, "thresholds")


def override_thresholds(base: Sequence[float], spec: str, labels: Sequence[str]) -> tuple[float, ...]:
    """Apply a command-line thresholds override to `base` (one per label).

    `spec` is one number for every label ("0.4"), one number per label ("0.3,0.5,..."), or
    label=value pairs for some labels ("polyp=0.2,ulcer=0.15").
    """
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    out = list(base)
    try:
        if all("=" in p for p in parts):
            index = {label: i for i, label in enumerate(labels)}
            for part in parts:
                name, value = (x.strip() for x in part.split("=", 1))
                if name not in index:
                    raise ConfigError(f"thresholds: unknown label {name!r}")
                out[index[name]] = float(value)
        elif len(parts) == 1:
            out = [float(parts[0])] * len(labels)
        elif len(parts) == len(labels):
            out = [float(p) for p in parts]
        else:
            raise ConfigError(f"thresholds: give 1 or {len(labels)} numbers, or label=value pairs; got {spec!r}")
    except ValueError:
        raise ConfigError(f"thresholds: not a number in {spec!r}") from None
    if not all(0.0 <= t <= 1.0 for t in out):
        raise ConfigError(f"thresholds must lie in [0, 1]: {spec!r}")
    return tuple(out)


def with_command_line(
    config: PostprocessConfig,
    labels: Sequence[str],
    *,
    thresholds: str | None = None,
    order: str | None = None,
    segmentation: str | None = None,
) -> PostprocessConfig:
    """`config` with the command-line options (`--thresholds`, `--order`, `--segmentation`) applied last."""
    changes: dict[str, Any] = {}
    if thresholds:
        changes["thresholds"] = override_thresholds(config.thresholds_for(len(labels)), thresholds, labels)
    if order:
        changes["order"] = order
    if segmentation:
        changes["segmentation"] = segmentation
    try:
        result = dataclasses.replace(config, **changes)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    result.thresholds_for(len(labels))  # the label count must fit
    return result


def postprocess_settings(
    base: PostprocessConfig,
    config_path: str | None,
    labels: tuple[str, ...],
    *,
    thresholds: str | None = None,
    order: str | None = None,
    segmentation: str | None = None,
) -> PostprocessConfig:
    """The bundle's post-processing, then the `--config` file's `postprocess:` section, then the
    command-line options (`run`, `batch`, `postprocess` and `calibrate` all call this)."""
    return layered_settings(
        base, "postprocess", config_path,
        lambda config: with_command_line(config, labels, thresholds=thresholds, order=order, segmentation=segmentation),
    )  # fmt: skip

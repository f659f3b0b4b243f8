"""Settings of the metric-aware decoding (issue 8), as one frozen dataclass tree.

`DecodingConfig()` means "off": the paper's post-processing runs unchanged. It lives under
`PostprocessConfig.decoding` (YAML key `postprocess.decoding`), so a bundle, a calibration file and the
command line all carry it the same way. This module imports nothing from `vce_stream.config` at import
time (that module imports this one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vce_stream.errors import ConfigError
from vce_stream.limits import MAX_COUNT, MAX_LOOKAHEAD, check_maxima

PerLabel = float | tuple[float, ...]


def per_label(values: PerLabel, num_labels: int, name: str) -> tuple[float, ...]:
    """One number for every label, or exactly one per label, as a tuple of `num_labels` floats."""
    if isinstance(values, (int, float)):
        return (float(values),) * num_labels
    if len(values) != num_labels:
        raise ConfigError(f"decoding: {name} has {len(values)} values for {num_labels} labels")
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

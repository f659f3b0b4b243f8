"""Typed configuration: dataclasses loaded from YAML (`yaml.safe_load` only).

Every tunable number lives in a dataclass here or in the module that owns the stage, with its default
and its reason. `from_dict` builds any of these dataclasses from plain data and rejects unknown keys,
so a typo in a YAML file is an error, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any, TypeVar

import yaml

from vce_stream.decoding.config import DecodingConfig
from vce_stream.errors import ConfigError
from vce_stream.limits import MAX_FILL, MAX_FRAME_INDEX, MAX_GAP, MAX_IMAGE_SIDE, MAX_MIN_LEN, MAX_WINDOW, check_maxima

# Any whole number in a configuration file: frame offsets, sizes, seeds (an int64 holds 9.2e18).
MAX_SETTING_INT = MAX_FRAME_INDEX

T = TypeVar("T")


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
    decoding: metric-aware decoding (vce_stream.decoding); off by default. When on, it produces
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
        values = (self.thresholds,) if isinstance(self.thresholds, (int, float)) else self.thresholds
        if not all(0.0 <= float(t) <= 1.0 for t in values):
            raise ConfigError(f"thresholds must lie in [0, 1], got {self.thresholds}")

    def thresholds_for(self, num_labels: int) -> tuple[float, ...]:
        """The per-label thresholds as a tuple of `num_labels` floats."""
        if isinstance(self.thresholds, (int, float)):
            return (float(self.thresholds),) * num_labels
        if len(self.thresholds) != num_labels:
            raise ConfigError(f"{len(self.thresholds)} thresholds given for {num_labels} labels")
        return tuple(float(t) for t in self.thresholds)


@dataclass(frozen=True)
class PreprocessConfig:
    """How a decoded frame becomes model input (SPEC §7): short side to `size` with `interpolation`,
    centre crop `size` x `size`, uint8 RGB; then (x / 255 - mean) / std inside the model or engine."""

    size: int = 224
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    def __post_init__(self) -> None:
        check_maxima(self, "preprocess.", {"size": MAX_IMAGE_SIDE})
        if self.size < 8:
            raise ConfigError(f"preprocess.size must be >= 8, got {self.size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError("preprocess.mean and preprocess.std need three values each, std > 0")


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


def merge_nested(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override` laid over it, mappings merged key by key (a YAML section overrides only
    the keys it names)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_nested(merged[key], value)
        else:
            merged[key] = value
    return merged


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass `cls` from YAML data; unknown keys and wrong types raise ConfigError naming `where`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for {cls.__name__}; known: {sorted(known)}")
    kwargs = {name: _convert(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError, ConfigError) as exc:  # the dataclass's own checks: say where
        raise ConfigError(f"{where}: {exc}") from exc


def to_dict(obj: Any) -> Any:
    """Plain data (dicts, lists, scalars) for YAML from a dataclass tree."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file with `safe_load`; a missing or malformed file is a ConfigError naming it."""
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a YAML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply to be a configuration") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in args:
            try:
                return _convert(option, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} does not fit {tp}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        items = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected nothing, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, int) and abs(value) > MAX_SETTING_INT:
                raise ConfigError(f"{where}: {value} is beyond any sensible setting")
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_SETTING_INT:  # beyond any size or index; would overflow numpy and C
                raise ConfigError(f"{where}: {value} is beyond any sensible setting (at most {MAX_SETTING_INT:,})")
            return value
        raise ConfigError(f"{where}: expected a whole number, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: cannot read {value!r} as {tp}")

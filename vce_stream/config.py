"""Configuration: the YAML <-> dataclass codec and the one layering of settings.

Every tunable number lives in a frozen dataclass beside the stage that uses it (`PipelineConfig` in
`pipeline/run.py`, `SourceConfig` in `sources/base.py`, `PreprocessConfig` in `sources/preprocess.py`,
`PostprocessConfig` in `postprocess/config.py`, ...), with its default and its reason. This module only
converts: `from_dict` builds any of those dataclasses from plain data and rejects unknown keys (a typo in
a YAML file is an error, not a silently ignored setting), `to_dict` goes back, `load_yaml` reads with
`yaml.safe_load` only.

Layering (`layered_settings`): a stage's settings are its base (the model bundle's, or the defaults),
then the stage's section of the `--config` file, merged key by key, then the command-line options.
Every command that takes `--config` (`run`, `batch`, `postprocess`, `calibrate`) reads the same shape:
a mapping whose keys are stage sections (`pipeline:`, `postprocess:`), each optional.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

from vce_stream.errors import ConfigError
from vce_stream.limits import MAX_FRAME_INDEX

# Any whole number in a configuration file: frame offsets, sizes, seeds (an int64 holds 9.2e18).
MAX_SETTING_INT = MAX_FRAME_INDEX

T = TypeVar("T")

# The sections a `--config` file may hold, each a stage's settings.
CONFIG_SECTIONS = ("pipeline", "postprocess")


def read_config_sections(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """The sections of a `--config` file (None: no file, no sections); anything else is a ConfigError."""
    if path is None:
        return {}
    data = load_yaml(path) or {}
    if not isinstance(data, dict) or set(data) - set(CONFIG_SECTIONS):
        raise ConfigError(f"{path}: expected a mapping with {' and/or '.join(repr(s) for s in CONFIG_SECTIONS)} sections")
    sections = {}
    for name, value in data.items():
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{path}: {name}: expected a mapping, got {type(value).__name__}")
        sections[name] = dict(value or {})
    return sections


def layered_settings(
    base: T, section: str, config_path: str | Path | None, command_line: Callable[[T], T] | None = None
) -> T:
    """`base`, then the `section` of the `--config` file (merged key by key), then `command_line`.

    The one order every command applies: bundle (or defaults) -> `--config` -> command-line options.
    """
    overrides = read_config_sections(config_path).get(section)
    settings = base
    if overrides:
        settings = from_dict(type(base), merge_nested(to_dict(base), overrides), where=f"{config_path}: {section}")
    return command_line(settings) if command_line is not None else settings


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

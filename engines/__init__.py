"""Engine builders: compile a model bundle for the machine at hand (`vce-stream build-engine`).

Only building lives here; everything the runtime needs to choose and open an engine (manifest, cache,
device facts, batch profiles, the backend table) is in `vce_stream.engine`. Each backend of that table
has one builder module here (`*_builder.py`) that registers a `Builder` under the backend's name, so a
new backend is one runtime module (`vce_stream/engine/backends/`) plus one builder module here. `build`
holds the flow every backend shares (build, verify, measure agreement, write the manifest, move into
place) and `cli` the commands.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from vce_stream.engine.profile import BatchProfile
from vce_stream.errors import ConfigError


@dataclass(frozen=True)
class BuildContext:
    """What a builder may need beyond the model: the device it builds for and the backend's timing
    cache file (TensorRT keeps kernel timings there between builds)."""

    device: torch.device
    timing_cache: Path


@dataclass(frozen=True)
class Builder:
    """How one backend's engine file is made and checked.

    build(model, workdir, precision, profile, image_size, context) writes the engine file into
    `workdir` and returns its file name (None when the backend needs no file).
    verify(path, precision, image_size) lists the ways the built file misses what was asked (empty: none).
    report(workdir) is what the build recorded about the engine's precision (the manifest's
    `precision_report`; empty where the backend has nothing to report).
    """

    backend: str
    build: Callable[[torch.nn.Module, Path, str, BatchProfile, int, BuildContext], str | None]
    verify: Callable[[Path, str, int], list[str]]
    report: Callable[[Path], dict] = lambda workdir: {}


_BUILDERS: dict[str, Builder] = {}


def register_builder(builder: Builder) -> Builder:
    if builder.backend in _BUILDERS:
        raise ValueError(f"engine builder {builder.backend!r} registered twice")
    _BUILDERS[builder.backend] = builder
    return builder


def get_builder(backend: str) -> Builder:
    """The builder of `backend`; one the table knows but nothing here builds is a ConfigError."""
    _load_builders()
    try:
        return _BUILDERS[backend]
    except KeyError:
        raise ConfigError(f"no engine builder for backend {backend!r}; buildable: {', '.join(sorted(_BUILDERS))}") from None


def _load_builders() -> None:
    for module in pkgutil.iter_modules(__path__):
        if module.name.endswith("_builder"):
            importlib.import_module(f"{__name__}.{module.name}")

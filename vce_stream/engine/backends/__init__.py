"""The backend table: every engine backend the runtime can open, one module each.

Like timm's model registry: a backend module calls `register_backend(Backend(...))` at import, and this
package imports every module beside it, so adding a backend is one new file here (plus its builder in
`engines/`, registered against the same name). Each entry declares what the rest of the runtime asks of
a backend: its name, the precisions it is built in, which cached engines `--backend auto` may take and
in which order, the device it runs on, the library versions an engine of it depends on, and how to open
one. Heavy libraries (onnxruntime, torch_tensorrt) are imported inside the functions that need them.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from vce_stream.errors import ConfigError

if TYPE_CHECKING:
    from vce_stream.engine.base import FrameScorer


@dataclass(frozen=True)
class Backend:
    """One engine backend.

    name: the `--backend` value and the manifest's `backend`.
    precisions: what `build-engine` can build, the first being the default.
    auto_precisions: cached engines `--backend auto` may take, best first; () never takes one.
    auto_rank: the order `--backend auto` tries backends in (lower first).
    run_device: the device an engine of this backend runs on, given the run's device (raises VceError
        when it cannot run there, naming what to install or use instead).
    available: whether `--backend auto` may try it on the run's device (library installed, right device).
    versions: the libraries an engine of it depends on, recorded in manifests and compared on use.
    open(engine_dir, manifest, bundle, device, threads, precision): the scorer of an engine directory
        (`engine_dir` and `manifest` are None for the torch backend without one; `precision` is then the
        run's, otherwise the manifest's).
    """

    name: str
    precisions: tuple[str, ...]
    auto_precisions: tuple[str, ...]
    auto_rank: int
    run_device: Callable[[torch.device], torch.device]
    available: Callable[[torch.device], bool]
    versions: Callable[[], dict[str, str]]
    open: Callable[..., "FrameScorer"]

    @property
    def default_precision(self) -> str:
        return self.precisions[0]


_TABLE: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Add `backend` to the table (at import of its module). A name registered twice is a bug."""
    if backend.name in _TABLE:
        raise ValueError(f"engine backend {backend.name!r} registered twice")
    _TABLE[backend.name] = backend
    return backend


def _load_backends() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def backend_names() -> tuple[str, ...]:
    """Every registered backend, in `--backend auto` order."""
    return tuple(sorted(_TABLE, key=lambda name: (_TABLE[name].auto_rank, name)))


def get_backend(name: str) -> Backend:
    """The backend called `name`; an unknown one is a ConfigError listing the known ones."""
    try:
        return _TABLE[name]
    except KeyError:
        raise ConfigError(f"unknown engine backend {name!r}; known: {', '.join(backend_names())}") from None


def library_versions(name: str) -> dict[str, str]:
    """Versions of the libraries an engine of backend `name` depends on (torch always among them)."""
    return {"torch": torch.__version__, **get_backend(name).versions()}


_load_backends()

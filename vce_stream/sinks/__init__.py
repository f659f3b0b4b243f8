"""Sinks: where one exam's results go. Every output of `run` is a sink.

The protocol is small on purpose (Holoscan-style operators: each declares what it takes and does its
work in one method):

- `open(exam)`: the exam starts (its video id and labels are known); nothing is written yet.
- `scored(batch)`: every scored batch (frame indices, prepared frames, probabilities), for sinks that
  keep frames or probabilities (saved scores, thumbnails, embeddings). Most sinks ignore it.
- `emit(video_id, events, **extra)`: events the moment the post-processing closes them (live output).
- `close(result)`: the exam is over (complete or not); the whole-video events, the kept
  probabilities and the outcome are in `result`. File sinks write here, atomically.
- `abort()`: the exam could not start after all (nothing was scored): drop anything half made.

A sink that needs each frame's image feature sets `wants_features`; the pipeline then scores with
`score_with_features` (one forward pass gives both) and fills `ScoredBatch.features`.

`Sink` gives every method a no-op default, so a sink implements only what it uses. File sinks also
offer `targets()`, the paths they will write, so the pipeline can refuse outputs that would overwrite
the input or each other, and check that they are writable, before any frame is scored.

The registry (like timm's `register_model` / `create_model`) maps a name to a factory, so adding an
output format is one module here that calls `register_sink`; `create_sink(name, **options)` builds one.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vce_stream.errors import ConfigError
from vce_stream.events.event import Event
from vce_stream.events.outcome import ExamOutcome


@dataclass(frozen=True)
class ExamStart:
    """What a sink learns when the exam starts."""

    video_id: str
    labels: tuple[str, ...]
    input: str = ""
    expected_frames: int | None = None
    fps: float | None = None  # frames per second where frame indices come from timestamps, else None
    frame_offset: int = 0


@dataclass(frozen=True)
class ScoredBatch:
    """One scored batch: frame indices (B,), prepared uint8 frames (B, S, S, 3), probabilities (B, L),
    and the L2-normalised image features (B, D) when the run asked for them (else None)."""

    frame_indices: np.ndarray
    frames: Any
    probs: np.ndarray
    features: np.ndarray | None = None


@dataclass(frozen=True)
class ExamEnd:
    """The end of an exam: the events of the final file, the scored range and probabilities, the outcome.

    events: the whole-video decision (what the event JSON holds). frame_indices/probs: every scored
    frame's probabilities, in frame order. outcome: counts, timing, and whether the exam is incomplete.
    """

    events: list[Event]
    frame_indices: np.ndarray
    probs: np.ndarray
    outcome: ExamOutcome


class Sink:
    """Base class of sinks: every method a no-op, `targets()` empty. `what` names the output in messages."""

    what: str = "output"
    wants_features: bool = False

    def targets(self) -> Sequence[Path]:
        """Files this sink will write (checked before scoring starts)."""
        return ()

    def open(self, exam: ExamStart) -> None:
        pass

    def scored(self, batch: ScoredBatch) -> None:
        pass

    def emit(self, video_id: str, events: Sequence[Event], **extra: object) -> None:
        pass

    def close(self, result: ExamEnd) -> None:
        pass

    def abort(self) -> None:
        pass


_REGISTRY: dict[str, Callable[..., Sink]] = {}


def register_sink(name: str) -> Callable[[Callable[..., Sink]], Callable[..., Sink]]:
    """Decorator: register a sink factory (usually the class) under `name`."""

    def register(factory: Callable[..., Sink]) -> Callable[..., Sink]:
        if name in _REGISTRY:
            raise ValueError(f"sink {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return register


def sink_names() -> tuple[str, ...]:
    _load_sinks()
    return tuple(sorted(_REGISTRY))


def create_sink(name: str, **options: Any) -> Sink:
    """The sink registered as `name`, built with `options`."""
    _load_sinks()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown output {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None
    return factory(**options)


def _load_sinks() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")

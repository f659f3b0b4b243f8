"""Batch profiles: the batch sizes an engine was built for, and how any batch is fitted into them.

An engine is built for a (min, opt, max) batch profile (TensorRT optimisation profiles need one; the
other backends carry one so that every engine behaves the same). Batches outside the profile (the last
partial batch of an exam, a live stream's timeout flush) are split into chunks of at most `max` and a
chunk smaller than `min` is padded by repeating its last frame, so the caller never sees an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from vce_stream.errors import ConfigError
from vce_stream.limits import MAX_BATCH, check_maxima


@dataclass(frozen=True)
class BatchProfile:
    """Smallest, most frequent and largest batch an engine runs (1 <= min <= opt <= max)."""

    min: int = 1
    opt: int = 16
    max: int = 32

    def __post_init__(self) -> None:
        check_maxima(self, "batch profile ", {"min": MAX_BATCH, "opt": MAX_BATCH, "max": MAX_BATCH})
        if not 1 <= self.min <= self.opt <= self.max:
            raise ConfigError(f"batch profile needs 1 <= min <= opt <= max, got {self.text}")

    @property
    def text(self) -> str:
        """The profile as the `--batch MIN,OPT,MAX` option spells it."""
        return f"{self.min},{self.opt},{self.max}"

    def contains(self, batch_size: int) -> bool:
        return self.min <= batch_size <= self.max


def parse_profile(text: str) -> BatchProfile:
    """`"1,16,32"` -> BatchProfile(1, 16, 32); a single number `"16"` means a fixed batch 16,16,16."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--batch expects MIN,OPT,MAX whole numbers, got {text!r}") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise ConfigError(f"--batch expects MIN,OPT,MAX (three numbers), got {text!r}")
    return BatchProfile(*values)


def plan_chunks(batch_size: int, profile: BatchProfile) -> list[tuple[int, int, int]]:
    """Chunks `(start, stop, run_size)` covering frames [0, batch_size): stop - start <= profile.max,
    run_size = max(stop - start, profile.min) is the batch the engine actually runs (padded)."""
    if batch_size < 0:
        raise ValueError(f"batch size must be >= 0, got {batch_size}")
    chunks = []
    for start in range(0, batch_size, profile.max):
        stop = min(start + profile.max, batch_size)
        chunks.append((start, stop, max(stop - start, profile.min)))
    return chunks


def pad_to(frames: torch.Tensor, size: int) -> torch.Tensor:
    """`frames` (n, ...) grown to `size` rows by repeating the last row (a real frame, so no engine
    sees an all-zero image it might handle differently)."""
    missing = size - frames.shape[0]
    if missing <= 0:
        return frames
    return torch.cat([frames, frames[-1:].expand(missing, *frames.shape[1:])], dim=0)


def run_in_profile(
    frames: torch.Tensor, profile: BatchProfile, run: Callable[[torch.Tensor], np.ndarray]
) -> np.ndarray:
    """Apply `run` (a batch the profile accepts -> (batch, L) array) to any number of frames.

    Returns exactly one row per input frame, in order; padded rows are dropped.
    """
    if frames.shape[0] == 0:
        raise ValueError("no frames to score")
    outputs = []
    for start, stop, run_size in plan_chunks(frames.shape[0], profile):
        result = np.asarray(run(pad_to(frames[start:stop], run_size)))
        outputs.append(result[: stop - start])
    return outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=0)

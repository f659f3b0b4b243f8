"""The one rule every probability obeys: a finite number in [0, 1].

A NaN compared with a threshold is False, so a broken model or a damaged scores file would read as
"nothing found" and score as a confident empty exam. Every probability that enters post-processing,
from a scorer batch or a scores file, passes `check_probabilities` first. Pure numpy: no torch import.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vce_stream.errors import EXIT_BAD_INPUT, InputError


class ProbabilityError(InputError):
    """Probabilities that are not finite numbers in [0, 1] (NaN, +-inf, below 0 or above 1)."""


def first_bad_row(probs: np.ndarray) -> int | None:
    """Index of the first row holding a value that is not a finite number in [0, 1]; None if all are."""
    values = np.asarray(probs)
    if values.size == 0:
        return None
    # NaN fails both comparisons, so `~(ok)` catches it; +-inf fails the range.
    bad = ~((values >= 0.0) & (values <= 1.0))
    if values.ndim > 1:
        bad = bad.reshape(values.shape[0], -1).any(axis=1)
    rows = np.flatnonzero(bad)
    return int(rows[0]) if rows.size else None


def check_probabilities(
    probs: np.ndarray,
    frame_indices: np.ndarray | Sequence[int],
    where: str,
    *,
    labels: Sequence[str] | None = None,
    exit_code: int = EXIT_BAD_INPUT,
) -> None:
    """Raise ProbabilityError naming `where`, the first bad frame and its bad value, unless every
    value of `probs` (frames, labels) is a finite number in [0, 1].

    frame_indices: the frame index of each row (what the message names). labels: column names for
    the message (default: the column number). exit_code: 2 for a file refused before any work (the
    default), 3 for a scorer batch part way through an exam.
    """
    values = np.asarray(probs)
    row = first_bad_row(values)
    if row is None:
        return
    frames = np.asarray(frame_indices).reshape(-1)
    frame = frames[row] if row < frames.size else row
    line = values.reshape(values.shape[0], -1)[row] if values.ndim > 1 else values[row : row + 1]
    column = int(np.flatnonzero(~((line >= 0.0) & (line <= 1.0)))[0])
    name = labels[column] if labels is not None and column < len(labels) else f"column {column}"
    raise ProbabilityError(
        f"{where}: frame {int(frame)}: probability of {name} is {float(line[column])!r}; "
        "probabilities must be finite numbers in [0, 1]",
        exit_code=exit_code,
    )

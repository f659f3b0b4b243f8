"""Decided runs -> ranked single-label events that keep tuple boundaries.

The ground truth cuts a label's stretch wherever the set of active labels changes (tuple segmentation,
SPEC §2), so a long small-intestine stretch is many ground-truth segments. Cutting each label's runs at
every change of the decided label set reproduces those boundaries: for a perfect prediction the cut
single-label events score exactly like tuple events, and unlike tuple events each label's events can be
ranked by that label's own confidence.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vce_stream.postprocess.runs import Runs


def change_points(all_runs: Sequence[Runs]) -> np.ndarray:
    """Sorted rows r where the decided label set differs from row r - 1 (any run starts or ends there)."""
    points = [a for starts, ends in all_runs for a in (starts, ends + 1)]
    if not points:
        return np.zeros(0, np.int64)
    return np.unique(np.concatenate(points)).astype(np.int64)


def cut_runs(runs: Runs, cuts: np.ndarray) -> Runs:
    """Split each run [s, e] at every cut c with s < c <= e; pieces in time order."""
    starts, ends = runs
    if starts.size == 0 or cuts.size == 0:
        return starts, ends
    owner = np.searchsorted(starts, cuts, side="right") - 1
    inside = (owner >= 0) & (cuts > starts[np.maximum(owner, 0)]) & (cuts <= ends[np.maximum(owner, 0)])
    piece_starts = np.sort(np.concatenate([starts, cuts[inside]]))
    piece_owner = np.searchsorted(starts, piece_starts, side="right") - 1
    next_start = np.append(piece_starts[1:], -1)
    same_run = np.append(piece_owner[1:] == piece_owner[:-1], False)
    piece_ends = np.where(same_run, next_start - 1, ends[piece_owner])
    return piece_starts.astype(np.int64), piece_ends.astype(np.int64)

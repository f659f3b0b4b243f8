"""Landmarks are brief and mark section changes: keep few runs, near their change, best first.

Each landmark belongs to the boundary into a section (a label set's `landmark_sections`; for the
default RARE-VISION set `LANDMARK_SECTIONS`): z-line into the stomach, pylorus into the small
intestine, ileocecal valve into the colon. Its reference row on a decoded anatomy
path is the first row at or past that section (row 0 if the video starts past it; none if the path
never gets there, and then the landmark is not written).
"""

from __future__ import annotations

import numpy as np

from vce_stream.labels import RARE_VISION
from vce_stream.postprocess.runs import Runs, empty_runs

LANDMARK_SECTIONS = RARE_VISION.landmark_sections


def boundary_row(path: np.ndarray, section: int) -> int | None:
    """First row of a monotone path at or past `section`, or None if it never gets there."""
    rows = np.flatnonzero(path >= section)
    return int(rows[0]) if rows.size else None


def select_landmark_runs(runs: Runs, confidence: np.ndarray, boundary: int | None, radius: int | None, max_events: int) -> Runs:
    """At most `max_events` runs within `radius` rows of `boundary` (distance 0 when a run covers it),
    the most confident ones, returned in time order. `radius=None` skips the proximity rule (no path);
    `boundary=None` with a radius means the path never reaches the section: no run is kept."""
    starts, ends = runs
    keep = np.ones(starts.size, dtype=bool)
    if radius is not None:
        if boundary is None:
            return empty_runs()
        distance = np.maximum(0, np.maximum(starts - boundary, boundary - ends))
        keep = distance <= radius
    candidates = np.flatnonzero(keep)
    order = candidates[np.argsort(-confidence[candidates], kind="stable")][:max_events]
    order.sort()
    return starts[order], ends[order]

"""Shared fixtures: paths to the ground truth shipped in tests/data."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def official_gt_path() -> Path:
    """The published RARE-VISION ground truth of the 80 Galar videos (SPEC §2)."""
    return DATA / "official_sample.json"


@pytest.fixture(scope="session")
def official_gt(official_gt_path):
    from vce_stream.events.jsonio import read_submission

    return read_submission(official_gt_path)

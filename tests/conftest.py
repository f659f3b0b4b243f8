"""Shared fixtures: paths to the ground truth shipped in tests/data."""

from __future__ import annotations

import os
import tempfile
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


@pytest.fixture(scope="session", autouse=True)
def private_engine_cache():
    """Keep the user's engine cache out of the tests: `--backend auto` (the default) would otherwise pick
    an engine a user built for the same bundle, and tests comparing two runs would compare two engines.
    Set in the environment so subprocesses and batch workers see it too."""
    previous = os.environ.get("VCE_STREAM_ENGINE_CACHE")
    with tempfile.TemporaryDirectory(prefix="vce-test-engines-") as root:
        os.environ["VCE_STREAM_ENGINE_CACHE"] = root
        yield Path(root)
    if previous is None:
        os.environ.pop("VCE_STREAM_ENGINE_CACHE", None)
    else:
        os.environ["VCE_STREAM_ENGINE_CACHE"] = previous

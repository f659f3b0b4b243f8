"""A scored synthetic exam (video, event JSON, scores file) for the report's example, benchmark and tests.

The exam comes from `vce_stream.synthetic` and is scored by its `PaletteScorer`, a real frame scorer
that reads the synthetic marker colours, through the real pipeline (`run_exam`): the events are the
exam's ground truth, so the page shows meaningful findings without a trained model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ScoredExam:
    video: Path
    events: Path
    scores: Path
    ground_truth: Path


def scored_synthetic_exam(
    folder: str | os.PathLike[str], *, frames: int = 600, size: int = 160, seed: int = 3, lesion_rate: float = 8.0, name: str = "exam"
) -> ScoredExam:
    """Write `<name>.mkv`, its ground truth, and the events and scores `run` gives for it, into `folder`."""
    from vce_stream.pipeline.run import RunOptions, run_exam
    from vce_stream.synthetic import PaletteScorer, SyntheticConfig, make_exam

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    video, gt = root / f"{name}.mkv", root / f"{name}.gt.json"
    events, scores = root / f"{name}.events.json", root / f"{name}.scores.npz"
    make_exam(video, SyntheticConfig(frames=frames, width=size, height=size, seed=seed, lesion_rate=lesion_rate), gt_path=gt)
    run_exam(video, PaletteScorer(), events, RunOptions(save_scores=str(scores)))
    return ScoredExam(video, events, scores, gt)

"""The composition: frame probabilities of one whole video -> the final file's single-label events.

Stages, each optional (`DecodingConfig`), in this order:
1. the paper's per-class filter (thresholds, median, gap, minimum length) gives candidate runs;
2. anatomy: the five sections' runs are replaced by one monotone Viterbi path;
3. landmarks: few runs per landmark, near the section change it marks;
4. gating: a label is kept in the video only if one of its runs reaches its presence gate;
5. ranking: runs are cut at every change of the decided label set (tuple boundaries) and each piece
   gets a confidence; the writer lists them by descending confidence (segmentation "label").
`decide_runs` stops after step 4 (what the presence search, `tuning.best_run_evidence`, compares gates
with); `decode_events` runs them all.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vce_stream.postprocess.anatomy import monotone_viterbi, section_emissions, section_runs
from vce_stream.postprocess.config import DecodingConfig, PostprocessConfig, per_label
from vce_stream.postprocess.gating import gate_runs
from vce_stream.postprocess.landmarks import LANDMARK_SECTIONS, boundary_row, select_landmark_runs
from vce_stream.postprocess.ranking import change_points, cut_runs
from vce_stream.postprocess.runs import DenseVideo, Runs, densify, filter_runs, length_weighted
from vce_stream.events.event import Event
from vce_stream.labels import ANATOMY_ORDER


def anatomy_columns(labels: Sequence[str]) -> list[int] | None:
    """Columns of the five sections in path order, or None if the label set lacks any of them."""
    if not all(name in labels for name in ANATOMY_ORDER):
        return None
    return [list(labels).index(name) for name in ANATOMY_ORDER]


def anatomy_path(video: DenseVideo, columns: Sequence[int], penalty: float, eps: float) -> np.ndarray:
    """The monotone section path over all rows (segments laid end to end: the capsule moves on)."""
    return monotone_viterbi(section_emissions(video.probs[:, list(columns)], eps), penalty)


def landmark_runs(
    video: DenseVideo, column: int, runs: Runs, label: str, path: np.ndarray | None, max_events: int, radius: int
) -> Runs:
    """Step 3 for one landmark label (see `landmarks.select_landmark_runs`)."""
    section = LANDMARK_SECTIONS.get(label)
    if path is None or section is None:
        boundary, limit = None, None
    else:
        boundary, limit = boundary_row(path, ANATOMY_ORDER.index(section)), radius
    return select_landmark_runs(runs, video.run_means(column, runs), boundary, limit, max_events)


def decide_runs(video: DenseVideo, labels: Sequence[str], config: PostprocessConfig) -> list[Runs]:
    """Steps 1-4 for one video: per label, its decided runs (rows)."""
    decoding: DecodingConfig = config.decoding
    thresholds = config.thresholds_for(len(labels))
    runs = [filter_runs(video, c, thresholds[c], config.temporal) for c in range(len(labels))]
    path = None
    columns = anatomy_columns(labels)
    if decoding.anatomy.enabled and columns is not None and video.rows:
        path = anatomy_path(video, columns, decoding.anatomy.switch_penalty, decoding.anatomy.eps)
        for column, section in zip(columns, section_runs(path, len(columns))):
            runs[column] = section
    if decoding.landmarks.enabled:
        for c, label in enumerate(labels):
            if label in LANDMARK_SECTIONS:
                runs[c] = landmark_runs(video, c, runs[c], label, path, decoding.landmarks.max_events, decoding.landmarks.radius)
    if decoding.gating.enabled:
        gates = per_label(decoding.gating.gates, len(labels), "decoding.gating.gates values")
        powers = per_label(decoding.gating.evidence_power, len(labels), "decoding.gating.evidence_power values")
        runs = [gate_runs(r, length_weighted(video.run_means(c, r), r, powers[c]), gates[c]) for c, r in enumerate(runs)]
    return runs


def ranked_events(video: DenseVideo, labels: Sequence[str], runs: Sequence[Runs], config: DecodingConfig) -> list[Event]:
    """Step 5: cut at tuple boundaries (if configured), score each piece, map rows to frame indices."""
    cuts = change_points(runs) if config.ranking.tuple_cuts else np.zeros(0, np.int64)
    events: list[Event] = []
    for c, label in enumerate(labels):
        pieces = cut_runs(runs[c], cuts)
        scores = length_weighted(video.run_means(c, pieces), pieces, config.ranking.length_power)
        for s, e, score in zip(pieces[0].tolist(), pieces[1].tolist(), scores.tolist()):
            events.append(Event(int(video.frames[s]), int(video.frames[e]), label, float(score)))
    rank = {label: i for i, label in enumerate(labels)}
    return sorted(events, key=lambda ev: (ev.start, rank[ev.label]))


def decode_events(frame_indices: np.ndarray, probs: np.ndarray, labels: Sequence[str], config: PostprocessConfig) -> list[Event]:
    """All five steps for one whole video: its single-label events, ordered by (start, label order)."""
    video = densify(frame_indices, probs, config.temporal.max_fill)
    if video.rows == 0:
        return []
    return ranked_events(video, labels, decide_runs(video, labels, config), config.decoding)

"""Decoders compared on simulated scores of the 80-video ground truth, with cross-validation over videos.

For each noise setting, the simulator (vce_stream.simulate) turns the published ground truth into frame
probabilities; every row below is then fitted on 4/5 of the videos and decoded on the other 1/5
(5 folds, so every video is held out once), and scored with the RARE-VISION mAP at tIoU 0.5 and 0.95:

- empty submission: no event at all;
- seed post-processing: the paper's rule: F1-optimal per-class thresholds, median 7, gap 5, minimum
  length 3, chronological tuple events;
- + confidence order: the same tuple events, most confident first;
- + ranked single-label events: one event per label keeping tuple boundaries, ranked per label;
- + presence gates: thresholds and per-class presence gates calibrated (`vce-stream calibrate`);
- + anatomy Viterbi: the five sections as one monotone path;
- + landmarks: landmarks near their section change, few per video (all features: the calibrated default).

    python examples/bench_decoding.py [--gt tests/data/official_sample.json] [--folds 5] [--metric mean]
        [--settings white,correlated,offsets]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vce_stream.postprocess.config import PostprocessConfig
from vce_stream.postprocess.calibrate import (
    Calibrator,
    SearchConfig,
    cross_validated_events,
    empty_result,
    f1_thresholds,
    fold_indices,
    prepare,
    score_events,
)
from vce_stream.postprocess.config import DecodingConfig
from vce_stream.events.jsonio import read_submission
from vce_stream.labels import LABELS
from vce_stream.simulate import SimulatorConfig, simulate_scores

AUCS = dict(auc_anatomy=0.98, auc_landmark=0.95, auc_pathology=0.95)
SETTINGS: dict[str, SimulatorConfig] = {
    "white": SimulatorConfig(**AUCS, correlation_frames=0.0, video_offset_sd=0.5),
    "correlated": SimulatorConfig(**AUCS, correlation_frames=25.0, video_offset_sd=0.5),
    "long-correlated": SimulatorConfig(**AUCS, correlation_frames=100.0, video_offset_sd=0.5),
}


def describe(config: SimulatorConfig) -> str:
    return (f"frame AUC anatomy {config.auc_anatomy}, landmarks {config.auc_landmark}, pathologies {config.auc_pathology}; "
            f"errors AR(1) over {config.correlation_frames:g} frames; per-video offset sd {config.video_offset_sd}; "
            f"sharpness {config.sharpness}; seed {config.seed}")


def run_setting(name: str, sim: SimulatorConfig, gt: dict, folds_count: int, metric: str) -> list[tuple[str, float, float, float]]:
    scores = simulate_scores(gt, sim)
    base = PostprocessConfig()
    prepared = prepare(scores, gt, LABELS, base.temporal.max_fill)
    folds = fold_indices(len(prepared), folds_count, seed=0)
    ids = [v.video_id for v in prepared]
    rows: list[tuple[str, float, float, float]] = []

    def add(row: str, events: dict, config: PostprocessConfig, started: float) -> None:
        result = score_events(events, config, gt, scores, LABELS)
        rows.append((row, result.map50, result.map95, time.perf_counter() - started))

    empty = empty_result(gt, ids, LABELS)
    rows.append(("empty submission", empty.map50, empty.map95, 0.0))

    def paper(segmentation: str, order: str, decoding: DecodingConfig):
        def fit(train: list[int]) -> PostprocessConfig:
            return PostprocessConfig(thresholds=f1_thresholds([prepared[i] for i in train]), segmentation=segmentation, order=order, decoding=decoding)
        return fit

    for row, fit in [
        ("seed post-processing (F1 thresholds, tuple events, time order)", paper("tuple", "time", DecodingConfig())),
        ("+ confidence order", paper("tuple", "confidence", DecodingConfig())),
        ("+ ranked single-label events (tuple boundaries)", paper("label", "confidence", DecodingConfig(enabled=True))),
    ]:
        started = time.perf_counter()
        events, configs = cross_validated_events(prepared, folds, fit, LABELS, scores)
        add(row, events, configs[0], started)

    calibrator = Calibrator(prepared, LABELS, base, SearchConfig(metric=metric, folds=folds_count))
    for row, features in [
        ("+ presence gates (calibrated thresholds and gates)", ("gating",)),
        ("+ anatomy Viterbi", ("gating", "anatomy")),
        ("+ landmarks (all features: calibrate's default)", ("gating", "anatomy", "landmarks")),
    ]:
        started = time.perf_counter()
        search = SearchConfig(metric=metric, folds=folds_count, features=features)
        events, configs = cross_validated_events(prepared, folds, calibrator.with_search(search).fit, LABELS, scores)
        add(row, events, configs[0], started)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", default=str(Path(__file__).resolve().parents[1] / "tests" / "data" / "official_sample.json"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--metric", default="mean", choices=["map50", "map95", "mean"])
    parser.add_argument("--settings", default=",".join(SETTINGS))
    args = parser.parse_args()
    gt = read_submission(args.gt)
    print(f"ground truth: {args.gt} ({len(gt)} videos); {args.folds}-fold cross-validation over videos; "
          f"calibration objective: {args.metric}")
    for name in args.settings.split(","):
        sim = SETTINGS[name]
        started = time.perf_counter()
        rows = run_setting(name, sim, gt, args.folds, args.metric)
        print(f"\nnoise setting '{name}': {describe(sim)}  ({time.perf_counter() - started:.0f} s)")
        print("| decoding (held-out videos) | mAP@0.5 | mAP@0.95 | mean | fit+decode s |")
        print("|---|---:|---:|---:|---:|")
        for row, m50, m95, seconds in rows:
            print(f"| {row} | {m50:.4f} | {m95:.4f} | {(m50 + m95) / 2:.4f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()

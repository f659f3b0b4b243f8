"""How fast can the pipeline itself go, apart from decoding pictures and from the model? (prints a table)

    PYTHONPATH=. python examples/bench_pipeline_ceiling.py [--frames 10000] [--repeats 3]

Why: a GPU that scores thousands of frames/s is fed by Python threads (the decode thread, the ordered
worker pool, the batch copy, the probability checks, the event stage, the sinks). This measures that
plumbing alone, so a GPU figure below it can be blamed on decoding or on the model, not on the loop.

What runs: `run_exam` on a 64x64 H.264 exam (generated once; its decoding is cheap and included), every
frame "prepared" as the same constant 224x224 image (`BatchReader._prepare` replaced: no resize), scored
by a zero-cost scorer (constant probabilities), through the SPEC §6 event stage and the event JSON sink.
Each cell: frames/s, the median of --repeats runs, with this process's CPU time over wall time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import vce_stream.pipeline.reader as reader_module
from vce_stream.labels import RARE_VISION
from vce_stream.pipeline.run import PipelineConfig, RunOptions, run_exam
from vce_stream.sources import SourceConfig
from vce_stream.synthetic import SyntheticConfig, make_exam


class ZeroCostScorer:
    """Constant probabilities: the plumbing, not a model."""

    labels = tuple(RARE_VISION.names)

    def score(self, frames):
        return np.full((frames.shape[0], len(self.labels)), 0.1, np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vce_bench")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    exam = args.work / f"ceiling_64_{args.frames}.mp4"
    if not exam.exists():
        make_exam(exam, SyntheticConfig(frames=args.frames, width=64, height=64, seed=5), gt_path=args.work / "ceiling.gt.json")
    constant = np.zeros((224, 224, 3), np.uint8)
    reader_module.BatchReader._prepare = lambda self, frame: constant  # no resize: the plumbing only
    load = os.getloadavg()[0]
    print(f"{args.frames} frames of a 64x64 H.264 exam, each 'prepared' as a constant 224x224 image; load average {load:.1f}")
    print(f"{'batch':>5} {'workers':>7} {'frames/s':>9} {'cores busy':>10}")
    for batch in (64, 256):
        for workers in (1, 2):
            rates, busy = [], []
            for _ in range(args.repeats):
                out = Path(tempfile.mkdtemp()) / "events.json"
                options = RunOptions(pipeline=PipelineConfig(batch_size=batch, source=SourceConfig(workers=workers)))
                cpu0, start = time.process_time(), time.perf_counter()
                outcome = run_exam(exam, ZeroCostScorer(), out, options)
                wall = time.perf_counter() - start
                rates.append(outcome.frames / wall)
                busy.append((time.process_time() - cpu0) / wall)
            print(f"{batch:>5} {workers:>7} {statistics.median(rates):>9.0f} {statistics.median(busy):>10.2f}")


if __name__ == "__main__":
    main()

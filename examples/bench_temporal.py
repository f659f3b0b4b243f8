"""Throughput of the streaming temporal engine (`MedianGapState`), 17 classes, batches of 256.

Prints a table: frames/s of the streaming engine and of the offline reference on the same probabilities,
and their ratio. Probabilities are temporally correlated (runs with flicker), like a frame classifier's.

    python examples/bench_temporal.py [--frames 1000000] [--batch 256]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from vce_stream.postprocess.config import TemporalConfig
from vce_stream.labels import LABELS
from vce_stream.postprocess.filters import offline_events
from vce_stream.postprocess.streaming import MedianGapState


def simulated_probs(frames: int, classes: int, seed: int = 0) -> np.ndarray:
    """Piecewise-constant presence (mean run 400 frames) plus per-frame noise, as float32."""
    rng = np.random.default_rng(seed)
    flips = rng.random((frames, classes)) < 1 / 400
    state = np.cumsum(flips, axis=0) % 2
    return np.clip(state * 0.55 + rng.normal(0.25, 0.15, (frames, classes)), 0, 1).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    probs = simulated_probs(args.frames, len(LABELS))
    indices = np.arange(args.frames, dtype=np.int64)
    thresholds = [0.5] * len(LABELS)
    config = TemporalConfig()

    start = time.perf_counter()
    state = MedianGapState(LABELS, thresholds, config)
    streamed = []
    for lo in range(0, args.frames, args.batch):
        streamed.extend(state.push(indices[lo : lo + args.batch], probs[lo : lo + args.batch]))
    streamed.extend(state.flush())
    t_stream = time.perf_counter() - start

    start = time.perf_counter()
    reference = offline_events(indices, probs, thresholds, config, LABELS)
    t_offline = time.perf_counter() - start

    same = sorted((e.start, e.end, e.label) for e in streamed) == sorted((e.start, e.end, e.label) for e in reference)
    print(f"frames={args.frames:,} classes={len(LABELS)} batch={args.batch} events={len(streamed):,} "
          f"identical_to_offline={same} cpu_threads={os.cpu_count()}")
    print(f"| engine | seconds | frames/s | ratio vs offline |")
    print(f"|---|---:|---:|---:|")
    print(f"| offline reference (whole video) | {t_offline:.2f} | {args.frames / t_offline:,.0f} | 1.00 |")
    print(f"| MedianGapState (streaming) | {t_stream:.2f} | {args.frames / t_stream:,.0f} | {t_offline / t_stream:.2f} |")


if __name__ == "__main__":
    main()

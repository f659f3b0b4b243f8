"""What capturing key frames for the report costs: speed and memory of KeyFrameCollector.

    python examples/bench_report.py [--frames 4000] [--batch 32]

1. Speed: a pipeline-like loop over prepared 224x224 frames (synthetic capsule frames, batches of 32):
   score with the PaletteScorer (the cheapest real scorer: a stand-in for the model, so the ratio is a
   worst case; a real model makes the collector's share far smaller), then the streaming temporal stage
   (MedianGapState); without and with `KeyFrameCollector.push`, interleaved chunk by chunk in one
   process. Reported per process CPU second (steady on a shared machine) and per wall second.
2. Memory: tracemalloc peak of the collector alone (everything it allocates while pushing, thumbnails
   and per-batch temporaries included; the input batches are views made before tracing starts) at
   10,000 and 100,000 frames, and the thumbnails it holds at the end against its cap.
3. The collector alone over 50,000 frames (frames/s), the steady-state cost once its lists are full.
Probabilities are drawn from Beta(0.5, 8) per label (mostly low, a few high), so key frames keep
changing over the exam as they would on a real one.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import tracemalloc

import numpy as np


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def synthetic_frames(count: int, size: int = 224) -> np.ndarray:
    """`count` prepared frames (uint8, size x size x 3) from the synthetic exam renderer."""
    from vce_stream.synthetic import SyntheticConfig, plan_exam, render_frames

    plan = plan_exam(SyntheticConfig(frames=max(100, count), width=size, height=size, seed=1))
    frames = [f for _, f in zip(range(count), render_frames(plan))]
    return np.stack(frames)


class Loop:
    """score -> temporal (-> collector), continued chunk after chunk over one exam's frame numbering."""

    def __init__(self, frames: np.ndarray, probs: np.ndarray, batch: int, collect: bool) -> None:
        from vce_stream.postprocess.config import PostprocessConfig
        from vce_stream.labels import LABELS
        from vce_stream.report.thumbnails import KeyFrameCollector
        from vce_stream.synthetic import PaletteScorer
        from vce_stream.postprocess.streaming import MedianGapState

        post = PostprocessConfig()
        self.frames, self.probs, self.batch = frames, probs, batch
        self.scorer = PaletteScorer()
        self.state = MedianGapState(LABELS, post.thresholds_for(len(LABELS)), post.temporal)
        self.collector = KeyFrameCollector(LABELS) if collect else None
        self.next = 0
        self.cpu = 0.0  # process CPU seconds spent in `run`
        self.wall = 0.0

    def run(self, count: int) -> None:
        import torch

        pool = self.frames.shape[0]
        cpu, wall = time.process_time(), time.perf_counter()
        for a in range(self.next, self.next + count, self.batch):
            rows = np.arange(a, a + self.batch, dtype=np.int64)
            images = self.frames[rows % pool]
            self.scorer.score(torch.from_numpy(images))  # the stand-in model's cost
            probs = self.probs[rows % self.probs.shape[0]]  # probabilities with realistic key-frame turnover
            self.state.push(rows, probs)
            if self.collector is not None:
                self.collector.push(rows, images, probs)
        self.next += count
        self.cpu += time.process_time() - cpu
        self.wall += time.perf_counter() - wall


def compare(frames: np.ndarray, probs: np.ndarray, total: int, batch: int, rounds: int = 8) -> tuple[Loop, Loop]:
    """Both loops over `total` frames each, interleaved in `rounds` chunks so machine load hits both alike."""
    base, with_report = Loop(frames, probs, batch, False), Loop(frames, probs, batch, True)
    chunk = max(batch, total // rounds // batch * batch)
    for _ in range(rounds):
        base.run(chunk)
        with_report.run(chunk)
    return base, with_report


def collector_memory(frames: np.ndarray, total: int, batch: int, seed: int) -> tuple[float, int, int]:
    """(peak MiB traced while pushing `total` frames, thumbnails held at the end, capacity)."""
    from vce_stream.labels import LABELS
    from vce_stream.report.thumbnails import KeyFrameCollector

    rng = np.random.default_rng(seed)
    batches = [frames[i : i + batch] for i in range(0, frames.shape[0] - batch + 1, batch)]  # views: no copies
    probs = [rng.beta(0.5, 8.0, size=(batch, len(LABELS))).astype(np.float32) for _ in range(16)]
    tracemalloc.start()  # from here on, what is allocated is the collector's (and its transient work)
    collector = KeyFrameCollector(LABELS)
    for k, a in enumerate(range(0, total, batch)):
        rows = np.arange(a, a + batch, dtype=np.int64)
        p = probs[k % len(probs)] * np.float32(1.0 + (k % 97) / 97)  # keeps the heaps turning over
        collector.push(rows, batches[k % len(batches)], np.minimum(p, np.float32(1.0)))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20, collector.stored_thumbnails, collector.capacity


def collector_rate(frames: np.ndarray, total: int, batch: int) -> float:
    """Frames/s of `KeyFrameCollector.push` alone over `total` frames (no tracemalloc)."""
    from vce_stream.labels import LABELS
    from vce_stream.report.thumbnails import KeyFrameCollector

    rng = np.random.default_rng(1)
    probs = rng.beta(0.5, 8.0, size=(total, len(LABELS))).astype(np.float32)
    pool = frames.shape[0]
    collector = KeyFrameCollector(LABELS)
    start = time.perf_counter()
    for a in range(0, total, batch):
        rows = np.arange(a, min(total, a + batch))
        collector.push(rows.astype(np.int64), frames[rows % pool], probs[rows])
    return total / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=4000, help="Frames in each speed run.")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()

    frames = synthetic_frames(64)
    rng = np.random.default_rng(0)
    probs = rng.beta(0.5, 8.0, size=(args.frames, 17)).astype(np.float32)
    compare(frames, probs, 4 * args.batch, args.batch, rounds=2)  # warm up imports and caches
    base, with_report = compare(frames, probs, args.frames, args.batch)

    print(f"CPU: {cpu_model()} ({os.cpu_count()} threads); {base.next} frames of 224x224 per loop, batches of {args.batch}, "
          "interleaved in 8 chunks")
    print()
    print("| loop (PaletteScorer -> MedianGapState) | frames per CPU second | ratio | frames/s (wall) | ratio |")
    print("|---|---:|---:|---:|---:|")
    for name, run in (("without key frames", base), ("with KeyFrameCollector (top 8 per label, top 100, 112 px JPEG)", with_report)):
        print(f"| {name} | {run.next / run.cpu:,.0f} | {base.cpu / run.cpu:.2f} | {run.next / run.wall:,.0f} | {base.wall / run.wall:.2f} |")
    print()
    print("| frames pushed | collector peak (tracemalloc) | thumbnails held / cap |")
    print("|---:|---:|---:|")
    for total in (10_000, 100_000):
        peak, held, cap = collector_memory(frames, total, args.batch, seed=total)
        print(f"| {total:,} | {peak:.2f} MiB | {held} / {cap} |")
    print()
    total = 50_000
    rate = collector_rate(frames, total, args.batch)
    print(f"collector alone over {total:,} frames: {rate:,.0f} frames/s ({1e6 / rate:.0f} us a frame)")


if __name__ == "__main__":
    main()

"""Frames/s of the CPU (and, on a GPU, TensorRT) engines against torch eager, side by side in one run.

The full-size differential ViT-B/16 bundle with random weights (speed does not depend on them) is
built with `engines.build.build_engine` for ONNX Runtime fp32 and int8 (and TensorRT fp32/fp16 where
CUDA and torch_tensorrt exist), then every engine scores the same uint8 batches. Rounds alternate
between engines so drift in machine load hits all alike; the table reports the median batch time and
each engine's max |p - p_eager| on the timed frames. The issue's target: the best CPU engine at least
1.6x torch eager (2 threads, batch 8 to 32).

    python examples/bench_engines.py                     # ViT-B/16, batches 8,16,32, 2 threads
    python examples/bench_engines.py --compile           # also torch.compile (slow to compile)
    python examples/bench_engines.py --arch tiny         # a quick check of the script itself
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from engines.build import build_engine, calibration_frames
from vce_stream.engine.profile import BatchProfile
from vce_stream.engine.select import make_scorer
from vce_stream.engine.backends.pytorch import TorchScorer
from vce_stream.engine.backends.tensorrt import tensorrt_available
from vce_stream.model.bundle import load_bundle
from vce_stream.model.random_bundle import create_random_bundle
from vce_stream.model.config import ARCH_PRESETS
from vce_stream.engine.backends.pytorch import torch_scorer


def time_batch(scorer, frames: torch.Tensor) -> tuple[float, np.ndarray]:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    probs = scorer.score(frames)
    return time.perf_counter() - start, probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_base_patch16_224", choices=sorted(ARCH_PRESETS))
    parser.add_argument("--batches", default="8,16,32", help="batch sizes to time (comma separated)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="timed batches per engine and batch size")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the eager model")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    profile = BatchProfile(1, batches[len(batches) // 2], max(batches))
    work = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    try:
        run(args, batches, profile, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # a ViT-B bundle and its engines are ~1 GB


def run(args: argparse.Namespace, batches: list[int], profile: BatchProfile, work: Path) -> None:
    bundle = load_bundle(create_random_bundle(work / "bundle", args.arch, seed=0))
    size = bundle.preprocess.size

    scorers: dict[str, object] = {"torch eager": torch_scorer(bundle, "cpu")}
    build_seconds: dict[str, float] = {"torch eager": 0.0}
    if args.compile:
        start = time.perf_counter()
        compiled = torch.compile(bundle.build_frame_model("cpu"), dynamic=False)
        scorers["torch.compile"] = TorchScorer(compiled, bundle.labels, "cpu")
        build_seconds["torch.compile"] = time.perf_counter() - start  # compilation itself happens at warm-up
    for precision in ("fp32", "int8"):
        start = time.perf_counter()
        path, _ = build_engine(bundle, "onnxruntime", precision, profile, cache_root=work / "cache")
        build_seconds[f"onnxruntime {precision}"] = time.perf_counter() - start
        scorers[f"onnxruntime {precision}"] = make_scorer(bundle, engine_dir=path, threads=args.threads)
    if tensorrt_available():
        for precision in ("fp32", "fp16"):
            start = time.perf_counter()
            path, _ = build_engine(bundle, "tensorrt", precision, profile, cache_root=work / "cache", device="cuda")
            build_seconds[f"tensorrt {precision}"] = time.perf_counter() - start
            scorers[f"tensorrt {precision}"] = make_scorer(bundle, engine_dir=path, device="cuda")
        scorers["torch eager cuda"] = torch_scorer(bundle, "cuda")

    print(f"{args.arch}, {args.threads} threads, torch {torch.__version__}, median of {args.rounds} batches; "
          f"engines built for batch profile {profile.text}")
    print(f"{'engine':<20}{'batch':>6}{'ms/batch':>10}{'frames/s':>10}{'vs eager':>10}{'max |dp|':>11}{'build s':>9}")
    for batch in batches:
        frames = calibration_frames(batch, size, seed=batch)
        reference = scorers["torch eager"].score(frames)
        times: dict[str, list[float]] = {name: [] for name in scorers}
        diffs: dict[str, float] = {}
        for name, scorer in scorers.items():
            for _ in range(args.warmup):
                scorer.score(frames)
        for _ in range(args.rounds):
            for name, scorer in scorers.items():
                seconds, probs = time_batch(scorer, frames)
                times[name].append(seconds)
                diffs[name] = max(diffs.get(name, 0.0), float(np.abs(probs - reference).max()))
        eager = statistics.median(times["torch eager"])
        for name in scorers:
            median = statistics.median(times[name])
            print(f"{name:<20}{batch:>6}{median * 1e3:>10.0f}{batch / median:>10.2f}{eager / median:>9.2f}x"
                  f"{diffs[name]:>11.2g}{build_seconds[name]:>9.0f}")


if __name__ == "__main__":
    main()

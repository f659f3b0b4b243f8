"""Frames/s of the full-size BiomedCLIP ViT-B/16 classifier with and without differential attention.

Both models are the bundle's uint8-in, probabilities-out `FrameProbabilityModel` with random weights
(speed does not depend on the weights), run eagerly by torch on the CPU in one process. Rounds
alternate between the variants so drift in machine load hits both alike; the table reports the median
batch time (wall) and the median CPU time of this process per batch. The issue's budget: differential costs at most 1.25x plain.

    python examples/bench_model.py                 # batch 8, 2 threads, full size
    python examples/bench_model.py --arch tiny     # a quick check of the script itself
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import torch

from vce_stream.sources.preprocess import PreprocessConfig
from vce_stream.model.classifier import FrameProbabilityModel, build_classifier
from vce_stream.model.config import ARCH_PRESETS


def build(arch, differential: bool) -> FrameProbabilityModel:
    config = dataclasses.replace(arch, differential=differential)
    model = build_classifier(config, seed=0).eval()
    return FrameProbabilityModel(model, PreprocessConfig(size=config.img_size)).eval()


def time_batch(model: torch.nn.Module, frames: torch.Tensor) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) for one batch."""
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        model(frames)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_base_patch16_224", choices=sorted(ARCH_PRESETS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8, help="timed batches per variant")
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    arch = ARCH_PRESETS[args.arch]
    variants = {"plain": build(arch, False), "differential": build(arch, True)}
    frames = torch.randint(0, 256, (args.batch, arch.img_size, arch.img_size, 3), dtype=torch.uint8)
    for model in variants.values():
        for _ in range(args.warmup):
            time_batch(model, frames)
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, model in variants.items():
            seconds, cpu_seconds = time_batch(model, frames)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)

    print(f"{args.arch}, batch {args.batch}, {args.threads} threads, torch {torch.__version__} eager, "
          f"median of {args.rounds} batches, load average {os.getloadavg()[0]:.1f}")
    print(f"{'attention':<14}{'params (M)':>11}{'ms/batch':>10}{'frames/s':>10}{'ratio':>8}"
          f"{'CPU ms/batch':>14}{'CPU ratio':>11}")
    base_wall, base_cpu = statistics.median(wall["plain"]), statistics.median(cpu["plain"])
    for name, model in variants.items():
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"{name:<14}{params:>11.1f}{w * 1e3:>10.1f}{args.batch / w:>10.2f}{w / base_wall:>7.3f}x"
              f"{c * 1e3:>14.1f}{c / base_cpu:>10.3f}x")
    print("ratio: wall time against plain; CPU ratio: this process's CPU time against plain (less sensitive to")
    print("other processes on a shared machine; frames/s is only meaningful on a quiet one).")


if __name__ == "__main__":
    main()

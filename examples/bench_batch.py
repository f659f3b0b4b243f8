"""Benchmark of `vce-stream batch` on an archive of generated exams (prints a table).

    python examples/bench_batch.py [--exams 8] [--frames 2000] [--size 128] [--arch tiny] [--workers 1,2] [--rounds 5]

For each worker count N: the local pool with N workers, and Ray tasks on a local Ray instance with N
CPUs (one CPU and one torch thread per exam on both), over the same archive. Reported: wall time of the
whole batch (discovery, journal, outputs included; best and median of --rounds), exams per hour and
frames per second (from the best), and Ray's best wall time against the local pool's with the same N
(target: Ray within 10%, i.e. ratio <= 1.10).

Both runners are warmed up first on a small archive (worker processes started, model loaded): that
start-up is paid once per batch, whatever its size, and is printed separately. Their timed batches
alternate, so load from other processes hits both alike. Speed is measured, never
asserted. Exams are cached in --work (default /tmp/vce_bench_batch).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from vce_stream.batch.driver import BatchJob, BatchReport, run_batch
from vce_stream.batch.local import LocalPool
from vce_stream.batch.ray_runner import RayConfig, RayRunner
from vce_stream.batch.task import score_exam
from vce_stream.model.bundle import load_bundle
from vce_stream.model.random_bundle import create_random_bundle
from vce_stream.pipeline.run import RunOptions
from vce_stream.synthetic import SyntheticConfig, make_exam


class KeepOpen:
    """A runner that survives the batch (so a warm-up and the timed batch share its workers)."""

    def __init__(self, runner) -> None:
        self.runner = runner

    def __getattr__(self, name: str):
        return getattr(self.runner, name)

    def __enter__(self) -> KeepOpen:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def make_archive(root: Path, exams: int, frames: int, size: int, seed: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(exams):
        path = root / f"exam_{i:03d}.mkv"
        if not path.exists():
            make_exam(path, SyntheticConfig(frames=frames, width=size, height=size, seed=seed + i))
    return root


def timed_batch(job: BatchJob, runner) -> tuple[BatchReport, float]:
    shutil.rmtree(job.outdir, ignore_errors=True)
    start = time.perf_counter()
    report = run_batch(job, lambda _: KeepOpen(runner))
    return report, time.perf_counter() - start


def open_runner(kind: str, workers: int):
    if kind == "local":
        return LocalPool(score_exam, ["cpu"] * workers, threads=1)
    import ray

    ray.init(num_cpus=workers, include_dashboard=False, logging_level="WARNING")
    return RayRunner(score_exam, RayConfig(cpus_per_exam=1))


def measure(workers: int, jobs: dict[str, BatchJob], rounds: int) -> dict[str, tuple[float, list[float], BatchReport]]:
    """Per runner kind: (start-up seconds, batch seconds of each round, last report). Both runners stay
    warm side by side and their batches alternate, so load from elsewhere hits both alike."""
    runners, startup = {}, {}
    try:
        for kind in ("local", "ray"):
            start = time.perf_counter()
            runners[kind] = open_runner(kind, workers)
            timed_batch(jobs["warmup"], runners[kind])
            startup[kind] = time.perf_counter() - start
        seconds: dict[str, list[float]] = {"local": [], "ray": []}
        reports = {}
        for _ in range(rounds):
            for kind, runner in runners.items():
                reports[kind], elapsed = timed_batch(jobs["main"], runner)
                if reports[kind].problems:
                    raise SystemExit(f"{kind}: exams failed: {reports[kind].problems[0]}")
                seconds[kind].append(elapsed)
    finally:
        for runner in runners.values():
            runner.close()
        if "ray" in runners:
            import ray

            ray.shutdown()
    return {kind: (startup[kind], seconds[kind], reports[kind]) for kind in runners}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exams", type=int, default=8, help="exams in the archive")
    parser.add_argument("--frames", type=int, default=2000, help="frames per exam")
    parser.add_argument("--size", type=int, default=128, help="frame width and height in pixels")
    parser.add_argument("--arch", default="tiny", help="model preset of the random bundle")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare")
    parser.add_argument("--rounds", type=int, default=5, help="timed batches per runner (alternating; best and median shown)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vce_bench_batch")
    args = parser.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    archive = make_archive(args.work / f"archive_{args.exams}x{args.frames}_{args.size}", args.exams, args.frames, args.size)
    warmup = make_archive(args.work / f"warmup_{max(counts)}_{args.size}", max(counts), 100, args.size, seed=1000)
    bundle = load_bundle(create_random_bundle(args.work / f"bundle_{args.arch}", args.arch, seed=0))
    with tempfile.TemporaryDirectory() as tmp:
        base = dict(bundle=bundle.path, bundle_hash=bundle.content_hash, labels=bundle.labels,
                    options=RunOptions(postprocess=bundle.postprocess, preprocess=bundle.preprocess))
        jobs = {
            "warmup": BatchJob(archive=warmup, outdir=Path(tmp) / "warmup", **base),
            "main": BatchJob(archive=archive, outdir=Path(tmp) / "main", **base),
        }
        rows = []
        for n in counts:
            results = measure(n, jobs, args.rounds)
            best_local = min(results["local"][1])
            for kind, (startup, seconds, report) in results.items():
                frames = sum(r.frames for r in report.rows)
                best, median = min(seconds), statistics.median(seconds)
                rows.append((
                    f"{kind} x{n}", f"{startup:.1f}", f"{best:.2f} / {median:.2f}", f"{len(report.rows) * 3600 / best:.0f}",
                    f"{frames / best:.0f}", "1.00 (baseline)" if kind == "local" else f"{best / best_local:.3f} (<= 1.10)",
                ))
    print(f"# {os.cpu_count()} cores, torch {torch.__version__}, model {args.arch}, archive {args.exams} exams x "
          f"{args.frames} frames {args.size}x{args.size} (H.264 mkv), 1 CPU and 1 torch thread per exam")
    header = ("runner", "start-up s", "batch s best / median", "exams/hour", "frames/s", "best wall vs local (target)")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

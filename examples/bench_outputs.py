"""What the extra outputs of `run` cost: `--report` and `--save-embeddings` against a plain run.

Runs the whole `vce-stream run` command as a child process (tiny random bundle, synthetic 64x64 H.264
exams of 10,000 and 100,000 frames), each configuration `--repeats` times in turn (A B C A B C ...), and
prints per configuration the median frames/s (from the run's own summary line: scoring time, model
load excluded), its ratio to the plain run of the same exam, the child's peak RSS (`wait4`), and the
output's size. The issue's targets: frames/s >= 0.95x the plain run; peak RSS at 100,000 frames within
10% of 10,000 (flat memory).

    python examples/bench_outputs.py [--frames 10000 100000] [--repeats 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = {
    "run": [],
    "run --report": ["--report", "{out}/report.html"],
    "run --save-embeddings": ["--save-embeddings", "{out}/exam.emb"],
}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                flags = next((l for l in Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags")), "")
                vector = [f for f in ("avx2", "avx512f") if f" {f}" in flags]
                return f"{line.split(':', 1)[1].strip()} ({', '.join(vector) or 'no avx2'}), {os.cpu_count()} CPUs"
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def run_child(args: list[str]) -> tuple[float, int, str]:
    """(frames/s from the summary line, peak RSS in bytes, stderr) of one `vce-stream run`."""
    process = subprocess.Popen([sys.executable, "-m", "vce_stream", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    err = process.stderr.read().decode()
    process.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"vce-stream {' '.join(args)} failed:\n{err}")
    fps = float(re.search(r"([\d.]+) frames/s", err).group(1))
    return fps, usage.ru_maxrss * 1024, err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="Folder for the exams (kept between runs).")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="vce-bench-outputs-"))
    work.mkdir(parents=True, exist_ok=True)
    bundle = work / "tiny"
    if not bundle.exists():
        subprocess.run([sys.executable, "-m", "vce_stream", "demo-bundle", str(bundle)], check=True, capture_output=True)
    print(f"machine: {cpu_model()}; shared with other work (medians of {args.repeats} alternating runs)")
    print(f"{'exam frames':>11}  {'configuration':<22} {'frames/s':>9} {'ratio':>6} {'peak RSS MiB':>13} {'output':>12}")
    rss_by: dict[tuple[str, int], float] = {}
    for frames in args.frames:
        exam = work / f"exam_{frames}.mkv"
        if not exam.exists():
            subprocess.run([sys.executable, "-m", "vce_stream", "synth", str(exam), "--frames", str(frames), "--size", "64x64"], check=True, capture_output=True)
        results: dict[str, list[tuple[float, int]]] = {name: [] for name in CONFIGS}
        for _ in range(args.repeats):
            for name, extra in CONFIGS.items():
                out = work / f"out_{frames}_{name.replace(' ', '_')}"
                out.mkdir(exist_ok=True)
                fps, rss, _ = run_child(["run", str(exam), "--model", str(bundle), "--out", str(out / "events.json"), "--device", "cpu", *[e.format(out=out) for e in extra]])
                results[name].append((fps, rss))
        base = statistics.median(f for f, _ in results["run"])
        for name, values in results.items():
            fps = statistics.median(f for f, _ in values)
            rss = statistics.median(r for _, r in values) / 2**20
            rss_by[(name, frames)] = rss
            out = work / f"out_{frames}_{name.replace(' ', '_')}"
            size = sum(p.stat().st_size for p in out.iterdir() if p.name != "events.json")
            print(f"{frames:>11,}  {name:<22} {fps:>9,.0f} {fps / base:>6.2f} {rss:>13,.0f} {size / 2**20 if size else 0:>10.1f} MB")
    if len(args.frames) >= 2:
        small, large = min(args.frames), max(args.frames)
        for name in CONFIGS:
            print(f"peak RSS {name}: {large:,} / {small:,} frames = {rss_by[(name, large)] / rss_by[(name, small)]:.3f}")


if __name__ == "__main__":
    main()

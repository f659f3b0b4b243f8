"""Parallel decode-and-prepare benchmark (issue 15 item 7): frame folders and H.264, 1 and 2 workers.

    python examples/bench_decode.py [--frames 1200] [--size 480] [--repeats 3] [--work DIR]

Rows (frames/s, each the median of --repeats runs; a run reads one window of frames/repeats frames):
1. PNG frame folder (size x size, generated once from the synthetic renderer): the source and the
   BatchReader with a zero-cost scorer (batches taken and released) at 1 and 2 workers, against the
   fastest single-thread decoder of the same PNGs in a plain loop (OpenCV and PyAV, each followed by the
   same `prepare_frame`, so the same output pixels; checked). Targets: 2 workers >= 1.8 x 1 worker, and
   >= 0.9 x (2 x the fastest single-thread rate).
2. H.264 (size x size, generated with PyAV): the same pipeline at 1 and 2 workers, against
   `ffmpeg -threads 2 -i X -vf scale=...:flags=bicubic,crop=224:224 -f null -` when the ffmpeg command
   line exists (target >= 0.9), and against a plain PyAV loop (2 decoder threads, resize in the loop).
A GIL-free reference (sha256 in 1 and 2 threads) shows how far 2 threads can scale on the machine at
that moment: on a shared machine it can be far below 2. "cores busy" is this process's CPU time over wall time in the median run: close to the worker count when
decoding scales, close to 1 when something serialises it (the GIL), whatever else loads the machine.
The machine may be shared: the CPU model, its avx2/avx512 flags, the usable cores and the load average
are printed with the table. Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from vce_stream.pipeline.batches import BatchPool
from vce_stream.pipeline.reader import BatchReader
from vce_stream.sources import SourceConfig, open_source
from vce_stream.sources.base import usable_cores
from vce_stream.sources.preprocess import PreprocessConfig, open_image_pyav, packed_frame, prepare_frame
from vce_stream.synthetic import SyntheticConfig, plan_exam, render_frames

CFG = PreprocessConfig()


def cpu_line() -> str:
    model, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    simd = [f for f in ("avx2", "avx512f", "avx512bw", "avx512vl") if f in flags] or ["no avx2/avx512"]
    load = os.getloadavg()
    return f"{model}; {', '.join(simd)}; {usable_cores()} usable cores; load average {load[0]:.1f} (shared machine)"


def source_images(count: int, size: int) -> list[np.ndarray]:
    """`count` distinct synthetic capsule pictures (rendered once, then shifted: rendering is the slow part)."""
    plan = plan_exam(SyntheticConfig(frames=100, width=size, height=size, seed=3))
    base = [image for _, image in zip(range(24), render_frames(plan))]
    return [np.roll(base[i % len(base)], 7 * (i // len(base)), axis=1) for i in range(count)]


def write_windows(work: Path, frames: int, size: int, repeats: int) -> list[Path]:
    """`repeats` frame folders (windows) of frames // repeats PNGs each; reused when present."""
    per = frames // repeats
    folders = [work / f"png_{size}_{per}_{r}" for r in range(repeats)]
    if all(len(list(f.glob("frame_*.png"))) == per for f in folders if f.exists()) and all(f.exists() for f in folders):
        return folders
    import cv2  # writing only; libpng's default level, as a recorder's export would be

    images = source_images(frames, size)
    for r, folder in enumerate(folders):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for i in range(per):
            cv2.imwrite(str(folder / f"frame_{r * per + i:06d}.png"), images[r * per + i][:, :, ::-1])
    return folders


def write_h264(work: Path, frames: int, size: int) -> Path:
    path = work / f"exam_{size}_{frames}.mp4"
    if path.exists():
        return path
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast"}
        for image in source_images(frames, size):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def timed(fn: Callable[[], int]) -> tuple[float, float]:
    """(frames/s, cores busy = this process's CPU seconds / wall seconds) of one run."""
    cpu0, start = time.process_time(), time.perf_counter()
    count = fn()
    wall = time.perf_counter() - start
    return count / wall, (time.process_time() - cpu0) / wall


def pipeline(path: Path, workers: int) -> int:
    """Source + BatchReader with a zero-cost scorer: every batch is taken and released at once."""
    pool = BatchPool(4, 64, CFG.size)
    count = 0
    with BatchReader(open_source(path, SourceConfig(workers=workers)), pool, CFG) as reader:
        for batch in reader:
            count += batch.count
            pool.release(batch)
    return count


def plain_cv2(folder: Path) -> int:
    import cv2

    count = 0
    for path in sorted(folder.glob("frame_*.png")):
        bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # swscale reorders the channels as it scales
        prepare_frame(packed_frame(bgr, "bgr24"), CFG)
        count += 1
    return count


def plain_pyav(folder: Path) -> int:
    count = 0
    for path in sorted(folder.glob("frame_*.png")):
        prepare_frame(open_image_pyav(path), CFG)
        count += 1
    return count


def plain_pyav_video(path: Path, threads: int = 2) -> int:
    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type, stream.thread_count = "AUTO", threads
        for frame in container.decode(stream):
            prepare_frame(frame, CFG)
            count += 1
    return count


def ffmpeg_cli(path: Path, size: int) -> int | None:
    exe = shutil.which("ffmpeg")
    if exe is None:
        return None
    scale = "scale=224:224:flags=bicubic,crop=224:224" if size else ""
    subprocess.run([exe, "-v", "error", "-threads", "2", "-i", str(path), "-vf", scale, "-pix_fmt", "rgb24", "-f", "null", "-"], check=True)
    with av.open(str(path)) as container:
        return container.streams.video[0].frames


BUSY: dict[float, float] = {}  # frames/s -> cores busy in the median run


def sha256_mb(threads: int, data: bytes = os.urandom(32 << 20), chunks: int = 6) -> int:
    """GIL-free reference work (hashlib releases the GIL on large buffers): MB hashed by `threads` threads."""
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: hashlib.sha256(data).digest(), range(chunks)))
    return chunks * len(data) >> 20


def median_rate(runs: list[Callable[[], int]]) -> float:
    results = sorted(timed(run) for run in runs)
    rate, busy = results[len(results) // 2]
    BUSY[rate] = busy
    return rate


def check_same_pixels(folder: Path) -> bool:
    """The pipeline's pixels for one frame equal both plain loops' pixels (so the comparison is fair),
    and the OpenCV loop's numpy copy (packed_frame) equals PyAV's own from_ndarray."""
    import cv2

    path = sorted(folder.glob("frame_*.png"))[0]
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    via_cv2 = prepare_frame(packed_frame(bgr, "bgr24"), CFG)  # exactly what plain_cv2 does
    via_from_ndarray = prepare_frame(av.VideoFrame.from_ndarray(bgr, format="bgr24"), CFG)
    via_pyav = prepare_frame(open_image_pyav(path), CFG)
    pool = BatchPool(1, 1, CFG.size)
    with BatchReader(open_source(folder, SourceConfig(workers=2)), pool, CFG) as reader:
        first = next(iter(reader)).filled()[0][0].numpy()
    return all(np.array_equal(first, other) for other in (via_cv2, via_from_ndarray, via_pyav))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1200)
    parser.add_argument("--size", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "vce_bench_decode")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    windows = write_windows(args.work, args.frames, args.size, args.repeats)
    video = write_h264(args.work, args.frames, args.size)
    print(f"inputs ready in {time.perf_counter() - t0:.1f} s; {cpu_line()}")
    print(f"same pixels (pipeline, OpenCV loop, PyAV loop): {check_same_pixels(windows[0])}")

    rows: list[tuple[str, float, str]] = []
    ref_1 = median_rate([lambda: sha256_mb(1)] * args.repeats)
    ref_2 = median_rate([lambda: sha256_mb(2)] * args.repeats)
    rows += [
        ("reference: sha256, 1 thread (MB/s, GIL-free)", ref_1, ""),
        ("reference: sha256, 2 threads (MB/s, GIL-free)", ref_2, f"{ref_2 / ref_1:.2f} x: the most 2 threads can gain on this machine now"),
    ]
    png_cv2 = median_rate([lambda f=f: plain_cv2(f) for f in windows])
    png_pyav = median_rate([lambda f=f: plain_pyav(f) for f in windows])
    fastest = max(png_cv2, png_pyav)
    png_1 = median_rate([lambda f=f: pipeline(f, 1) for f in windows])
    png_2 = median_rate([lambda f=f: pipeline(f, 2) for f in windows])
    rows += [
        ("PNG: plain loop, OpenCV decode + prepare_frame (1 thread)", png_cv2, ""),
        ("PNG: plain loop, PyAV decode + prepare_frame (1 thread)", png_pyav, ""),
        ("PNG: source + reader, 1 worker", png_1, f"{png_1 / fastest:.2f} x fastest single thread"),
        ("PNG: source + reader, 2 workers", png_2, f"{png_2 / png_1:.2f} x 1 worker (target >= 1.8); {png_2 / (2 * fastest):.2f} x 2 x fastest (target >= 0.9)"),
    ]
    per_video = [lambda: pipeline(video, 1)] * args.repeats
    h264_1 = median_rate(per_video)
    h264_2 = median_rate([lambda: pipeline(video, 2)] * args.repeats)
    h264_plain = median_rate([lambda: plain_pyav_video(video, 2)] * args.repeats)
    rows += [
        ("H.264: plain PyAV loop, 2 decoder threads, resize in the loop", h264_plain, ""),
        ("H.264: source + reader, 1 worker", h264_1, f"{h264_1 / h264_plain:.2f} x plain loop"),
        ("H.264: source + reader, 2 workers", h264_2, f"{h264_2 / h264_plain:.2f} x plain loop; {h264_2 / h264_1:.2f} x 1 worker"),
    ]
    if shutil.which("ffmpeg"):
        cli = median_rate([lambda: ffmpeg_cli(video, args.size) or 0] * args.repeats)
        rows.append(("H.264: ffmpeg -threads 2, scale+crop to 224, -f null", cli, f"source + reader 2 workers = {h264_2 / cli:.2f} x this (target >= 0.9)"))
    else:
        rows.append(("H.264: ffmpeg command line", float("nan"), "not installed here: no CLI baseline"))

    width = max(len(r[0]) for r in rows)
    print(f"\n{args.size}x{args.size} -> {CFG.size}x{CFG.size}, {args.frames} frames in {args.repeats} windows, median of {args.repeats}")
    print(f"{'configuration':<{width}}  frames/s  cores busy  ratio")
    for name, rate, note in rows:
        busy = f"{BUSY[rate]:10.2f}" if rate in BUSY else f"{'':10}"
        print(f"{name:<{width}}  {rate:8.1f}  {busy}  {note}")
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()

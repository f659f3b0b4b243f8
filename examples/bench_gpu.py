"""GPU benchmark of vce-stream: engines, eager precisions and whole runs, each step guarded, as JSON.

On a machine with an NVIDIA GPU (installs nothing; torch 2.11 or 2.14 with the project on PYTHONPATH):

    PYTHONPATH=. python3 examples/bench_gpu.py --out bench_gpu.json

On the lent GPU machine (Python 3.12, torch 2.11, no PyAV): PyAV travels as a wheel. Here, once:

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 -d .whl av==18.1.0          # 36 MB; the device carries 64 MiB

and there (carry [".whl"], timeout_s 600):

    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl &&
    PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 timeout 560 python3 examples/bench_gpu.py --out $OUT/bench_gpu.json

Rehearsed here on the CPU under Python 3.12.1 + torch 2.11.0 with PyAV only from that wheel
(`--cpu-smoke`): every step ran.

Steps (each in its own try: a failure is recorded under its name and the others still run; `--steps`
picks some):
  eager: frames/s of the full-size model in fp32, bf16 and fp16 autocast (channels-last model) at
         batch 64/128/256, synchronised around the timed batches; agreement of bf16/fp16 with fp32;
  compiled: the same model under torch.compile (default mode, and "reduce-overhead", which replays CUDA
         graphs) in bf16 at the largest batch, compile seconds and frames/s (GPU only);
  tensorrt: fp32 and fp16 engines (where torch_tensorrt is installed; skipped otherwise), their
         agreement with eager fp32 and fp16 frames/s;
  run_h264 / run_png: the whole `vce-stream run` on a 480x480 H.264 exam (20,000 frames) and a PNG
         folder (10,000 frames) of the synthetic renderer's pictures: frames/s of the whole process and
         of the stream itself (the run's own summary line, after the model is loaded), and the GPU's mean
         NVML utilisation (sampled every 50 ms) over the whole process and between its first and last
         busy sample (pynvml, from nvidia-ml-py, where present).
Order: the whole runs first (they measure the goal), torch.compile last (minutes, the likeliest to be
cut by a time limit); the JSON is written after the set-up and after every step.
`--cpu-smoke` runs the same steps on the CPU with the tiny model and a few frames (what the test runs).
The goal the issue sets: >= 3,000 frames/s end to end on H.264 (`stream_frames_per_s`) with the GPU
busy >= 80% of the time (`gpu_utilisation_streaming`).
Only APIs present in torch 2.11 are used.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import torch


def guarded(results: dict[str, Any], name: str, step: Callable[[], Any]) -> None:
    start = time.perf_counter()
    try:
        results[name] = {"ok": True, "result": step()}
    except Exception as exc:  # noqa: BLE001 - a benchmark step's failure is a result
        results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-1500:]}
    results[name]["seconds"] = round(time.perf_counter() - start, 2)


def frames_per_second(fn: Callable[[torch.Tensor], Any], frames: torch.Tensor, device: torch.device, repeats: int) -> float:
    fn(frames)  # warm-up (and compile)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(frames)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return repeats * frames.shape[0] / (time.perf_counter() - start)


def eager_step(model: torch.nn.Module, device: torch.device, size: int, batches: list[int], repeats: int) -> dict:
    out: dict[str, Any] = {}
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    check = torch.randint(0, 256, (min(batches), size, size, 3), dtype=torch.uint8, device=device)
    reference = None
    for name, dtype in dtypes.items():

        def run(x: torch.Tensor, dtype=dtype) -> torch.Tensor:
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                return model(x)

        try:
            probs = run(check).float()
            if reference is None:
                reference = probs
            else:
                out[f"{name}_max_abs_diff_vs_fp32"] = float((probs - reference).abs().max())
        except Exception as exc:  # noqa: BLE001 - e.g. fp16 autocast unsupported on the CPU
            out[f"{name}_max_abs_diff_vs_fp32"] = f"{type(exc).__name__}: {exc}"[:200]
        for batch in batches:
            frames = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=device)
            try:
                out[f"{name}_b{batch}"] = round(frames_per_second(run, frames, device, repeats), 1)
            except Exception as exc:  # noqa: BLE001 - e.g. fp16 autocast unsupported on the CPU
                out[f"{name}_b{batch}"] = f"{type(exc).__name__}: {exc}"[:200]
    return out


def compiled_step(model: torch.nn.Module, device: torch.device, size: int, batch: int, repeats: int) -> dict:
    """torch.compile in bf16 at one batch size: compile seconds and frames/s per mode (GPU only)."""
    if device.type != "cuda":
        return {"skipped": "cpu-smoke: torch.compile is measured on the GPU only (minutes of C++ compilation here)"}
    out: dict[str, Any] = {}
    frames = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=device)
    for mode in ("default", "reduce-overhead"):
        torch._dynamo.reset()  # each mode compiles from scratch; the previous one's graphs are freed
        try:
            compiled = torch.compile(model, mode=mode, dynamic=False)

            def run(x: torch.Tensor, compiled=compiled) -> torch.Tensor:
                with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
                    return compiled(x)

            start = time.perf_counter()
            run(frames)
            run(frames)
            torch.cuda.synchronize(device)
            out[f"{mode}_compile_s"] = round(time.perf_counter() - start, 1)
            out[f"{mode}_bf16_b{batch}"] = round(frames_per_second(run, frames, device, repeats), 1)
        except Exception as exc:  # noqa: BLE001 - a mode that fails is a result
            out[f"{mode}_error"] = f"{type(exc).__name__}: {exc}"[:300]
    return out


def tensorrt_step(bundle: Any, device: torch.device, batches: list[int], repeats: int) -> dict:
    try:
        import torch_tensorrt  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - absent or without TensorRT libraries
        return {"skipped": f"torch_tensorrt not importable: {exc}"}
    from engines.build import build_engine
    from vce_stream.engine.profile import BatchProfile
    from vce_stream.engine.select import make_scorer  # noqa: F401 - the lead's selection opens engines

    out: dict[str, Any] = {}
    profile = BatchProfile(1, max(batches), max(batches))
    for precision in ("fp32", "fp16"):
        path, manifest = build_engine(bundle, "tensorrt", precision, profile, cache_root=Path(tempfile.mkdtemp()), device=str(device))
        out[precision] = {"agreement": manifest.agreement.max_abs_diff, "tolerance": manifest.agreement.tolerance,
                          "precision_report": manifest.precision_report}  # fmt: skip
        if precision == "fp16":
            from vce_stream.engine.backends.tensorrt import TensorRTScorer

            scorer = TensorRTScorer(path / manifest.artifact, manifest.labels, profile, device)
            for batch in batches:
                frames = torch.randint(0, 256, (batch, bundle.preprocess.size, bundle.preprocess.size, 3), dtype=torch.uint8)
                out[f"fp16_b{batch}"] = round(frames_per_second(scorer.score, frames, device, repeats), 1)
    return out


class GpuBusy:
    """Share of samples (every 50 ms) where NVML reports the GPU busy; None without pynvml or CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._handle = None
        if device.type == "cuda":
            try:
                import pynvml

                pynvml.nvmlInit()
                self._nvml = pynvml
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
            except Exception:  # noqa: BLE001 - no NVML: no figure
                self._handle = None

    def __enter__(self) -> GpuBusy:
        if self._handle is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    @property
    def utilisation(self) -> float | None:
        """Mean NVML utilisation over the whole process (start-up and model loading included), 0..1.
        NVML's figure is the share of its last sample period (1/6 s to 1 s) in which a kernel ran."""
        return None if not self.samples else round(float(np.mean(self.samples)) / 100, 3)

    @property
    def utilisation_streaming(self) -> float | None:
        """Mean NVML utilisation between the first and the last busy sample: the stream, without the
        start-up and the exit, 0..1."""
        busy = np.flatnonzero(np.asarray(self.samples) > 0)
        return None if busy.size == 0 else round(float(np.mean(self.samples[busy[0] : busy[-1] + 1])) / 100, 3)

    @property
    def any_busy_share(self) -> float | None:
        """Share of samples with any kernel in NVML's period (a loose figure: 5% busy counts as busy)."""
        return None if not self.samples else round(float(np.mean(np.asarray(self.samples) > 0)), 3)


def exam_pictures(size: int, distinct: int = 24) -> list[np.ndarray]:
    """`distinct` capsule-like pictures from the synthetic renderer (rendering is the slow part: they are
    shifted per frame, so a video is not a still and a folder not one file copied)."""
    from vce_stream.synthetic import SyntheticConfig, plan_exam, render_frames

    plan = plan_exam(SyntheticConfig(frames=100, width=size, height=size, seed=3))
    return [image for _, image in zip(range(distinct), render_frames(plan))]


def picture(pictures: list[np.ndarray], i: int) -> np.ndarray:
    return np.roll(pictures[i % len(pictures)], 3 * (i // len(pictures)), axis=1)


def make_h264(path: Path, frames: int, size: int) -> Path:
    import av

    pictures = exam_pictures(size)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast"}
        for i in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture(pictures, i), format="rgb24")))
        container.mux(stream.encode(None))
    return path


def make_png_folder(folder: Path, frames: int, size: int) -> Path:
    """8-bit RGB PNGs, written on every core (OpenCV where installed, else Pillow)."""
    folder.mkdir(parents=True, exist_ok=True)
    pictures = exam_pictures(size)
    try:
        import cv2

        def write(i: int) -> None:
            cv2.imwrite(str(folder / f"frame_{i:06d}.png"), picture(pictures, i)[:, :, ::-1])
    except ImportError:
        from PIL import Image

        def write(i: int) -> None:
            Image.fromarray(picture(pictures, i)).save(folder / f"frame_{i:06d}.png")

    with ThreadPoolExecutor() as pool:
        list(pool.map(write, range(frames)))
    return folder


SUMMARY = re.compile(r": (\d+) frames, \d+ label events, ([\d.]+) s, ([\d.]+) frames/s")


def run_step(bundle_dir: Path, exam: Path, frames: int, device: torch.device, batch: int) -> dict:
    out_json = Path(tempfile.mkdtemp()) / "events.json"
    command = [sys.executable, "-m", "vce_stream.cli", "run", str(exam), "--model", str(bundle_dir), "--out", str(out_json),
               "--device", str(device), "--batch-size", str(batch)]  # fmt: skip
    with GpuBusy(device) as busy:
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"vce-stream run exited {done.returncode}: {done.stderr.strip()[-500:]}")
    summary = SUMMARY.search(done.stdout + done.stderr)
    return {"frames": frames, "seconds": round(seconds, 2), "frames_per_s": round(frames / seconds, 1),
            "stream_frames": int(summary.group(1)) if summary else None,
            "stream_seconds": float(summary.group(2)) if summary else None,
            "stream_frames_per_s": float(summary.group(3)) if summary else None,
            "gpu_utilisation": busy.utilisation, "gpu_utilisation_streaming": busy.utilisation_streaming,
            "gpu_any_busy_share": busy.any_busy_share,
            "summary_line": summary.group(0) if summary else (done.stdout + done.stderr).strip()[-300:]}  # fmt: skip


# The whole runs first: they measure the goal, and must not be lost to a slow compile at the time limit.
STEPS = ("run_h264", "run_png", "eager", "tensorrt", "compiled")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_gpu.json"))
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny model, few frames, on the CPU (a test of the script)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    args = parser.parse_args(argv)
    steps = [step for step in args.steps.split(",") if step]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps {unknown}; choose from {list(STEPS)}")

    from vce_stream.model.bundle import load_bundle
    from vce_stream.model.random_bundle import create_random_bundle

    smoke = args.cpu_smoke or not torch.cuda.is_available()
    device = torch.device("cpu" if smoke else f"cuda:{torch.cuda.current_device()}")
    preset, batches, repeats, h264_frames, png_frames, exam_size = (
        ("tiny", [4, 8], 2, 48, 48, 64) if smoke else ("biomedclip", [64, 128, 256], 10, 20000, 10000, 480)
    )
    work = Path(tempfile.mkdtemp(prefix="bench_gpu."))
    results: dict[str, Any] = {"torch": torch.__version__, "mode": "cpu-smoke" if smoke else "gpu", "python": platform.python_version()}

    def write() -> None:
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")

    def setup() -> dict[str, Any]:
        results["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
        made["bundle_dir"] = create_random_bundle(work / "bundle", preset, seed=0)
        made["bundle"] = load_bundle(made["bundle_dir"])
        model = made["bundle"].build_frame_model(device)
        made["model"] = model.to(memory_format=torch.channels_last) if device.type == "cuda" else model
        made["size"] = int(made["bundle"].preprocess.size)
        return {"device": results["device"], "preset": preset, "image_size": made["size"]}

    made: dict[str, Any] = {}
    guarded(results, "setup", setup)
    write()
    if not results["setup"]["ok"]:
        print(f"setup     FAILED: {results['setup']['error']}", flush=True)
        return results
    bundle_dir, bundle, model, size = made["bundle_dir"], made["bundle"], made["model"], made["size"]
    actions: dict[str, Callable[[], Any]] = {
        "eager": lambda: eager_step(model, device, size, batches, repeats),
        "compiled": lambda: compiled_step(model, device, size, batches[-1], repeats),
        "tensorrt": lambda: tensorrt_step(bundle, device, batches, repeats),
        "run_h264": lambda: run_step(bundle_dir, make_h264(work / "exam.mp4", h264_frames, exam_size), h264_frames, device, batches[-1]),
        "run_png": lambda: run_step(bundle_dir, make_png_folder(work / "pngs", png_frames, exam_size), png_frames, device, batches[-1]),
    }
    for name in steps:
        guarded(results, name, actions[name])
        step = results[name]
        write()  # after every step: a run stopped at its time limit keeps the steps it finished
        print(f"{name:9s} {'ok ' if step['ok'] else 'FAILED'} {step['seconds']:7.1f}s  {json.dumps(step.get('result', step.get('error')), default=str)[:400]}", flush=True)
    return results


if __name__ == "__main__":
    main()

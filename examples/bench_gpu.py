"""GPU benchmark of vce-stream: engines, eager precisions and whole runs, each step guarded, as JSON.

On a machine with an NVIDIA GPU (installs nothing; torch 2.11 or 2.14 with the project on PYTHONPATH):

    PYTHONPATH=. python3 examples/bench_gpu.py --out bench_gpu.json

Steps (each in its own try: a failure is recorded under its name and the others still run):
  eager: frames/s of the full-size model in fp32, bf16 and fp16 autocast (channels-last input) at
         batch 64/128/256, CUDA events around the scored batches;
  tensorrt: fp32 and fp16 engines (where torch_tensorrt is installed; skipped otherwise), their
         agreement with eager fp32 and fp16 frames/s;
  run_h264 / run_png: the whole `vce-stream run` on a 480x480 H.264 exam and a PNG folder, frames/s and
         the share of the run the GPU was busy (NVML utilisation sampling where pynvml exists).
`--cpu-smoke` runs the same steps on the CPU with the tiny model and a few frames (what the test runs).
Only APIs present in torch 2.11 are used.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
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
    for name, dtype in dtypes.items():
        for batch in batches:
            frames = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, device=device)

            def run(x: torch.Tensor, dtype=dtype) -> torch.Tensor:
                with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                    return model(x)

            try:
                out[f"{name}_b{batch}"] = round(frames_per_second(run, frames, device, repeats), 1)
            except Exception as exc:  # noqa: BLE001 - e.g. fp16 autocast unsupported on the CPU
                out[f"{name}_b{batch}"] = f"{type(exc).__name__}: {exc}"[:200]
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
    def busy_share(self) -> float | None:
        return None if not self.samples else float(np.mean(np.asarray(self.samples) > 0))


def make_h264(path: Path, frames: int, size: int) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        for i in range(frames):
            image = np.roll(base, i, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_png_folder(folder: Path, frames: int, size: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    base = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    for i in range(frames):
        Image.fromarray(np.roll(base, i, axis=0)).save(folder / f"frame_{i:06d}.png")
    return folder


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
    return {"frames": frames, "seconds": round(seconds, 2), "frames_per_s": round(frames / seconds, 1),
            "gpu_busy_share": busy.busy_share}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_gpu.json"))
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny model, few frames, on the CPU (a test of the script)")
    args = parser.parse_args(argv)

    from vce_stream.model.bundle import load_bundle

    from vce_stream.model.random_bundle import create_random_bundle

    smoke = args.cpu_smoke or not torch.cuda.is_available()
    device = torch.device("cpu" if smoke else f"cuda:{torch.cuda.current_device()}")
    preset, batches, repeats, exam_frames, exam_size = (
        ("tiny", [4, 8], 2, 48, 64) if smoke else ("biomedclip", [64, 128, 256], 10, 20000, 480)
    )
    work = Path(tempfile.mkdtemp(prefix="bench_gpu."))
    results: dict[str, Any] = {"torch": torch.__version__, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
                               "mode": "cpu-smoke" if smoke else "gpu", "python": platform.python_version()}  # fmt: skip
    bundle_dir = create_random_bundle(work / "bundle", preset, seed=0)
    bundle = load_bundle(bundle_dir)
    model = bundle.build_frame_model(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    size = int(bundle.preprocess.size)
    guarded(results, "eager", lambda: eager_step(model, device, size, batches, repeats))
    guarded(results, "tensorrt", lambda: tensorrt_step(bundle, device, batches, repeats))
    guarded(results, "run_h264", lambda: run_step(bundle_dir, make_h264(work / "exam.mp4", exam_frames, exam_size), exam_frames, device, batches[-1]))
    guarded(results, "run_png", lambda: run_step(bundle_dir, make_png_folder(work / "pngs", exam_frames, exam_size), exam_frames, device, batches[-1]))
    args.out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    for name in ("eager", "tensorrt", "run_h264", "run_png"):
        step = results[name]
        print(f"{name:9s} {'ok ' if step['ok'] else 'FAILED'} {step['seconds']:7.1f}s  {json.dumps(step.get('result', step.get('error')), default=str)[:300]}")
    return results


if __name__ == "__main__":
    main()

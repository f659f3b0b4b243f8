"""examples/bench_gpu.py runs end to end in --cpu-smoke mode (tiny model, CPU): every step reports,
none fails, the JSON is written; TensorRT is reported skipped where torch_tensorrt is absent."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest


@pytest.mark.slow
def test_bench_gpu_cpu_smoke_writes_every_step(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_gpu", Path(__file__).parents[1] / "examples" / "bench_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = bench.main(["--cpu-smoke", "--out", str(tmp_path / "b.json")])
    written = json.loads((tmp_path / "b.json").read_text())
    assert written["mode"] == "cpu-smoke"
    for step in ("setup", "eager", "compiled", "tensorrt", "run_h264", "run_png"):
        assert written[step]["ok"], written[step].get("error")
    assert written["eager"]["result"]["fp32_b4"] > 0
    assert written["run_png"]["result"]["frames"] == 48 and written["run_h264"]["result"]["frames_per_s"] > 0
    for step in ("run_h264", "run_png"):  # the run's own summary line was found and read
        assert written[step]["result"]["stream_frames"] == 48 and written[step]["result"]["stream_frames_per_s"] > 0
    assert results["tensorrt"]["ok"]

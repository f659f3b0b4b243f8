"""Reduced-precision TensorRT builds with a dynamic batch, proven on the CPU (no GPU, no TensorRT).

The exported low-precision program is inspected node by node; torch-tensorrt 2.14's own lowering
passes run on it where its sources are present (VCE_TORCH_TENSORRT_SOURCES: a folder made by
`pip install --no-deps --target DIR torch-tensorrt==2.14.0 dllist psutil`; see tests/torch_tensorrt_probe.py,
which runs in a subprocess because it puts a stand-in `tensorrt` module in sys.modules).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engines import tensorrt_builder
from vce_stream.engine.manifest import read_manifest, write_manifest
from vce_stream.engine.profile import BatchProfile
from vce_stream.engine.low_precision import (
    combination_errors,
    low_precision_model,
    precision_report,
    report_problems,
)
from vce_stream.model.bundle import load_bundle
from vce_stream.model.random_bundle import create_random_bundle

PROFILE = BatchProfile(1, 4, 8)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    bundle = load_bundle(create_random_bundle(tmp_path_factory.mktemp("b") / "tiny", "tiny", seed=0))
    return bundle.build_frame_model("cpu")


def _frames(n: int, size: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_low_precision_export_keeps_fp32_islands_and_low_precision_matmuls(model, precision):
    program = tensorrt_builder.export_program(low_precision_model(model, precision), PROFILE, 32)
    report = precision_report(program)
    assert report.matmul == (precision,)
    assert report.layer_norm == ("fp32",) and report.softmax == ("fp32",) and report.combination == ("fp32",)
    assert report.output == "fp32"
    assert report_problems(report, precision) == []
    with torch.no_grad():  # the dynamic batch still works, and stays close to eager fp32
        for n in (1, 5, 8):
            out = program.module()(_frames(n))
            assert out.shape[0] == n and out.dtype == torch.float32
            assert (out - model(_frames(n))).abs().max() < {"fp16": 2e-3, "bf16": 2e-2}[precision]


def test_a_naively_halved_model_is_caught_by_the_report(model):
    """`.half()` puts LayerNorm and softmax in fp16 and returns fp16 probabilities: the check must say so."""
    program = tensorrt_builder.export_program(low_precision_model(model, "fp16"), PROFILE, 32)
    assert report_problems(precision_report(program), "fp32")  # fp16 matmuls are not an fp32 engine

    class Halved(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model.classifier.half()

        def forward(self, frames):
            return torch.sigmoid(self.inner(frames.permute(0, 3, 1, 2).half()).logits)

    try:
        halved = tensorrt_builder.export_program(Halved(), PROFILE, 32)
    finally:
        model.classifier.float()
    problems = report_problems(precision_report(halved), "fp16")
    assert any("output is fp16" in p for p in problems) and any("layer norm runs in ['fp16']" in p for p in problems)


def test_the_dynamic_graph_holds_symint_meta_and_no_autocast_is_asked_for(model, tmp_path):
    """The failure mode: torch-tensorrt's rule-based autocast calls `.to` on every classified node's
    meta["val"]; a dynamic batch puts a SymInt there, which has no `.to`. The build never asks for it."""
    program = tensorrt_builder.export_program(low_precision_model(model, "fp16"), PROFILE, 32)
    symints = [n for n in program.graph.nodes if type(n.meta.get("val")).__name__ == "SymInt"]
    assert symints and not hasattr(symints[0].meta["val"], "to")
    import types

    stand_in = types.SimpleNamespace(Input=lambda **kw: kw)  # torch_tensorrt absent (mock for absent GPU stack)
    for precision in ("fp32", "fp16", "bf16"):
        kwargs = tensorrt_builder.settings_for(precision, PROFILE, 32, tmp_path / "t").compile_kwargs(stand_in, "cuda:0")
        assert kwargs["enable_autocast"] is False


def test_build_time_precision_report_is_written_and_recorded_in_the_manifest(model, tmp_path):
    from test_engines_manifest import trt_manifest  # tests/ is on sys.path under pytest

    program = tensorrt_builder.export_for_engine(model, "fp16", PROFILE, 32, "cpu", tmp_path)
    assert program.graph is not None
    report = tensorrt_builder.read_precision_report(tmp_path)
    assert report["matmul"] == ["fp16"] and report["combination"] == ["fp32"] and report["output"] == "fp32"
    manifest = trt_manifest(precision_report=report)
    write_manifest(tmp_path / "engine", manifest)
    assert read_manifest(tmp_path / "engine").precision_report == report
    assert tensorrt_builder.read_precision_report(tmp_path / "nothing") == {}


def test_fp32_islands_make_step_zero_exact_and_never_lose_to_the_folded_combination():
    for dtype in (torch.float16, torch.bfloat16):
        at_zero = combination_errors(dtype, divergence=0.0, batch=1)
        assert at_zero["fp32_islands_ratio"] < 1.05 < 1.5 < at_zero["folded_ratio"]
        trained = combination_errors(dtype, divergence=0.3, batch=1)
        assert trained["fp32_islands"] <= trained["folded"]


# Where `.ci/run` unpacks torch-tensorrt's wheel (Python sources only, no TensorRT libraries).
DEFAULT_SOURCES = Path(__file__).resolve().parent.parent / ".cache" / "torch-tensorrt"


def _sources() -> Path | None:
    folder = Path(os.environ.get("VCE_TORCH_TENSORRT_SOURCES") or DEFAULT_SOURCES)
    return folder if (folder / "torch_tensorrt" / "dynamo").is_dir() else None


@pytest.mark.slow
@pytest.mark.skipif(_sources() is None, reason="torch-tensorrt 2.14 sources absent (set VCE_TORCH_TENSORRT_SOURCES)")
def test_torch_tensorrt_own_lowering_passes_accept_the_low_precision_dynamic_program():
    probe = Path(__file__).with_name("torch_tensorrt_probe.py")
    done = subprocess.run([sys.executable, str(probe), str(_sources())], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "rule_based_autocast" not in result["passes"] and "constant_fold" in result["passes"]
    assert result["autocast"] == "AttributeError: 'SymInt' object has no attribute 'to'"  # the old way, reproduced
    for precision in ("fp32", "fp16", "bf16"):
        entry = result[precision]
        assert entry["unknown_settings"] == []  # every setting we pass is a 2.14 CompilationSettings field
        assert entry["symint_nodes"] >= 1  # still a dynamic batch after lowering
        assert entry["max_diff_vs_exported"] == 0.0
        assert report_problems(precision_report_from(entry["report"]), precision) == []
    assert result["fp16_with_features"] == {"outputs": 2, "max_diff_vs_exported": 0.0}  # the engine's two outputs


def precision_report_from(data: dict):
    from vce_stream.engine.low_precision import PrecisionReport

    return PrecisionReport(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_the_engine_program_returns_probabilities_and_unit_features_from_one_pass(tmp_path, precision):
    """What TensorRT compiles has two fp32 outputs, the same pair the PyTorch model gives
    (`forward_with_features`), so a TensorRT engine serves `run --save-embeddings` too."""
    bundle = load_bundle(create_random_bundle(tmp_path / "tiny", "tiny", seed=0))
    model = bundle.build_frame_model("cpu")
    program = tensorrt_builder.export_for_engine(model, precision, PROFILE, 32, "cpu", tmp_path)
    frames = _frames(5)
    with torch.no_grad():
        probs, features = program.module()(frames)
        ref_probs, ref_features = model.forward_with_features(frames)
    assert probs.dtype == features.dtype == torch.float32
    assert features.shape == (5, bundle.arch.feature_dim)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(5), atol=1e-5, rtol=0)
    tolerance = {"fp32": 1e-5, "fp16": 2e-2, "bf16": 5e-2}[precision]
    assert (probs - ref_probs).abs().max() <= tolerance and (features - ref_features).abs().max() <= tolerance

"""Manifests, device facts, the engine cache and the TensorRT builder's GPU-free parts.

Engines are refused when built for another bundle, device, library version or batch profile, with one
line naming the mismatch and the build-engine command that fixes it.
"""

from __future__ import annotations

import dataclasses
import json
import types

import pytest
import torch

from engines import tensorrt_builder
from vce_stream.engine.cache import cache_key, clear_cache, entry_name, find_cached, list_cached, timing_cache_path
from vce_stream.engine.backends import library_versions
from vce_stream.engine.device import DeviceFacts, cpu_facts, parse_cpuinfo
from vce_stream.engine.manifest import (
    MANIFEST_NAME,
    Agreement,
    EngineExpectation,
    EngineMismatchError,
    Manifest,
    check_engine,
    find_mismatches,
    read_manifest,
    write_manifest,
)
from vce_stream.engine.profile import BatchProfile
from vce_stream.errors import InputError, VceError
from vce_stream.labels import LABELS
from vce_stream.engine.backends.pytorch import torch_scorer

L4 = DeviceFacts(kind="cuda", name="NVIDIA L4", capability="8.9", sm_count=58)
A100 = DeviceFacts(kind="cuda", name="NVIDIA A100-SXM4-80GB", capability="8.0", sm_count=108)
TRT_VERSIONS = {"torch": "2.14.1", "torch_tensorrt": "2.14.0", "tensorrt": "11.0.0.4", "cuda": "13.0", "driver": "13.0"}
HASH = "ab" * 32


def trt_manifest(**changes) -> Manifest:
    manifest = Manifest(
        backend="tensorrt", precision="fp16", profile=BatchProfile(1, 16, 32), bundle_hash=HASH, labels=LABELS,
        image_size=224, device=L4, versions=TRT_VERSIONS, agreement=Agreement(0.004, 0.02, 33),
        artifact=tensorrt_builder.ARTIFACT, artifact_sha256="cd" * 32, artifact_bytes=1234, created="2026-01-01T00:00:00+00:00",
    )  # fmt: skip
    return dataclasses.replace(manifest, **changes)


def expectation(**changes) -> EngineExpectation:
    return dataclasses.replace(EngineExpectation(HASH, LABELS, L4, dict(TRT_VERSIONS), batch_size=16), **changes)


CPUINFO = """processor\t: 0
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse4_2 avx avx2 fma hypervisor avx512f avx512_vnni
processor\t: 1
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse4_2 avx avx2 fma hypervisor avx512f avx512_vnni
"""


def test_cpu_facts_keep_the_model_name_and_the_relevant_instruction_sets():
    name, isa = parse_cpuinfo(CPUINFO)
    assert name == "AMD EPYC 9654 96-Core Processor"
    assert isa == ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni")  # no "hypervisor", no "fpu"
    assert parse_cpuinfo("Features\t: fp asimd asimddp sve\nHardware\t: Graviton")[1] == ("asimd", "asimddp", "sve")
    here = cpu_facts()
    assert here.kind == "cpu" and here.name and here.capability is None


def test_library_versions_name_what_each_backend_depends_on():
    assert set(library_versions("onnxruntime")) >= {"torch", "onnxruntime", "onnx"}
    assert library_versions("torch") == {"torch": torch.__version__}


def test_manifest_round_trips_through_its_json_file(tmp_path):
    manifest = trt_manifest(options={"note": 1})
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest
    assert json.loads((tmp_path / MANIFEST_NAME).read_text())["device"]["sm_count"] == 58


def test_a_missing_or_broken_manifest_is_an_input_error_naming_the_directory(tmp_path):
    with pytest.raises(InputError, match="not an engine directory"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(InputError, match="unreadable manifest"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"format_version": 99}))
    with pytest.raises(InputError, match="format 99"):
        read_manifest(tmp_path)


def test_a_fitting_engine_has_no_mismatches():
    assert find_mismatches(trt_manifest(), expectation()) == []
    # The driver is recorded, not required: a newer driver runs older engines.
    assert find_mismatches(trt_manifest(), expectation(versions={**TRT_VERSIONS, "driver": "13.1"})) == []


@pytest.mark.parametrize(
    ("changes", "phrase"),
    [
        ({"bundle_hash": "cd" * 32}, "built for another bundle (abababababab, this bundle is cdcdcdcdcdcd)"),
        ({"device": A100}, "built for NVIDIA L4 (sm 8.9, 58 SMs), this machine has NVIDIA A100-SXM4-80GB (sm 8.0, 108 SMs)"),
        ({"versions": {**TRT_VERSIONS, "tensorrt": "11.1.0.2"}}, "built with tensorrt 11.0.0.4, this machine has tensorrt 11.1.0.2"),
    ],
)
def test_a_changed_bundle_device_or_version_is_refused_with_the_fixing_command(tmp_path, changes, phrase):
    with pytest.raises(EngineMismatchError) as info:
        check_engine(tmp_path / "eng", trt_manifest(), expectation(**changes), bundle_path="bundles/vce")
    message = str(info.value)
    assert "\n" not in message and phrase in message
    assert message.startswith(f"engine {tmp_path / 'eng'} cannot be used: ")
    assert message.endswith(
        f"rebuild it with: vce-stream build-engine --model bundles/vce --backend tensorrt --precision fp16 --batch 1,16,32 --out {tmp_path / 'eng'}"
    )


def test_a_run_batch_outside_the_profile_is_no_mismatch_since_the_runner_pads_or_splits():
    assert find_mismatches(trt_manifest(), expectation(batch_size=64)) == []
    assert find_mismatches(trt_manifest(), expectation(batch_size=1)) == []


def test_cache_key_changes_with_everything_that_makes_an_engine_reusable():
    base = dict(bundle_hash=HASH, backend="tensorrt", precision="fp16", profile=BatchProfile(1, 16, 32), device=L4, versions=TRT_VERSIONS)
    key = cache_key(**base)
    assert cache_key(**base) == key and len(key) == 16
    variants = [
        {"bundle_hash": "cd" * 32}, {"precision": "fp32"}, {"profile": BatchProfile(1, 8, 32)}, {"device": A100},
        {"versions": {**TRT_VERSIONS, "tensorrt": "11.1"}}, {"backend": "onnxruntime"},
    ]  # fmt: skip
    keys = {cache_key(**{**base, **change}) for change in variants}
    assert key not in keys and len(keys) == len(variants)
    assert cache_key(**{**base, "versions": {**TRT_VERSIONS, "driver": "99"}}) == key  # driver not required
    assert entry_name("tensorrt", "fp16", BatchProfile(1, 16, 32), key) == f"tensorrt-fp16-b1-16-32-{key}"
    assert timing_cache_path("/c", L4, TRT_VERSIONS) != timing_cache_path("/c", A100, TRT_VERSIONS)


def test_cache_lists_finds_the_best_fit_and_clears_only_engine_directories(tmp_path):
    exact = trt_manifest()
    wide = trt_manifest(profile=BatchProfile(1, 8, 64))
    other_bundle = trt_manifest(bundle_hash="cd" * 32)
    for name, manifest in (("a-wide", wide), ("b-exact", exact), ("c-other", other_bundle)):
        write_manifest(tmp_path / name, manifest)
        (tmp_path / name / tensorrt_builder.ARTIFACT).write_bytes(b"engine")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / MANIFEST_NAME).write_text("[]")
    (tmp_path / "user-notes").mkdir()
    (tmp_path / "user-notes" / "keep.txt").write_text("mine")

    entries = {e.path.name: e for e in list_cached(tmp_path)}
    assert entries["broken"].manifest is None and "not a JSON object" in entries["broken"].problem
    found = find_cached(tmp_path, expectation(), "tensorrt")
    assert [p.name for p, _ in found] == ["b-exact", "a-wide"]  # opt == batch size first
    assert find_cached(tmp_path, expectation(), "tensorrt", precision="fp32") == []

    removed = clear_cache(tmp_path, bundle_hash="cdcd")
    assert [p.name for p in removed] == ["c-other"]
    removed = clear_cache(tmp_path)
    assert sorted(p.name for p in removed) == ["a-wide", "b-exact", "broken"]
    assert (tmp_path / "user-notes" / "keep.txt").read_text() == "mine"


# --- TensorRT: what runs without a GPU ----------------------------------------------------------------


class TinyFrameModel(torch.nn.Module):
    """uint8 frames -> probabilities, normalisation inside (the shape of FrameProbabilityModel)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 4, stride=4)
        self.head = torch.nn.Linear(8, len(LABELS))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2).float() / 255.0 - 0.5
        return torch.sigmoid(self.head(self.conv(x).mean(dim=(2, 3))))


def test_tensorrt_export_has_a_dynamic_batch_over_the_profile():
    model = TinyFrameModel().eval()
    profile = BatchProfile(1, 4, 8)
    program = tensorrt_builder.export_program(model, profile, image_size=16)
    placeholder = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name not in program.graph_signature.inputs_to_parameters)
    batch = placeholder.meta["val"].shape[0]
    assert not isinstance(batch, int)  # symbolic
    ranges = program.range_constraints[batch.node.expr]
    assert (int(ranges.lower), int(ranges.upper)) == (1, 8)
    for size in (1, 5, 8):
        frames = torch.randint(0, 256, (size, 16, 16, 3), dtype=torch.uint8)
        assert torch.allclose(program.module()(frames), model(frames), atol=1e-6)


def test_tensorrt_settings_shapes_and_refused_precisions(tmp_path):
    fp16 = tensorrt_builder.settings_for("fp16", BatchProfile(2, 16, 32), 224, tmp_path / "t.bin")
    assert fp16.input_shapes == ((2, 224, 224, 3), (16, 224, 224, 3), (32, 224, 224, 3))
    with pytest.raises(ValueError):
        tensorrt_builder.settings_for("int8", BatchProfile(), 224, "t")


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_tensorrt_compile_kwargs_with_mock_torch_tensorrt_input(tmp_path, precision):
    """torch_tensorrt is absent here: a stand-in records what `Input` is given (mock for absent GPU stack).
    No autocast (it dies on a dynamic batch), TF32 off for every precision, fp32 accumulation for fp16,
    and only names torch-tensorrt 2.14's compile knows."""
    recorded = []
    stand_in = types.SimpleNamespace(Input=lambda **kw: recorded.append(kw) or kw)
    settings = tensorrt_builder.settings_for(precision, BatchProfile(1, 8, 16), 32, tmp_path / "timing.bin")
    kwargs = settings.compile_kwargs(stand_in, torch.device("cuda:0"))
    assert recorded == [{"min_shape": (1, 32, 32, 3), "opt_shape": (8, 32, 32, 3), "max_shape": (16, 32, 32, 3), "dtype": torch.uint8, "name": "frames"}]
    assert kwargs["enable_autocast"] is False and "autocast_low_precision_type" not in kwargs
    assert kwargs["disable_tf32"] is True
    assert kwargs["use_fp32_acc"] is (precision == "fp16")
    assert kwargs["timing_cache_path"] == str(tmp_path / "timing.bin")
    assert not {"enabled_precisions", "use_explicit_typing"} & set(kwargs)  # gone in 2.14
    assert set(kwargs) <= tensorrt_builder.COMPILE_OPTIONS_2_14


def test_unknown_compile_options_fail_loudly_instead_of_being_swallowed():
    with pytest.raises(ValueError, match="use_explicit_typing"):
        tensorrt_builder.check_compile_options({"use_explicit_typing": True})

    def compile_2_14(exported_program, inputs=None, *, device=None, disable_tf32=False, **kwargs):  # the shape of 2.14's
        return None

    with pytest.raises(ValueError, match="use_fp32_acc"):  # known to us, absent from this signature
        tensorrt_builder.check_compile_options({"device": "cuda:0", "use_fp32_acc": True}, compile_2_14)
    tensorrt_builder.check_compile_options({"device": "cuda:0", "disable_tf32": True}, compile_2_14)


def test_engine_layer_report_precisions_are_read_and_checked():
    report = json.dumps({"Layers": [
        {"Name": "a", "Inputs": [{"Format/Datatype": "Row major linear FP32"}], "Outputs": [{"Format/Datatype": "Half"}]},
        {"Name": "b", "Inputs": [{"Format/Datatype": "Row major Half format"}]},
    ]})  # fmt: skip
    assert tensorrt_builder.layer_precisions(report) == {"fp16"}
    assert tensorrt_builder.layer_precisions(json.dumps({"Layers": ["a", "b"]})) == set()
    assert tensorrt_builder.precision_problems("fp16", {"fp16", "fp32"}) == []
    assert tensorrt_builder.precision_problems("fp16", {"fp32"}) == ["fp16 engine has no fp16 layers (found ['fp32'])"]
    assert tensorrt_builder.precision_problems("fp32", {"fp32", "fp16"})
    assert tensorrt_builder.precision_problems("fp32", set()) == []  # no detailed report: no verdict


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_tensorrt_engine_is_refused_where_there_is_no_cuda(tmp_path):
    from vce_stream.engine.select import choose_engine
    from vce_stream.model.bundle import load_bundle
    from vce_stream.model.random_bundle import create_random_bundle

    bundle = load_bundle(create_random_bundle(tmp_path / "bundle", "tiny", seed=0))
    write_manifest(tmp_path / "engine", trt_manifest(bundle_hash=bundle.content_hash, labels=bundle.labels))
    with pytest.raises(VceError, match="tensorrt engines need a CUDA device"):
        choose_engine(bundle, engine_dir=tmp_path / "engine")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_tensorrt_engine_builds_and_agrees_with_pytorch_on_gpu(tmp_path):
    pytest.importorskip("torch_tensorrt")
    from engines.build import build_engine
    from vce_stream.engine.select import make_scorer
    from vce_stream.model.bundle import load_bundle
    from vce_stream.model.random_bundle import create_random_bundle

    bundle = load_bundle(create_random_bundle(tmp_path / "bundle", "tiny"))
    for precision in ("fp32", "fp16"):
        path, manifest = build_engine(bundle, "tensorrt", precision, BatchProfile(1, 4, 8), cache_root=tmp_path / "cache", device="cuda")
        assert manifest.agreement.max_abs_diff <= manifest.agreement.tolerance
        scorer = make_scorer(bundle, "tensorrt", engine_dir=path, device="cuda", batch_size=4)
        frames = torch.randint(0, 256, (11, 32, 32, 3), dtype=torch.uint8)
        reference = torch_scorer(bundle, "cuda").score(frames)
        assert abs(scorer.score(frames) - reference).max() <= manifest.agreement.tolerance

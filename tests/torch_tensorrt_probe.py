"""Run torch-tensorrt 2.14's own lowering passes on the CPU (a script; tests run it in a subprocess).

torch-tensorrt cannot be imported on a machine without TensorRT's libraries (its `__init__` loads
libnvinfer), and TensorRT's wheels cannot be installed without a GPU driver. Its lowering passes are
pure torch.fx code, so this loads them from the unpacked wheel (`pip install --no-deps --target DIR
torch-tensorrt==2.14.0 dllist psutil`, 4.3 MB) with: torch_tensorrt's package `__init__`s skipped, a
stand-in `tensorrt` module (attributes are inert placeholders: only enums and type names are touched at
import), the runtime package (engine execution) replaced by a stand-in, and the platform probes that
query CUDA at import answered "no". The passes themselves, the CompilationSettings, the decomposition
table and the pass order are torch-tensorrt's, unchanged. Usage: python torch_tensorrt_probe.py DIR
prints one JSON object.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import sys
import tempfile
import types
from pathlib import Path


def _placeholder(name: str) -> type:
    class Meta(type):
        def __getattr__(cls, item: str):
            if item.startswith("__"):
                raise AttributeError(item)
            value = _placeholder(f"{name}.{item}")
            type.__setattr__(cls, item, value)
            return value

        def __call__(cls, *args, **kwargs):
            return _placeholder(f"{name}()")

        def __iter__(cls):
            return iter(())

        def __or__(cls, other):
            return cls

        __ror__ = __or__

        def __int__(cls):
            return 0

        def __hash__(cls):
            return hash(name)

        def __eq__(cls, other):
            return cls is other

        def __lt__(cls, other):
            return False

    return Meta(name, (), {})


class _StandIn(types.ModuleType):
    __version__ = "11.1.0.106"

    def __getattr__(self, item: str):
        if item.startswith("__"):
            raise AttributeError(item)
        value = _placeholder(f"{self.__name__}.{item}")
        setattr(self, item, value)
        return value


def _package(name: str, path: list[str], cls: type = types.ModuleType) -> types.ModuleType:
    module = cls(name)
    module.__path__ = path
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    sys.modules[name] = module
    return module


def load(root: Path):
    sys.path.append(str(root))
    for name in ("tensorrt", "tensorrt_bindings"):
        stand_in = _package(name, [], _StandIn)
        stand_in.tensorrt = stand_in  # `trt.tensorrt.ITensor` is `trt.ITensor`
    for name in ("torch_tensorrt", "torch_tensorrt.dynamo", "torch_tensorrt.dynamo.lowering", "torch_tensorrt.dynamo.lowering.passes"):
        _package(name, [str(root / name.replace(".", "/"))])
    _package("torch_tensorrt.dynamo.runtime", [], _StandIn)
    utils = importlib.import_module("torch_tensorrt._utils")
    for probe in ("load_tensorrt_llm_for_nccl", "is_tegra_platform", "is_thor"):
        setattr(utils, probe, lambda *a, **k: False)
    top = sys.modules["torch_tensorrt"]
    top.ENABLED_FEATURES = importlib.import_module("torch_tensorrt._features").ENABLED_FEATURES
    enums = importlib.import_module("torch_tensorrt._enums")
    for name in ("dtype", "DeviceType", "EngineCapability", "memory_format"):
        setattr(top, name, getattr(enums, name))
    top.Input = importlib.import_module("torch_tensorrt._Input").Input
    defaults = importlib.import_module("torch_tensorrt.dynamo._defaults")
    top.Device = importlib.import_module("torch_tensorrt._Device").Device
    defaults.default_device = lambda: top.Device("cuda:0")  # the real one asks CUDA for its index
    passes = importlib.import_module("torch_tensorrt.dynamo.lowering.passes._aten_lowering_pass")
    decompositions = importlib.import_module("torch_tensorrt.dynamo.lowering._decompositions")
    settings = importlib.import_module("torch_tensorrt.dynamo._settings")
    return passes, decompositions, settings


def lower(passes, decompositions, settings_module, program, options: dict):
    """torch_tensorrt.dynamo.compile's lowering, in its order, up to (not including) conversion."""
    settings = settings_module.CompilationSettings(**options)
    program = passes.pre_export_lowering(program, settings)
    program = program.run_decompositions(
        decompositions.get_decompositions(
            settings.enable_experimental_decompositions, settings.decompose_attention,
            settings.use_distributed_mode_trace, use_fp32_acc=settings.use_fp32_acc,
        )
    )  # fmt: skip
    return passes.post_lowering(program.module(), settings)


def main(root: str) -> None:
    import torch

    from engines import tensorrt_builder
    from vce_stream.engine.profile import BatchProfile
    from vce_stream.engine.low_precision import low_precision_model, precision_report
    from vce_stream.model.bundle import load_bundle
    from vce_stream.model.random_bundle import create_random_bundle

    passes, decompositions, settings_module = load(Path(root))
    fields = set(settings_module.CompilationSettings.__dataclass_fields__)
    bundle = load_bundle(create_random_bundle(Path(tempfile.mkdtemp()) / "tiny", "tiny", seed=0))
    model = bundle.build_frame_model("cpu")
    profile, size = BatchProfile(1, 4, 8), int(bundle.preprocess.size)
    frames = torch.randint(0, 256, (3, size, size, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    result: dict = {"passes": [p.__name__ for p in passes.ATEN_POST_LOWERING_PASSES.passes]}

    # The old way: fp32 program, rule-based autocast to fp16, dynamic batch.
    try:
        lower(passes, decompositions, settings_module, tensorrt_builder.export_program(model, profile, size),
              {"enable_autocast": True, "autocast_low_precision_type": torch.float16})  # fmt: skip
        result["autocast"] = "ok"
    except Exception as exc:  # noqa: BLE001 - the failure is the finding
        result["autocast"] = f"{type(exc).__name__}: {exc}"

    for precision in ("fp32", "fp16", "bf16"):
        program = tensorrt_builder.export_program(low_precision_model(model, precision), profile, size)
        kwargs = tensorrt_builder.settings_for(precision, profile, size, "t").compile_kwargs(
            types.SimpleNamespace(Input=lambda **kw: kw), torch.device("cuda:0"))  # fmt: skip
        options = {k: v for k, v in kwargs.items() if k not in ("inputs", "device")}
        entry = {"unknown_settings": sorted(set(options) - fields)}
        lowered = lower(passes, decompositions, settings_module, program, options)
        with torch.no_grad():
            entry["max_diff_vs_exported"] = float((lowered(frames) - program.module()(frames)).abs().max())
            entry["max_diff_vs_fp32_eager"] = float((lowered(frames) - model(frames)).abs().max())
        entry["report"] = precision_report(lowered).as_dict()
        entry["symint_nodes"] = sum(type(n.meta.get("val")).__name__ == "SymInt" for n in lowered.graph.nodes)
        result[precision] = entry

    # The program an engine is built from: two outputs (probabilities, unit features), fp16.
    both = tensorrt_builder.export_program(low_precision_model(model, "fp16", with_features=True), profile, size)
    kwargs = tensorrt_builder.settings_for("fp16", profile, size, "t").compile_kwargs(
        types.SimpleNamespace(Input=lambda **kw: kw), torch.device("cuda:0"))  # fmt: skip
    lowered = lower(passes, decompositions, settings_module, both, {k: v for k, v in kwargs.items() if k not in ("inputs", "device")})
    with torch.no_grad():
        mine, theirs = lowered(frames), both.module()(frames)
    result["fp16_with_features"] = {
        "outputs": len(mine),
        "max_diff_vs_exported": max(float((a - b).abs().max()) for a, b in zip(mine, theirs)),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])

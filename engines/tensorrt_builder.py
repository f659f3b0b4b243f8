"""TensorRT engines through torch-tensorrt: `torch.export` with a dynamic batch, then the dynamo
compile path with a min/opt/max profile, saved as an ExportedProgram that reloads without building.

Kept thin on purpose: everything that does not need a GPU (the export with a dynamic batch, the
compile settings, reading precisions out of the engine's layer report) is plain code tested on the
CPU; the calls into torch_tensorrt are a few lines that run only where CUDA and TensorRT exist.

Precision (torch-tensorrt 2.14 / TensorRT 11: networks are always strongly typed; there is no
`enabled_precisions` and no `use_explicit_typing` any more, and `compile(**kwargs)` silently swallows
unknown names, so every setting passed here is checked against 2.14's own parameter list):
- fp16/bf16: the model is lowered *before* export (`vce_stream.engine.low_precision`): weights and
  matrix products in the low precision, LayerNorm, softmax and the differential combination in fp32,
  written as casts in the graph. `enable_autocast` stays False: 2.14's rule-based autocast dies on the
  SymInt of a dynamic batch (`'SymInt' object has no attribute 'to'`, reproduced in
  tests/test_tensorrt_lowering.py with torch-tensorrt's own passes). fp16 asks for fp32 accumulation
  (`use_fp32_acc`). The exported program's precision report is checked before compiling and written to
  the engine directory (`PRECISION_REPORT`), and from there into the manifest.
- fp32 and the fp32 islands: `disable_tf32=True`. TF32 has a 10-bit mantissa; an "fp32" engine that
  runs TF32 differs from eager fp32 by ~1e-3, so its agreement check (tolerance 1e-4) would fail or
  mean nothing. fp32 engines are the exact reference; speed is what fp16/bf16 engines are for.

The saved program embeds torch-tensorrt's own serialised engine metadata (which it pickles): load
only engines you built yourself, as the engine cache does.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engines import Builder, register_builder
from vce_stream.engine.profile import BatchProfile
from vce_stream.engine.low_precision import low_precision_model, precision_report, report_problems

PRECISION_REPORT = "precision_report.json"
# The keyword parameters of torch_tensorrt.dynamo.compile in 2.14 that this module may pass (a subset
# of its signature; checked against the installed signature at build time as well).
COMPILE_OPTIONS_2_14 = frozenset({
    "inputs", "arg_inputs", "device", "disable_tf32", "min_block_size", "optimization_level",
    "timing_cache_path", "use_fp32_acc", "enable_autocast", "autocast_low_precision_type",
    "autocast_excluded_ops", "autocast_excluded_nodes", "truncate_double", "require_full_compilation",
})  # fmt: skip

ARTIFACT = "model.trt.ep"
LOW_PRECISION = {"fp16": torch.float16, "bf16": torch.bfloat16}
# TensorRT's names for tensor formats in the engine inspector's layer report.
DATATYPE_NAMES = {"Float": "fp32", "Half": "fp16", "BFloat16": "bf16", "Int8": "int8", "FP8": "fp8", "UInt8": "uint8"}


@dataclass(frozen=True)
class TensorRTSettings:
    """The compile settings of one engine, as plain data (tested without TensorRT).

    min_block_size: smallest subgraph handed to TensorRT (1: everything TensorRT can run, such as the
    uint8 -> float cast, runs in the engine). optimization_level: TensorRT builder effort (0-5).
    """

    input_shapes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    precision: str
    timing_cache_path: str
    min_block_size: int = 1
    optimization_level: int = 3

    def compile_kwargs(self, torch_tensorrt: Any, device: torch.device) -> dict[str, Any]:
        """Keyword arguments of `torch_tensorrt.dynamo.compile` for these settings (see the module
        docstring: no autocast, TF32 off, fp32 accumulation for fp16)."""
        kwargs: dict[str, Any] = {
            "inputs": [
                torch_tensorrt.Input(
                    min_shape=self.input_shapes[0], opt_shape=self.input_shapes[1], max_shape=self.input_shapes[2],
                    dtype=torch.uint8, name="frames",
                )  # fmt: skip
            ],
            "device": device,
            "enable_autocast": False,
            "disable_tf32": True,
            "use_fp32_acc": self.precision == "fp16",
            "min_block_size": self.min_block_size,
            "optimization_level": self.optimization_level,
            "timing_cache_path": self.timing_cache_path,
        }
        check_compile_options(kwargs)
        return kwargs


def check_compile_options(kwargs: dict[str, Any], compile_fn: Any = None) -> None:
    """Raise ValueError for a keyword 2.14's compile does not know (it would swallow it silently).

    `compile_fn`: the installed `torch_tensorrt.dynamo.compile`, whose named parameters are checked too."""
    unknown = sorted(set(kwargs) - COMPILE_OPTIONS_2_14)
    if compile_fn is not None:
        params = inspect.signature(compile_fn).parameters
        named = {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
        unknown = sorted(set(unknown) | (set(kwargs) - named))
    if unknown:
        raise ValueError(f"torch_tensorrt.dynamo.compile does not take {unknown}; it would ignore them silently")


def settings_for(precision: str, profile: BatchProfile, image_size: int, timing_cache_path: str | Path) -> TensorRTSettings:
    if precision not in ("fp32", *LOW_PRECISION):
        raise ValueError(f"tensorrt engines are fp32, fp16 or bf16, not {precision}")
    frame = (image_size, image_size, 3)
    shapes = ((profile.min, *frame), (profile.opt, *frame), (profile.max, *frame))
    return TensorRTSettings(input_shapes=shapes, precision=precision, timing_cache_path=str(timing_cache_path))


def export_program(
    model: torch.nn.Module, profile: BatchProfile, image_size: int, device: torch.device | str = "cpu"
) -> torch.export.ExportedProgram:
    """`torch.export` of the frame model with the batch axis dynamic over the profile's range."""
    example_batch = min(max(profile.opt, 2), profile.max)
    example = torch.randint(0, 256, (example_batch, image_size, image_size, 3), dtype=torch.uint8, device=device)
    if profile.min == profile.max:
        dynamic_shapes = None  # a fixed-batch profile is a static engine
    else:
        dynamic_shapes = ({0: torch.export.Dim("batch", min=profile.min, max=profile.max)},)
    return torch.export.export(model.eval(), (example,), dynamic_shapes=dynamic_shapes, strict=False)


def build(
    model: torch.nn.Module, out_dir: Path, precision: str, profile: BatchProfile, image_size: int,
    device: torch.device, timing_cache_path: Path,
) -> str:  # fmt: skip
    """Compile and save the engine into `out_dir`; returns its file name. Needs CUDA and torch_tensorrt."""
    import torch_tensorrt

    settings = settings_for(precision, profile, image_size, timing_cache_path)
    Path(timing_cache_path).parent.mkdir(parents=True, exist_ok=True)
    program = export_for_engine(model.to(device).eval(), precision, profile, image_size, device, out_dir)
    kwargs = settings.compile_kwargs(torch_tensorrt, device)
    check_compile_options(kwargs, torch_tensorrt.dynamo.compile)
    compiled = torch_tensorrt.dynamo.compile(program, **kwargs)
    torch_tensorrt.save(compiled, str(out_dir / ARTIFACT), output_format="exported_program", arg_inputs=kwargs["inputs"], retrace=True)
    return ARTIFACT


def export_for_engine(
    model: torch.nn.Module, precision: str, profile: BatchProfile, image_size: int, device: torch.device | str,
    out_dir: Path,
) -> torch.export.ExportedProgram:  # fmt: skip
    """The program TensorRT compiles: `model` lowered to `precision` (fp32 islands), exported with the
    dynamic batch and two outputs (probabilities, unit image features: one pass serves `run
    --save-embeddings`); its precision report is checked and written to `out_dir / PRECISION_REPORT`."""
    program = export_program(low_precision_model(model, precision, with_features=True), profile, image_size, device)
    report = precision_report(program)
    problems = report_problems(report, precision)
    if problems:
        raise ValueError(f"the exported {precision} program is not what it claims: {'; '.join(problems)}")
    (Path(out_dir) / PRECISION_REPORT).write_text(json.dumps(report.as_dict(), sort_keys=True) + "\n", encoding="utf-8")
    return program


def read_precision_report(engine_dir: Path) -> dict[str, Any]:
    """The report `export_for_engine` wrote ({} when there is none)."""
    path = Path(engine_dir) / PRECISION_REPORT
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def layer_precisions(layer_info: str) -> set[str]:
    """Precisions ("fp32", "fp16", ...) named in a TensorRT engine-inspector JSON report (detailed
    verbosity); empty when the report carries only layer names."""
    try:
        report = json.loads(layer_info)
    except (json.JSONDecodeError, TypeError):
        return set()
    found: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("Format/Datatype", "Datatype") and isinstance(value, str):
                    found.update(name for word, name in DATATYPE_NAMES.items() if word in value.split())
                else:
                    visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(report)
    return found


def precision_problems(precision: str, precisions: set[str]) -> list[str]:
    """Whether the engine's layer precisions show the requested precision (unknown report: no verdict)."""
    if not precisions:
        return []
    if precision == "fp32" and precisions & {"fp16", "bf16", "int8", "fp8"}:
        return [f"fp32 engine runs layers in {sorted(precisions & {'fp16', 'bf16', 'int8', 'fp8'})}"]
    if precision in LOW_PRECISION and precision not in precisions:
        return [f"{precision} engine has no {precision} layers (found {sorted(precisions)})"]
    return []


def verify(path: Path, precision: str) -> list[str]:
    """Problems with a saved engine: it must hold at least one TensorRT engine, in the requested precision."""
    import torch_tensorrt

    module = torch_tensorrt.load(str(path)).module()
    engines = [m for m in module.modules() if hasattr(m, "get_layer_info")]
    calls = [n for n in module.graph.nodes if n.op == "call_function" and "execute_engine" in str(n.target)]
    if not engines and not calls:
        return ["no TensorRT engine in the compiled program (everything fell back to PyTorch)"]
    problems = []
    for engine in engines:
        try:
            problems += precision_problems(precision, layer_precisions(engine.get_layer_info()))
        except RuntimeError:
            continue
    return problems


register_builder(
    Builder(
        backend="tensorrt",
        build=lambda model, workdir, precision, profile, image_size, context: build(
            model, workdir, precision, profile, image_size, context.device, context.timing_cache
        ),
        verify=lambda path, precision, image_size: verify(path, precision),
        report=read_precision_report,
    )
)

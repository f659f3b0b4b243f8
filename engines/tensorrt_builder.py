"""TensorRT engines through torch-tensorrt: `torch.export` with a dynamic batch, then the dynamo
compile path with a min/opt/max profile, saved as an ExportedProgram that reloads without building.

Kept thin on purpose: everything that does not need a GPU (the export with a dynamic batch, the
compile settings, reading precisions out of the engine's layer report) is plain code tested on the
CPU; the calls into torch_tensorrt are a few lines that run only where CUDA and TensorRT exist.

Precision: TensorRT 11 removed the fp16/int8 builder flags, so reduced precision is explicit typing
(`use_explicit_typing=True`) with torch-tensorrt's rule-based autocast (`enable_autocast=True`,
`autocast_low_precision_type`), which keeps reductions and numerically sensitive layers in fp32.

The saved program embeds torch-tensorrt's own serialised engine metadata (which it pickles): load
only engines you built yourself, as the engine cache does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engines import Builder, register_builder
from vce_stream.engine.profile import BatchProfile

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
    use_explicit_typing: bool = True
    min_block_size: int = 1
    optimization_level: int = 3

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return LOW_PRECISION.get(self.precision)

    def compile_kwargs(self, torch_tensorrt: Any, device: torch.device) -> dict[str, Any]:
        """Keyword arguments of `torch_tensorrt.dynamo.compile` for these settings."""
        kwargs: dict[str, Any] = {
            "inputs": [
                torch_tensorrt.Input(
                    min_shape=self.input_shapes[0], opt_shape=self.input_shapes[1], max_shape=self.input_shapes[2],
                    dtype=torch.uint8, name="frames",
                )  # fmt: skip
            ],
            "device": device,
            "use_explicit_typing": self.use_explicit_typing,
            "min_block_size": self.min_block_size,
            "optimization_level": self.optimization_level,
            "timing_cache_path": self.timing_cache_path,
        }
        if self.autocast_dtype is not None:
            kwargs["enable_autocast"] = True
            kwargs["autocast_low_precision_type"] = self.autocast_dtype
        return kwargs


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
    model = model.to(device).eval()
    program = export_program(model, profile, image_size, device)
    compiled = torch_tensorrt.dynamo.compile(program, **settings.compile_kwargs(torch_tensorrt, device))
    inputs = settings.compile_kwargs(torch_tensorrt, device)["inputs"]
    torch_tensorrt.save(compiled, str(out_dir / ARTIFACT), output_format="exported_program", arg_inputs=inputs, retrace=True)
    return ARTIFACT


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
    )
)

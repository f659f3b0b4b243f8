"""ONNX Runtime engines: the bundle's frame model exported to ONNX with a dynamic batch axis, run on
the CPU in fp32 or dynamically quantised int8.

The exported graph is the whole `FrameProbabilityModel`: uint8 frames (B, H, W, 3) in, probabilities
(B, L) out, normalisation and sigmoid inside, so the engine reads a quarter of the bytes float input
would need. int8 is `onnxruntime.quantization.quantize_dynamic`: weights of every MatMul with a
constant right-hand side (the linear layers, almost all of a ViT's work) become int8, activations are
quantised per batch at run time; attention's activation-by-activation MatMuls stay fp32.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from engines import Builder, register_builder
from vce_stream.engine.profile import BatchProfile

ARTIFACTS = {"fp32": "model.onnx", "int8": "model.int8.onnx"}


@dataclass(frozen=True)
class OnnxBuildConfig:
    """input_name / output_name: graph tensor names. per_channel: int8 weight scales per output
    channel instead of per tensor (ONNX Runtime's default is per tensor; on ViT-B/16 per channel
    measured ~10% slower for no gain in agreement with random weights). int8_ops: node types whose
    weights are quantised."""

    input_name: str = "frames"
    output_name: str = "probs"
    features_name: str = "features"  # the second output: unit image features (run --save-embeddings)
    per_channel: bool = False
    int8_ops: tuple[str, ...] = ("MatMul", "Gemm")


def export_onnx(
    model: torch.nn.Module, path: str | Path, profile: BatchProfile, image_size: int, config: OnnxBuildConfig = OnnxBuildConfig()
) -> Path:
    """Export `model` (uint8 (B, S, S, 3) -> probs, unit features) with the dynamo exporter; the batch
    axis stays symbolic ("batch"), everything else is fixed by `image_size`. A FrameProbabilityModel is
    exported with both outputs from its one backbone pass (`with_features`), so the engine serves
    `run --save-embeddings` at no extra cost."""
    path = Path(path)
    two_outputs = hasattr(model, "forward_with_features")
    if two_outputs:
        model = copy.copy(model)  # shares the weights; only the export's output flag differs
        model.with_features = True
    example_batch = max(2, min(profile.opt, 4))  # a batch of 1 would be specialised away by torch.export
    example = torch.randint(0, 256, (example_batch, image_size, image_size, 3), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=max(profile.max, example_batch))
    with _quiet():
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            input_names=[config.input_name],
            output_names=[config.output_name, config.features_name] if two_outputs else [config.output_name],
            dynamic_shapes=({0: batch},),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return path


def quantize_int8(src: str | Path, dst: str | Path, config: OnnxBuildConfig = OnnxBuildConfig()) -> Path:
    """Dynamic int8 quantisation of an fp32 ONNX model (weights int8, activations uint8 at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(
            str(src),
            str(dst),
            op_types_to_quantize=list(config.int8_ops),
            per_channel=config.per_channel,
            weight_type=QuantType.QInt8,
            extra_options={"MatMulConstBOnly": True},
        )
    return Path(dst)


def build(
    model: torch.nn.Module, out_dir: Path, precision: str, profile: BatchProfile, image_size: int,
    config: OnnxBuildConfig = OnnxBuildConfig(),
) -> str:  # fmt: skip
    """Write the engine file for `precision` into `out_dir`; returns its file name."""
    fp32_path = export_onnx(model, out_dir / ARTIFACTS["fp32"], profile, image_size, config)
    if precision == "fp32":
        return fp32_path.name
    if precision == "int8":
        quantize_int8(fp32_path, out_dir / ARTIFACTS["int8"], config)
        fp32_path.unlink()
        return ARTIFACTS["int8"]
    raise ValueError(f"onnxruntime engines are fp32 or int8, not {precision}")


def verify(path: str | Path, precision: str, image_size: int) -> list[str]:
    """Problems with the built file, empty when it has the requested properties: one uint8 input
    (batch, S, S, 3) with a symbolic batch axis, float outputs (probabilities, then image features), and
    for int8 integer MatMuls."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    problems = []
    inputs = list(model.graph.input)
    if len(inputs) != 1:
        return [f"expected one input, found {len(inputs)}"]
    tensor = inputs[0].type.tensor_type
    if tensor.elem_type != onnx.TensorProto.UINT8:
        problems.append(f"input is {onnx.TensorProto.DataType.Name(tensor.elem_type)}, not UINT8")
    dims = list(tensor.shape.dim)
    if len(dims) != 4 or not dims[0].dim_param:
        problems.append("input has no symbolic batch axis")
    elif [d.dim_value for d in dims[1:]] != [image_size, image_size, 3]:
        problems.append(f"input frames are {[d.dim_value for d in dims[1:]]}, not [{image_size}, {image_size}, 3]")
    for output in model.graph.output:
        if output.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            problems.append(f"output {output.name} is not float32")
    op_types = {node.op_type for node in model.graph.node}
    if precision == "int8" and "MatMulInteger" not in op_types:
        problems.append("no int8 MatMulInteger nodes: quantisation did not take")
    if precision == "fp32" and op_types & {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul"}:
        problems.append("fp32 engine contains quantised nodes")
    return problems


@contextlib.contextmanager
def _quiet():
    """The exporter and quantiser print progress and advice to stdout and the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


register_builder(
    Builder(
        backend="onnxruntime",
        build=lambda model, workdir, precision, profile, image_size, context: build(model, workdir, precision, profile, image_size),
        verify=verify,
    )
)

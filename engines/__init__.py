"""Engine builders: compile a model bundle for the machine at hand (`vce-stream build-engine`).

One module per idea: `profile` (batch profiles, pad and split), `device` (facts about this machine),
`manifest` (what an engine directory promises, and the refusal of one that does not fit), `cache`
(the per-machine engine cache), `build` (the shared build flow: build, check, measure, write),
and one builder per backend (`torch_builder`, `onnx_builder`, `tensorrt_builder`). The runtime side
(loading an engine, `--backend auto`) lives in `vce_stream.engine.select`.
"""

BACKENDS = ("tensorrt", "onnxruntime", "torch")

# Precisions each backend can build. TensorRT reduced precision comes from explicit typing with
# autocast (TensorRT 11 removed the fp16/int8 builder flags); ONNX Runtime int8 is dynamic quantisation.
PRECISIONS: dict[str, tuple[str, ...]] = {
    "tensorrt": ("fp32", "fp16", "bf16"),
    "onnxruntime": ("fp32", "int8"),
    "torch": ("fp32",),
}

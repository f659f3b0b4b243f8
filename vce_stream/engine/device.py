"""Facts about the machine an engine is built for and run on.

An engine is only as portable as what it was tuned on: a TensorRT engine is compiled for one GPU
architecture and one TensorRT release, and an int8 ONNX Runtime engine's kernels (and its measured
agreement) depend on the CPU's instruction sets (VNNI or not). These facts go into each manifest and
are compared, field by field, before an engine is used.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")

# Instruction sets that change which kernels ONNX Runtime / PyTorch pick on x86 and Arm. Other flags
# (hypervisor, mitigation bits) differ between otherwise identical machines and are left out.
RELEVANT_CPU_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c",
    "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimddp", "asimdhp", "sve", "sve2", "i8mm", "bf16",
)  # fmt: skip


@dataclass(frozen=True)
class DeviceFacts:
    """What an engine was built for.

    kind: "cpu" or "cuda". name: CPU model name or GPU name. capability: CUDA compute capability
    ("8.9"), None on a CPU. sm_count: streaming multiprocessors, None on a CPU. instruction_sets:
    the relevant CPU flags present (sorted), empty for a GPU.
    """

    kind: str
    name: str
    capability: str | None = None
    sm_count: int | None = None
    instruction_sets: tuple[str, ...] = field(default_factory=tuple)

    @property
    def summary(self) -> str:
        """One short phrase for messages: "NVIDIA L4 (sm 8.9, 58 SMs)" / "AMD EPYC (avx2, avx512f, ...)"."""
        if self.kind == "cuda":
            return f"{self.name} (sm {self.capability}, {self.sm_count} SMs)"
        isa = ", ".join(self.instruction_sets) or "no vector extensions"
        return f"{self.name} ({isa})"


def parse_cpuinfo(text: str) -> tuple[str, tuple[str, ...]]:
    """(model name, relevant instruction sets) from /proc/cpuinfo text (x86 "flags", Arm "Features")."""
    name = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not name:
            name = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return name, tuple(f for f in RELEVANT_CPU_FLAGS if f in flags)


def cpu_facts(cpuinfo_text: str | None = None) -> DeviceFacts:
    """This machine's CPU (or the one described by `cpuinfo_text`)."""
    if cpuinfo_text is None:
        try:
            cpuinfo_text = CPUINFO.read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo_text = ""
    name, isa = parse_cpuinfo(cpuinfo_text)
    return DeviceFacts(kind="cpu", name=name or platform.processor() or platform.machine(), instruction_sets=isa)


def cuda_facts(index: int = 0) -> DeviceFacts:
    """GPU `index` as torch.cuda sees it; raises RuntimeError where there is no CUDA device."""
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA device")
    props = torch.cuda.get_device_properties(index)
    return DeviceFacts(
        kind="cuda",
        name=props.name,
        capability=f"{props.major}.{props.minor}",
        sm_count=int(props.multi_processor_count),
    )


def device_facts(device: str | torch.device) -> DeviceFacts:
    """Facts of the device string a user gives ("cpu", "cuda", "cuda:1")."""
    device = torch.device(device)
    if device.type == "cuda":
        return cuda_facts(device.index if device.index is not None else torch.cuda.current_device())
    return cpu_facts()


def package_version(name: str) -> str | None:
    """Installed version of a distribution, None when it is not installed."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cuda_driver_version() -> str | None:
    """The NVIDIA driver's CUDA version ("12.8") from the driver API, None without a driver."""
    if not torch.cuda.is_available():
        return None
    try:
        import ctypes

        version = ctypes.c_int()
        ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version))
        return f"{version.value // 1000}.{version.value % 1000 // 10}"
    except OSError:
        return None


def tensorrt_version() -> str | None:
    """The full TensorRT version ("10.13.3.9") as the library reports it."""
    try:
        import tensorrt

        return str(tensorrt.__version__)
    except ImportError:
        return package_version("tensorrt")

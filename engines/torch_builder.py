"""The torch backend: the bundle's PyTorch model itself, the universal fallback.

Nothing is compiled; the engine directory holds only a manifest, so `run --engine DIR` applies the
same checks (bundle, device, versions) to every backend, and the agreement measured at build time
documents that the fp32 path is the reference and how far bf16 / fp16 autocast strays from it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from engines import Builder, register_builder
from vce_stream.engine.backends.pytorch import AUTOCAST
from vce_stream.engine.profile import BatchProfile


def build(model: torch.nn.Module, out_dir: Path, precision: str, profile: BatchProfile, image_size: int) -> None:
    """Nothing to write: the bundle is the engine. Returns no artifact name."""
    if precision not in AUTOCAST:
        raise ValueError(f"torch engines are {tuple(AUTOCAST)}, not {precision}")
    return None


register_builder(
    Builder(
        backend="torch",
        build=lambda model, workdir, precision, profile, image_size, context: build(model, workdir, precision, profile, image_size),
        verify=lambda path, precision, image_size: [],
    )
)

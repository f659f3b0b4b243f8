"""The torch backend: the bundle's PyTorch model itself, the universal fallback.

Nothing is compiled; the engine directory holds only a manifest, so `run --engine DIR` applies the
same checks (bundle, device, versions, batch profile) to every backend, and the agreement measured
at build time documents that this path is the reference.
"""

from __future__ import annotations

from pathlib import Path

import torch

from engines import Builder, register_builder
from vce_stream.engine.profile import BatchProfile


def build(model: torch.nn.Module, out_dir: Path, precision: str, profile: BatchProfile, image_size: int) -> None:
    """Nothing to write: the bundle is the engine. Returns no artifact name."""
    if precision != "fp32":
        raise ValueError(f"torch engines are fp32, not {precision}")
    return None


register_builder(
    Builder(
        backend="torch",
        build=lambda model, workdir, precision, profile, image_size, context: build(model, workdir, precision, profile, image_size),
        verify=lambda path, precision, image_size: [],
    )
)

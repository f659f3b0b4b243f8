"""Bundles with random weights: for tests, the quick start (`vce-stream demo-bundle`) and benchmarks.

Their events mean nothing; they exist so every tool can run end to end without a trained model.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from vce_stream.labels import LABELS, RARE_VISION, LabelSet
from vce_stream.model.bundle import check_bundle_labels, save_bundle
from vce_stream.model.classifier import build_classifier
from vce_stream.model.config import ArchConfig, arch_preset


def create_random_bundle(
    out_dir: str | os.PathLike[str],
    arch: str | ArchConfig = "tiny",
    seed: int = 0,
    *,
    labels: Sequence[str] = LABELS,
    thresholds: float | Sequence[float] = 0.5,
    vocabulary: LabelSet | None = RARE_VISION,
) -> Path:
    """A valid bundle with randomly initialised weights (tests, the quick start, benchmarks).

    `arch` is a preset name ("tiny", "vit_base_patch16_224") or an ArchConfig. The text embeddings are
    seeded random unit vectors, not the output of a text tower (a random text tower would give
    embeddings just as meaningless, and needs a tokenizer). Same seed, same bytes.
    """
    config = arch_preset(arch) if isinstance(arch, str) else arch
    labels = check_bundle_labels(list(labels), vocabulary)
    if config.num_labels != len(labels):
        config = dataclasses.replace(config, num_labels=len(labels))
    model = build_classifier(config, seed=seed).eval()
    source = {
        "kind": "random",
        "seed": seed,
        "arch_preset": arch if isinstance(arch, str) else None,
        "text_embeddings": "seeded random unit vectors (no text tower)",
    }
    return save_bundle(out_dir, model, config, labels, thresholds=thresholds, source=source, vocabulary=vocabulary)

"""`vce-stream info BUNDLE` and `vce-stream demo-bundle OUT`, and the text `info` prints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from vce_stream.model.config import ARCH_PRESETS

if TYPE_CHECKING:
    from vce_stream.model.bundle import ModelBundle


def describe_bundle(bundle: ModelBundle) -> str:
    """A few lines on what `bundle` holds (`vce-stream info`)."""
    arch, pre, post = bundle.arch, bundle.preprocess, bundle.postprocess
    size = bundle.weights_path.stat().st_size
    weights = bundle.manifest.weights
    attention = (
        f"differential (lambda_init {arch.lambda_init}, schedule {arch.lambda_schedule}, "
        f"head RMSNorm {'on' if arch.head_rmsnorm else 'off'})"
        if arch.differential
        else "plain"
    )
    t = post.temporal
    thresholds = ", ".join(f"{label} {value:.3g}" for label, value in zip(bundle.labels, bundle.thresholds))
    lines = [
        f"bundle        {bundle.path}",
        f"format        {bundle.manifest.format} v{bundle.manifest.format_version} ({bundle.manifest.created_by})",
        f"content hash  {bundle.content_hash}",
        f"weights       {weights.file} ({size / 1e6:.1f} MB, sha256 {weights.sha256[:16]}...)",
        f"model         {arch.timm_model}: {arch.img_size}px, patch {arch.patch_size}, width {arch.width}, "
        f"depth {arch.depth}, {arch.num_heads} heads, feature {arch.feature_dim}",
        f"attention     {attention}",
        f"heads         excitation (hidden {arch.se_hidden}), dropout {arch.dropout}, "
        f"{arch.num_labels} labels; contrastive",
        f"preprocess    short side to {pre.size} ({pre.interpolation}), centre crop, "
        f"mean {list(pre.mean)}, std {list(pre.std)}",
        f"temporal      window {t.window}, gap {t.gap}, min length {t.min_len}, max fill {t.max_fill}; "
        f"segmentation {post.segmentation}, order {post.order}",
        f"labels ({len(bundle.labels)})   {', '.join(bundle.labels)}",
        f"thresholds    {thresholds}",
        f"prompt        {bundle.prompts[0]!r}{' ...' if len(bundle.prompts) > 1 else ''}",
    ]
    if bundle.manifest.source:
        lines.append(f"source        {json.dumps(bundle.manifest.source, sort_keys=True)}")
    return "\n".join(lines)


@click.command("info")
@click.argument("bundle", type=click.Path(path_type=Path))
def info(bundle: Path) -> None:
    """Validate a model bundle and print what it holds."""
    from vce_stream.model.bundle import load_bundle

    click.echo(describe_bundle(load_bundle(bundle)))


@click.command("demo-bundle")
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--arch",
    type=click.Choice(sorted(ARCH_PRESETS)),
    default="tiny",
    show_default=True,
    help="Architecture preset: 'tiny' for trying the pipeline, 'vit_base_patch16_224' for full-size timing.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="Threshold for every label.")
def demo_bundle(out: Path, arch: str, seed: int, threshold: float) -> None:
    """Write a model bundle with RANDOM weights to OUT (for trying the tools; its events mean nothing)."""
    from vce_stream.model.bundle import load_bundle
    from vce_stream.model.random_bundle import create_random_bundle

    path = create_random_bundle(out, arch=arch, seed=seed, thresholds=threshold)
    bundle = load_bundle(path)
    click.echo(f"wrote {path} (random weights, arch {arch}, seed {seed}, content hash {bundle.content_hash[:16]})")

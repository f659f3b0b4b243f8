"""`vce-stream info BUNDLE` and `vce-stream demo-bundle OUT`."""

from __future__ import annotations

from pathlib import Path

import click

from vce_stream.model.config import ARCH_PRESETS


@click.command("info")
@click.argument("bundle", type=click.Path(path_type=Path))
def info(bundle: Path) -> None:
    """Validate a model bundle and print what it holds."""
    from vce_stream.model.bundle import load_bundle

    click.echo(load_bundle(bundle).describe())


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
    from vce_stream.model.bundle import create_random_bundle, load_bundle

    path = create_random_bundle(out, arch=arch, seed=seed, thresholds=threshold)
    bundle = load_bundle(path)
    click.echo(f"wrote {path} (random weights, arch {arch}, seed {seed}, content hash {bundle.content_hash[:16]})")

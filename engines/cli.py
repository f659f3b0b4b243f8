"""`vce-stream build-engine` and `vce-stream engines list|clear`."""

from __future__ import annotations

from pathlib import Path

import click

from vce_stream.engine.backends import backend_names, get_backend
from vce_stream.engine.profile import BatchProfile

BACKENDS = backend_names()
_ALL_PRECISIONS = sorted({p for name in BACKENDS for p in get_backend(name).precisions})


@click.command("build-engine")
@click.option("--model", "bundle_path", required=True, type=click.Path(path_type=Path), help="Model bundle directory.")
@click.option("--backend", type=click.Choice(BACKENDS), required=True,
              help="tensorrt (CUDA GPU), onnxruntime (CPU) or torch (the PyTorch model itself).")
@click.option("--precision", type=click.Choice(_ALL_PRECISIONS), default="fp32", show_default=True,
              help="tensorrt: fp32|fp16|bf16; onnxruntime: fp32|int8; torch: fp32.")
@click.option("--batch", "batch", default=BatchProfile().text, show_default=True, metavar="MIN,OPT,MAX",
              help="Batch profile: smallest, most frequent (the run's --batch-size) and largest batch.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Engine directory to write (default: the engine cache, where `run --backend auto` finds it).")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Engine cache folder (default: $VCE_STREAM_ENGINE_CACHE or ~/.cache/vce-stream/engines).")
@click.option("--device", default=None, help="Device for tensorrt/torch engines, e.g. cuda:0 (default: CUDA if present).")
def build_engine_command(
    bundle_path: Path, backend: str, precision: str, batch: str, out: Path | None, cache_dir: Path | None, device: str | None
) -> None:
    """Compile a model bundle's frame model for this machine and write an engine directory with its manifest."""
    from engines.build import build_engine
    from vce_stream.engine.profile import parse_profile
    from vce_stream.model.bundle import load_bundle

    profile = parse_profile(batch)
    bundle = load_bundle(bundle_path)
    path, manifest = build_engine(bundle, backend, precision, profile, out=out, cache_root=cache_dir, device=device)
    agreement = manifest.agreement
    click.echo(
        f"built {backend} {precision} engine, batch {profile.text}, for {manifest.device.summary}: {path}\n"
        f"agreement with PyTorch: max |dp| {agreement.max_abs_diff:.3g} on {agreement.frames} frames "
        f"(tolerance {agreement.tolerance:g})"
    )


@click.group("engines")
def engines_group() -> None:
    """Show or empty the engine cache."""


@engines_group.command("list")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help="Engine cache folder.")
def list_command(cache_dir: Path | None) -> None:
    """List cached engines: backend, precision, batch profile, device, bundle and agreement."""
    from vce_stream.engine.cache import default_cache_root, list_cached

    root = cache_dir or default_cache_root()
    entries = list_cached(root)
    if not entries:
        click.echo(f"no engines in {root}")
        return
    click.echo(f"{len(entries)} engine(s) in {root}")
    for entry in entries:
        m = entry.manifest
        if m is None:
            click.echo(f"  {entry.path.name}  unusable: {entry.problem}")
            continue
        click.echo(
            f"  {entry.path.name}  {m.backend} {m.precision} batch {m.profile.text}  bundle {m.bundle_hash[:12]}  "
            f"{m.device.summary}  max |dp| {m.agreement.max_abs_diff:.2g}  built {m.created}"
        )


@engines_group.command("clear")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help="Engine cache folder.")
@click.option("--bundle", "bundle_hash", default=None, help="Only engines of this bundle content hash (or its prefix).")
@click.option("--backend", type=click.Choice(BACKENDS), default=None, help="Only engines of this backend.")
def clear_command(cache_dir: Path | None, bundle_hash: str | None, backend: str | None) -> None:
    """Remove cached engines (all of them, or those of one bundle or backend)."""
    from vce_stream.engine.cache import clear_cache, default_cache_root

    root = cache_dir or default_cache_root()
    removed = clear_cache(root, bundle_hash=bundle_hash, backend=backend)
    click.echo(f"removed {len(removed)} engine folder(s) from {root}")

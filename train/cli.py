"""`vce-stream train --config train.yaml --data DIR --out BUNDLE` (also `python -m train ...`)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("train")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Training YAML (see examples/train_biomedclip.yaml and examples/train_tiny.yaml).")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Galar-layout folder: <video_id>/frame_*.PNG and Labels/<video_id>.csv.")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Model bundle directory to write.")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Checkpoints and logs (default: BUNDLE.train beside the bundle).")
@click.option("--resume", is_flag=True, help="Continue the run whose checkpoint is in the work dir, exactly where it stopped.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Override the config's device.")
@click.option("--no-progress", is_flag=True, help="No progress bar (per-epoch summaries are still printed).")
def train(config_path: Path, data_dir: Path, out: Path, work_dir: Path | None, resume: bool, device: str | None,
          no_progress: bool) -> None:
    """Train the classifier on Galar-layout data and write a model bundle with per-class thresholds.

    Validation videos (split by video, seeded) choose the best epoch, the thresholds and the per-video
    presence rule. Every epoch writes a checkpoint and log.csv / log.jsonl in the work dir; a killed
    run continues with --resume and ends with the same weights as an uninterrupted one.
    """
    import dataclasses

    from train.config import load_train_config
    from train.trainer import train as run_training

    config = load_train_config(config_path)
    if device:
        config = dataclasses.replace(config, device=device)
    result = run_training(config, data_dir, out, work_dir=work_dir, resume=resume, progress=not no_progress)
    click.echo(
        f"{result.bundle}: best epoch {result.best_epoch}, validation temporal mAP@0.5 "
        f"{result.final_metrics['temporal_map50']:.4f}, macro AP {result.final_metrics['macro_ap']:.4f}"
    )


def main() -> None:
    """`python -m train`: the same command with vce-stream's error handling and exit statuses."""
    import sys

    from vce_stream.cli import main as vce_main

    vce_main(["train", *sys.argv[1:]])

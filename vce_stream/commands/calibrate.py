"""`vce-stream calibrate SCORES GT.json --out CALIB.yaml [--bundle B]`: tune the decoding on validation scores.

The search itself is `vce_stream.postprocess.calibrate`; this command sits in `commands/` because it
also reads and writes model bundles (`--bundle`), which sit above post-processing in the layering.
"""

from __future__ import annotations

import click
import yaml

from vce_stream.atomic import atomic_write_text
from vce_stream.config import to_dict
from vce_stream.postprocess.config import PostprocessConfig, postprocess_settings
from vce_stream.postprocess.calibrate import FEATURES, METRICS, CalibrationReport, SearchConfig, calibrate
from vce_stream.errors import ConfigError, InputError
from vce_stream.events.jsonio import read_submission
from vce_stream.labels import validate_labels
from vce_stream.scores import load_scores


def calibration_yaml(report: CalibrationReport, scores: str, gt: str) -> str:
    """The calibration file: a `postprocess:` section (what `run --config` and `postprocess --config`
    read), with the figures as comments."""
    lines = [
        f"# vce-stream calibrate {scores} {gt}: objective {report.metric}",
        *(f"# {row}" for row in report.table().splitlines()),
    ]
    body = yaml.safe_dump({"postprocess": to_dict(report.config)}, sort_keys=False, default_flow_style=None, width=120)
    return "\n".join(lines) + "\n" + body


@click.command()
@click.argument("scores", type=click.Path(dir_okay=False))
@click.argument("gt", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Calibration YAML to write (a postprocess: section).")
@click.option("--bundle", "bundle_dir", type=click.Path(file_okay=False), help="Start from this bundle's settings and write the result into it.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML with the starting post-processing settings.")
@click.option("--metric", type=click.Choice(METRICS), default="mean", show_default=True, help="Objective: mAP@0.5, mAP@0.95 or their mean.")
@click.option("--folds", type=int, default=5, show_default=True, help="Cross-validation folds over videos for the held-out figure.")
@click.option("--rounds", type=int, default=2, show_default=True, help="Coordinate-ascent passes over the labels.")
@click.option("--without", "without", multiple=True, type=click.Choice(FEATURES), help="Leave a decoding stage off (repeatable).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the fold assignment.")
def calibrate_command(
    scores: str, gt: str, out: str, bundle_dir: str | None, config_path: str | None, metric: str, folds: int, rounds: int,
    without: tuple[str, ...], seed: int,
) -> None:
    """Tune thresholds, presence gates and the decoding on validation SCORES (the `postprocess` scores
    format) against ground truth GT, to maximise temporal mAP.

    Prints the held-out figure from cross-validation over videos beside the empty submission, the
    uncalibrated settings and the in-sample figure, on the same videos; writes the tuned settings to
    --out (and into --bundle).
    """
    if bundle_dir and config_path:
        raise ConfigError("give --bundle or --config as the starting settings, not both")
    labels, videos = load_scores(scores)
    try:
        labels = validate_labels(list(labels))
    except ValueError as exc:
        raise InputError(f"{scores}: {exc}") from None
    truth = read_submission(gt, labels)
    if bundle_dir:
        from vce_stream.model.bundle import load_bundle

        bundle = load_bundle(bundle_dir)
        if tuple(bundle.labels) != labels:  # refused before the search, not after it
            raise InputError(f"{bundle_dir}: the bundle's labels differ from the labels of {scores}")
        base = bundle.postprocess
    else:
        base = postprocess_settings(PostprocessConfig(), config_path, labels)
    try:
        base.thresholds_for(len(labels))
        search = SearchConfig(metric=metric, features=tuple(f for f in FEATURES if f not in without), folds=folds, rounds=rounds, seed=seed)
    except ConfigError as exc:
        raise ConfigError(f"calibrate: {exc}") from None
    report = calibrate(videos, truth, labels, base, search, where=f"{scores} vs {gt}")
    atomic_write_text(out, calibration_yaml(report, scores, gt))
    if bundle_dir:
        from vce_stream.model.bundle import replace_postprocess

        replace_postprocess(bundle_dir, report.config)
    click.echo(report.table())
    click.echo(f"objective {metric}; settings written to {out}" + (f" and {bundle_dir}" if bundle_dir else ""), err=True)


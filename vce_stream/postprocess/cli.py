"""`vce-stream postprocess SCORES --out events.json`: re-decide events from saved probabilities."""

from __future__ import annotations

import click

from vce_stream.postprocess.config import PostprocessConfig, postprocess_settings
from vce_stream.errors import ConfigError
from vce_stream.events.jsonio import write_submission
from vce_stream.scores import load_scores
from vce_stream.postprocess.video import video_events


@click.command()
@click.argument("scores", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Event JSON to write.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML with post-processing settings, e.g. the file `vce-stream calibrate` writes.")
@click.option("--thresholds", help='Override thresholds: "0.4", 17 comma-separated numbers, or "polyp=0.2,ulcer=0.1".')
@click.option("--segmentation", type=click.Choice(["tuple", "label"]), help="Tuple events (default) or one event per label run.")
@click.option("--order", type=click.Choice(["confidence", "time"]), help="Event order in the file (the ranking).")
def postprocess(scores: str, out: str, config_path: str | None, thresholds: str | None, segmentation: str | None, order: str | None) -> None:
    """Turn saved per-frame probabilities (SCORES, from `run --save-scores`) into the event JSON.

    Uses the same streaming engine as `run`, so re-tuning thresholds never needs the exam re-scored.
    """
    labels, videos = load_scores(scores)
    try:
        config = postprocess_settings(PostprocessConfig(), config_path, labels, thresholds=thresholds, order=order, segmentation=segmentation)
    except ConfigError as exc:
        raise ConfigError(f"{scores}: {exc}") from None
    events = {vid: video_events(frames, probs, labels, config) for vid, (frames, probs) in videos.items()}
    ranges = {vid: (int(f[0]), int(f[-1])) for vid, (f, _) in videos.items() if len(f)}
    write_submission(out, events, segmentation=config.segmentation, order=config.order, frame_ranges=ranges, labels=labels)
    click.echo(f"{out}: {sum(len(e) for e in events.values())} label events in {len(events)} video(s)", err=True)

"""`vce-stream evaluate PRED.json GT.json`: temporal mAP as the RARE-VISION scorer computes it."""

from __future__ import annotations

import json

import click

from vce_stream.atomic import atomic_write_text
from vce_stream.errors import EXIT_BAD_INPUT, SubmissionError
from vce_stream.events.jsonio import read_submission
from vce_stream.metrics.temporal_map import MapResult, evaluate as temporal_map


def format_table(result: MapResult) -> str:
    """Per-video rows and the overall line, for people."""
    head = "video_id".ljust(20) + "".join(f"mAP@{t}".rjust(11) for t in result.thresholds)
    rows = [head, "-" * len(head)]
    for video in result.videos:
        rows.append(video.video_id.ljust(20) + "".join(f"{video.mean(t):11.4f}" for t in result.thresholds))
    rows.append("-" * len(head))
    rows.append(f"overall ({len(result.videos)})".ljust(20) + "".join(f"{result.overall(t):11.4f}" for t in result.thresholds))
    if result.skipped_videos:
        rows.append(f"left out (no ground-truth events): {', '.join(result.skipped_videos)}")
    return "\n".join(rows)


@click.command()
@click.argument("pred", type=click.Path(dir_okay=False))
@click.argument("gt", type=click.Path(dir_okay=False))
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the results as JSON here.")
@click.option("--quiet", is_flag=True, help="Print only the overall line.")
def evaluate(pred: str, gt: str, json_out: str | None, quiet: bool) -> None:
    """Temporal mAP@0.5 and @0.95 of PRED against GT (SPEC §3), per video and overall.

    A submission the scorer would reject (different video ids, an unknown label, a label given as a bare
    string, malformed JSON) prints one line saying why and exits with status 2.
    """
    try:
        result = temporal_map(read_submission(pred), read_submission(gt))
    except SubmissionError as exc:
        raise SubmissionError(f"{pred} vs {gt}: {exc}" if "different videos" in str(exc) else str(exc), exit_code=EXIT_BAD_INPUT) from None
    if quiet:
        click.echo(" ".join(f"mAP@{t}={result.overall(t):.4f}" for t in result.thresholds))
    else:
        click.echo(format_table(result))
    if json_out:
        atomic_write_text(json_out, json.dumps(result.to_dict(), indent=1) + "\n")

"""`vce-stream run INPUT --model BUNDLE --out events.json`: score one exam while it streams.

INPUT is a video file, a frame folder, or "-" for a stream on standard input. The input is opened
before the model is loaded, so a bad input is reported at once (exit 2). An input that breaks part way
still gets its decided events written, flagged incomplete (exit 3).
"""

from __future__ import annotations

import dataclasses
import sys

import click

from vce_stream.config import layered_settings
from vce_stream.postprocess.config import PostprocessConfig, postprocess_settings
from vce_stream.engine.select import BACKEND_CHOICES, TORCH_PRECISIONS, choose_engine, open_choice, resolve_device
from vce_stream.errors import ConfigError, VceError
from vce_stream.pipeline.run import PipelineConfig, RunOptions, exam_sinks, output_targets, source_path, stream_exam
from vce_stream.output_paths import check_outputs
from vce_stream.sources import open_source


@click.command("run")
@click.argument("input", metavar="INPUT", type=click.Path(allow_dash=True))
@click.option("--model", "model", required=True, type=click.Path(), help="Model bundle directory.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Event JSON to write (atomically).")
@click.option("--video-id", help="Video id in the JSON (default: the file or folder name).")
@click.option("--follow", is_flag=True, help="Print each event as a JSON line on stdout the moment it closes.")
@click.option("--save-scores", type=click.Path(dir_okay=False), help="Also write per-frame probabilities (for `postprocess`).")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True, help="Inference engine; auto: the best engine built for this machine (`build-engine`), else torch.")
@click.option("--engine", "engine_dir", type=click.Path(file_okay=False), help="An engine directory from `build-engine` (checked against this bundle and machine).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, or auto (CUDA where available).")
@click.option("--precision", type=click.Choice(TORCH_PRECISIONS), default="auto", show_default=True, help="The torch backend's precision: auto is bf16 autocast on CUDA, fp32 on the CPU (engines carry their own).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Frames per engine call (default 32).")
@click.option("--workers", type=int, help="Decode and prepare workers (1..256; default: the cores this process may use).")
@click.option("--thresholds", help='Override thresholds: "0.4", one number per label, or "polyp=0.2,ulcer=0.1".')
@click.option("--order", type=click.Choice(["confidence", "time"]), help="Event order in the file (the ranking).")
@click.option("--segmentation", type=click.Choice(["tuple", "label"]), help="Tuple events (default) or one event per label run.")
@click.option("--labels-csv", type=click.Path(dir_okay=False), help="Galar label CSV: frame folder file numbers -> frame indices.")
@click.option("--allow-gaps", is_flag=True, help="Score a frame folder whose numbering has holes.")
@click.option("--format", "container_format", help="Container of INPUT when it cannot be probed (e.g. mpegts, matroska).")
@click.option("--frame-offset", type=int, help="Added to video and pipe frame indices (SPEC §4).")
@click.option("--save-embeddings", type=click.Path(dir_okay=False), help="Also write every frame's image feature (fp16; for search, similar, index).")
@click.option("--findings", type=click.Path(dir_okay=False), help="Also write the bundle's few-shot prototype findings (`prototypes add`) as events, in a file of their own.")
@click.option("--report", "report", type=click.Path(dir_okay=False), help="Also write the review page (one self-contained HTML file).")
@click.option("--report-top", type=click.IntRange(0, 1000), default=100, show_default=True, help="Frames in the report's overall top list.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML with pipeline: and postprocess: settings.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary line.")
def run(
    input: str,
    model: str,
    out: str,
    video_id: str | None,
    follow: bool,
    save_scores: str | None,
    backend: str,
    engine_dir: str | None,
    device: str,
    precision: str,
    batch_size: int | None,
    workers: int | None,
    thresholds: str | None,
    order: str | None,
    segmentation: str | None,
    labels_csv: str | None,
    allow_gaps: bool,
    container_format: str | None,
    frame_offset: int | None,
    save_embeddings: str | None,
    findings: str | None,
    report: str | None,
    report_top: int,
    config_path: str | None,
    quiet: bool,
) -> None:
    """Score the exam INPUT (video file, frame folder, or - for stdin) and write its events to OUT.

    Exit status: 0 done; 2 the input or an option is unusable (nothing written); 3 the input broke
    part way (the events decided up to that frame are written, with "vce_stream": {"incomplete": true,
    "stopped_at_frame": N, ...} in the JSON).
    """
    pipeline = layered_settings(PipelineConfig(), "pipeline", config_path, lambda p: pipeline_from_command_line(
        p, batch_size=batch_size, container_format=container_format, frame_offset=frame_offset, allow_gaps=allow_gaps,
        workers=workers,
    ))  # fmt: skip
    source = open_source(input, pipeline.source, labels_csv=labels_csv)
    try:
        from vce_stream.model.bundle import load_bundle

        bundle = load_bundle(model)
        post = postprocess_settings(bundle.postprocess, config_path, bundle.labels, thresholds=thresholds, order=order, segmentation=segmentation)
        options = RunOptions(
            video_id=video_id,
            labels_csv=labels_csv,
            save_scores=save_scores,
            postprocess=post,
            preprocess=bundle.preprocess,
            pipeline=pipeline,
        )
        inputs = [source_path(source), model, *([labels_csv] if labels_csv else [])]
        extra_sinks = [report_sink(report, report_top, model, bundle.labels, post)] if report else []
        if save_embeddings:
            from vce_stream.sinks.embeddings import EmbeddingsSink

            extra_sinks.append(EmbeddingsSink(save_embeddings, bundle.arch.feature_dim, bundle.content_hash))
        if findings:
            extra_sinks.append(findings_sink(findings, bundle, post))
        # Before the model is built: an output that would overwrite an input, or cannot be written, costs nothing.
        check_outputs(output_targets([*exam_sinks(out, options), *extra_sinks]), inputs=inputs)
        run_device = resolve_device(device)
        choice = choose_engine(bundle, backend, engine_dir=engine_dir, device=run_device, batch_size=pipeline.batch_size, precision=precision)
        scorer = open_choice(choice, bundle)
        reason = choice.reason
        if choice.engine_dir is None and choice.precision != "fp32":  # measured, as a built engine's agreement is
            from vce_stream.engine.backends.pytorch import measure_agreement

            reason += f", max |dp| {measure_agreement(scorer, bundle.preprocess.size):.2g} vs fp32 on 8 frames"
        if not quiet:
            click.echo(f"engine: {reason}", err=True)
        for sink in extra_sinks:
            if hasattr(sink, "engine"):
                sink.engine = reason
    except BaseException:
        source.close()
        raise
    options = dataclasses.replace(options, pin_memory=run_device.type == "cuda")
    progress = sys.stderr if (not quiet and sys.stderr.isatty()) else None
    outcome = stream_exam(
        source, scorer, out, options, follow=sys.stdout if follow else None, progress=progress, extra_sinks=extra_sinks, inputs=inputs
    )  # fmt: skip
    if not quiet:
        click.echo(outcome.line(), err=True)
    if outcome.incomplete:
        raise VceError(f"{outcome.error} (partial events up to frame {outcome.last_frame} written to {out})", exit_code=outcome.exit_code)


def pipeline_from_command_line(
    pipeline: PipelineConfig,
    *,
    batch_size: int | None = None,
    container_format: str | None = None,
    frame_offset: int | None = None,
    allow_gaps: bool = False,
    workers: int | None = None,
) -> PipelineConfig:
    """`pipeline` with the command-line options of `run` and `batch` applied last."""
    source_changes: dict = {
        key: value
        for key, value in (("container_format", container_format), ("frame_offset", frame_offset), ("workers", workers))
        if value is not None
    }
    if allow_gaps:
        source_changes["allow_gaps"] = True
    return dataclasses.replace(
        pipeline,
        source=dataclasses.replace(pipeline.source, **source_changes),
        **({"batch_size": batch_size} if batch_size else {}),
    )


def report_sink(path: str, top: int, bundle_path: str, labels: tuple[str, ...], post: PostprocessConfig):
    """The `--report` sink, stating the bundle, thresholds and decoding the events came from."""
    from vce_stream.sinks.report import ReportSink

    return ReportSink.for_settings(path, labels, post, bundle=str(bundle_path), top=top)


def findings_sink(path: str, bundle, post: PostprocessConfig):
    """The `--findings` sink; a bundle without prototypes is a one-line error (exit 2)."""
    from vce_stream.model.prototypes import load_prototypes
    from vce_stream.sinks.findings import FindingsSink

    prototypes = load_prototypes(bundle)
    if not prototypes.labels:
        raise ConfigError(f"{bundle.path}: this bundle has no prototype findings; add one with `vce-stream prototypes add`")
    return FindingsSink(path, prototypes, bundle.content_hash, post.temporal)

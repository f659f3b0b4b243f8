"""`vce-stream batch ARCHIVE --model BUNDLE --out OUTDIR`: every exam of an archive, resumable.

Writes OUTDIR/exams/<name>.json per exam, OUTDIR/submission.json (all scored videos), OUTDIR/summary.csv
and OUTDIR/journal.jsonl, and prints the summary table. Running the same command again after a crash
scores only what is not finished. `--ray auto|ADDRESS` runs the exams as Ray tasks instead of on the
local worker pool, with the same outputs.
"""

from __future__ import annotations

from pathlib import Path

import click

from vce_stream.engine.select import BACKEND_CHOICES, resolve_device
from vce_stream.errors import EXIT_SOME_FAILED, ConfigError, VceError
from vce_stream.config import layered_settings
from vce_stream.pipeline.cli import pipeline_from_command_line
from vce_stream.pipeline.run import PipelineConfig
from vce_stream.postprocess.config import postprocess_settings
from vce_stream.pipeline.run import RunOptions


def cuda_devices(device: str) -> tuple[str, ...]:
    """The CUDA devices a local pool uses for `device` ("cpu", "cuda", "cuda:N"; "auto" resolved before)."""
    if not device.startswith("cuda"):
        return ()
    if ":" in device:
        return (device,)
    import torch

    return tuple(f"cuda:{i}" for i in range(torch.cuda.device_count()))


@click.command("batch")
@click.argument("archive", type=click.Path(path_type=Path))
@click.option("--model", "model", required=True, type=click.Path(path_type=Path), help="Model bundle directory.")
@click.option("--out", "outdir", required=True, metavar="OUTDIR", type=click.Path(file_okay=False, path_type=Path), help="Output folder (journal, per-exam JSON, submission, summary).")
@click.option("--workers", type=click.IntRange(min=0), help="Local worker processes (default: one per CPU, or --per-gpu per GPU; 0: score in this process).")
@click.option("--threads", type=click.IntRange(min=1), help="Torch threads per local worker (default: the CPUs shared out among the workers).")
@click.option("--per-gpu", type=click.IntRange(min=1), default=2, show_default=True, help="Local workers sharing each GPU (several exams decoding for one device).")
@click.option("--ray", "ray_address", metavar="auto|ADDRESS", help="Run the exams as Ray tasks: 'auto' (RAY_ADDRESS, a running local cluster, else a new local instance) or a cluster address.")
@click.option("--cpus-per-exam", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True, help="Ray: CPUs each exam reserves (and its torch threads).")
@click.option("--gpus-per-exam", type=click.FloatRange(min=0), help="Ray: GPUs each exam reserves (default 1 where the cluster has GPUs, else 0).")
@click.option("--backend", type=click.Choice(BACKEND_CHOICES), default="auto", show_default=True, help="Inference engine; auto: the best engine built for this machine (`build-engine`), else torch.")
@click.option("--device", default="auto", show_default=True, help="Local pool: cpu, cuda, cuda:N, or auto (CUDA where available).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Frames per engine call (default 32).")
@click.option("--decode-workers", type=int, help="Decode and prepare threads per exam (1..256; default: the exam's share of the cores). `--workers` sizes the pool of exams.")
@click.option("--thresholds", help='Override thresholds: "0.4", one number per label, or "polyp=0.2,ulcer=0.1".')
@click.option("--order", type=click.Choice(["confidence", "time"]), help="Event order in the files (the ranking).")
@click.option("--segmentation", type=click.Choice(["tuple", "label"]), help="Tuple events (default) or one event per label run.")
@click.option("--labels-dir", type=click.Path(file_okay=False, path_type=Path), help="Galar label CSVs: frame folder <id> uses <labels-dir>/<id>.csv.")
@click.option("--allow-gaps", is_flag=True, help="Score frame folders whose numbering has holes.")
@click.option("--report", is_flag=True, help="Also write each exam's review page to OUTDIR/reports/<exam>.html, and reports/index.html.")
@click.option("--save-embeddings", is_flag=True, help="Also write each exam's frame embeddings to OUTDIR/embeddings/<exam>.emb.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML with pipeline: and postprocess: settings.")
@click.option("--retry-failed/--no-retry-failed", default=True, show_default=True, help="Score exams that failed or broke in an earlier run again.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines and no table.")
def batch(
    archive: Path,
    model: Path,
    outdir: Path,
    workers: int | None,
    threads: int | None,
    per_gpu: int,
    ray_address: str | None,
    cpus_per_exam: float,
    gpus_per_exam: float | None,
    backend: str,
    device: str,
    batch_size: int | None,
    decode_workers: int | None,
    thresholds: str | None,
    order: str | None,
    segmentation: str | None,
    labels_dir: Path | None,
    allow_gaps: bool,
    report: bool,
    save_embeddings: bool,
    config_path: str | None,
    retry_failed: bool,
    quiet: bool,
) -> None:
    """Score every exam under ARCHIVE (video files and frame folders) into OUTDIR.

    Exit status: 0 every exam done; 2 bad arguments, bundle or archive (nothing scored); 4 at least one
    exam failed or broke part way (the others are written; see OUTDIR/summary.csv).
    """
    from vce_stream.batch.driver import BatchJob, run_batch
    from vce_stream.batch.local import InlineRunner, LocalPool, available_cpus, plan_local
    from vce_stream.batch.ray_runner import RayConfig, RayRunner
    from vce_stream.batch.task import score_exam
    from vce_stream.model.bundle import load_bundle

    if ray_address and (workers is not None or threads is not None):
        raise ConfigError("--workers and --threads size the local pool; with --ray use --cpus-per-exam and --gpus-per-exam")
    pipeline = layered_settings(
        PipelineConfig(), "pipeline", config_path,
        lambda p: pipeline_from_command_line(p, batch_size=batch_size, allow_gaps=allow_gaps, workers=decode_workers),
    )  # fmt: skip
    bundle = load_bundle(model)
    post = postprocess_settings(bundle.postprocess, config_path, bundle.labels, thresholds=thresholds, order=order, segmentation=segmentation)
    ray_config = RayConfig(address=ray_address, cpus_per_exam=cpus_per_exam, gpus_per_exam=gpus_per_exam) if ray_address else None
    gpus = () if ray_config is not None else cuda_devices(str(resolve_device(device)))
    job = BatchJob(
        archive=archive,
        outdir=outdir,
        bundle=bundle.path.resolve(),
        bundle_hash=bundle.content_hash,
        labels=bundle.labels,
        options=RunOptions(postprocess=post, preprocess=bundle.preprocess, pipeline=pipeline),
        backend=backend,
        retry_failed=retry_failed,
        labels_dir=labels_dir,
        report=report,
        save_embeddings=save_embeddings,
    )

    def make_runner(exams: int):
        if ray_config is not None:
            return RayRunner(score_exam, ray_config)
        if workers == 0:
            return InlineRunner(score_exam, gpus[0] if gpus else "cpu", threads=threads or available_cpus())
        plan = plan_local(workers, cpus=available_cpus(), gpus=gpus, per_gpu=per_gpu, exams=exams, threads=threads)
        return LocalPool(score_exam, plan.devices, threads=plan.threads)

    def log(line: str) -> None:
        if not quiet:
            click.echo(line, err=True)

    report = run_batch(job, make_runner, log)
    if not quiet:
        from vce_stream.batch.combine import format_table

        click.echo(format_table(report.rows))
        wall = report.seconds
        rate = f", {report.frames_scored / wall:.1f} frames/s, {len(report.scored) * 3600 / wall:.0f} exams/hour" if report.scored and wall > 0 else ""
        click.echo(
            f"{len(report.rows)} exams: {len(report.scored)} scored, {len(report.kept)} kept, {len(report.problems)} not done; "
            f"{wall:.1f} s{rate}; wrote {report.submission} and {report.summary}",
            err=True,
        )
    if report.problems:
        names = ", ".join(f"{r.exam} ({r.status})" for r in report.problems[:3]) + (" ..." if len(report.problems) > 3 else "")
        raise VceError(f"{len(report.problems)} of {len(report.rows)} exams not done: {names}; see {report.summary}", exit_code=EXIT_SOME_FAILED)

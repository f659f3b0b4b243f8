"""The batch driver: discover the exams, decide which need scoring, feed a runner, record, combine.

The driver is the only writer of OUTDIR. For each result it first writes the exam JSON atomically,
then appends the exam's final state to the journal (fsynced), so whatever instant the driver dies at,
an exam recorded `done` has its complete output, and an exam without a final record is scored again
on the next run. An exam is kept from an earlier run only when its record says done, its output still
has the recorded sha256, and neither the exam's input nor the settings that shape its output (model,
post-processing, preprocessing, source options) changed since. Failed and incomplete exams are tried
again unless `retry_failed` is off.

A runner is anything with `capacity`, `threads`, `device`, `submit(task)`, `next_result()` and
`close()`: the local pool and the Ray runner.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vce_stream import __version__
from vce_stream.atomic import atomic_write_text
from vce_stream.batch.combine import EMBEDDINGS_DIR, EXAMS_DIR, REPORTS_DIR, ExamRow, write_combined, write_report_index
from vce_stream.batch.discover import Exam, Skipped, discover, output_path
from vce_stream.batch.journal import DONE, FAILED, FINAL_STATES, INCOMPLETE, STARTED, Journal
from vce_stream.batch.task import ExamResult, ExamTask
from vce_stream.config import to_dict
from vce_stream.errors import EXIT_OK, EXIT_SOME_FAILED, InputError
from vce_stream.pipeline.run import RunOptions
from vce_stream.sources.folder import FRAME_NAME

# Source options that only change speed, not which frames get which indices.
_SPEED_ONLY_SOURCE_FIELDS = ("decode_threads", "thread_type", "scale_threads", "workers")


class Runner(Protocol):
    capacity: int
    threads: int
    device: str

    def submit(self, task: ExamTask) -> None: ...

    def next_result(self) -> ExamResult: ...

    def close(self) -> None: ...

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc: object) -> None: ...


@dataclass(frozen=True)
class BatchJob:
    """What to score and how.

    bundle, bundle_hash, labels: the validated model bundle. options: run options common to all exams
    (postprocess, preprocess, pipeline); each exam adds its video id and label CSV.
    labels_dir: Galar label CSVs for frame folders (`<labels_dir>/<folder name>.csv`).
    """

    archive: Path
    outdir: Path
    bundle: Path
    bundle_hash: str
    labels: tuple[str, ...]
    options: RunOptions = field(default_factory=RunOptions)
    backend: str = "torch"
    retry_failed: bool = True
    labels_dir: Path | None = None
    report: bool = False  # one review page per exam in OUTDIR/reports/, plus reports/index.html
    save_embeddings: bool = False  # one embeddings file per exam in OUTDIR/embeddings/


@dataclass(frozen=True)
class BatchReport:
    """rows: every exam's final state, in archive order. scored: exams scored by this run; kept: exams
    whose earlier result was kept; skipped: archive entries not taken as exams."""

    rows: tuple[ExamRow, ...]
    scored: tuple[str, ...]
    kept: tuple[str, ...]
    skipped: tuple[Skipped, ...]
    seconds: float
    submission: Path
    summary: Path

    @property
    def problems(self) -> tuple[ExamRow, ...]:
        return tuple(r for r in self.rows if r.status != DONE)

    @property
    def exit_code(self) -> int:
        return EXIT_SOME_FAILED if self.problems else EXIT_OK

    @property
    def frames_scored(self) -> int:
        scored = set(self.scored)
        return sum(r.frames for r in self.rows if r.exam in scored)


def settings_fingerprint(job: BatchJob) -> str:
    """A hash of everything that shapes an exam's output besides the exam itself."""
    source = {k: v for k, v in to_dict(job.options.pipeline.source).items() if k not in _SPEED_ONLY_SOURCE_FIELDS}
    settings = {
        "model": job.bundle_hash,
        "backend": job.backend,
        "postprocess": to_dict(job.options.postprocess),
        "preprocess": to_dict(job.options.preprocess),
        "source": source,
        "outputs": {"report": job.report, "embeddings": job.save_embeddings},
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def input_signature(exam: Exam) -> dict[str, int]:
    """Size and modification time of the exam (for a folder: over its frame files), and of its label CSV."""
    if exam.kind == "video":
        st = exam.path.stat()
        signature = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    else:
        files = size = newest = 0
        with os.scandir(exam.path) as entries:
            for entry in entries:
                if FRAME_NAME.match(entry.name) and entry.is_file():
                    st = entry.stat()
                    files, size, newest = files + 1, size + st.st_size, max(newest, st.st_mtime_ns)
        signature = {"files": files, "bytes": size, "mtime_ns": newest}
    if exam.labels_csv is not None:
        signature["csv_mtime_ns"] = exam.labels_csv.stat().st_mtime_ns
    return signature


def relative_output(exam: Exam) -> str:
    return f"{EXAMS_DIR}/{exam.name}.json"


def file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def why_rescore(exam: Exam, record: dict[str, Any] | None, fingerprint: str, signature: dict, outdir: Path, retry_failed: bool) -> str | None:
    """Why the exam must be scored (a short reason for the journal and the log), or None to keep it."""
    if record is None:
        return "new"
    state = record["event"]
    if state not in FINAL_STATES:
        return "unfinished"
    if record.get("settings") != fingerprint:
        return "settings changed"
    if record.get("input") != signature:
        return "input changed"
    if state != DONE and retry_failed:
        return f"retry ({state})"
    if state == FAILED:
        return None
    if record.get("output") != relative_output(exam) or file_sha256(outdir / relative_output(exam)) != record.get("sha256"):
        return "output missing or changed"
    return None


def remove_stale_temporaries(folder: Path) -> None:
    """Temporary files of atomic writes cut short by a kill (the journal lock makes them ours)."""
    if folder.is_dir():
        for path in folder.glob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def row_of(exam: Exam, record: dict[str, Any] | None) -> ExamRow:
    if record is None or record["event"] not in FINAL_STATES:
        return ExamRow(exam.key, exam.video_id, "unfinished")
    return ExamRow(
        exam=exam.key,
        video_id=record.get("video_id") or exam.video_id,
        status=record["event"],
        frames=int(record.get("frames", 0)),
        events=int(record.get("events", 0)),
        seconds=float(record.get("seconds", 0.0)),
        output=record.get("output"),
        error=record.get("error"),
    )


def progress_line(done: int, total: int, exam: Exam, result: ExamResult) -> str:
    head = f"[{done}/{total}] {exam.key}: {result.status}"
    if result.status == FAILED:
        return f"{head}: {result.error}"
    text = f"{head}, {result.frames} frames, {result.events} events, {result.seconds:.1f} s, {result.fps:.1f} frames/s"
    if result.status == INCOMPLETE:
        text += f" (stopped: {result.error})"
    return text


def run_batch(job: BatchJob, make_runner: Callable[[int], Runner], log: Callable[[str], None] = lambda _: None) -> BatchReport:
    """Score every exam of `job.archive` that needs it and write OUTDIR's outputs (module docstring).

    make_runner(n) opens a runner for n exams to score; it is not called when nothing needs scoring.
    Raises InputError when the archive holds no exam or OUTDIR is in use by another batch run.
    KeyboardInterrupt stops the runner and propagates; the journal then says which exams were in hand.
    """
    start = time.perf_counter()
    outdir = job.outdir
    found = discover(job.archive, exclude=outdir, labels_dir=job.labels_dir)
    for skipped in found.skipped:
        log(f"skipped {skipped.key}: {skipped.reason}")
    if not found.exams:
        raise InputError(f"{job.archive}: no exams found (video files or folders of frame_<n>.png/.jpg)")
    exams_dir = outdir / EXAMS_DIR
    try:
        exams_dir.mkdir(parents=True, exist_ok=True)
        for wanted, folder in ((job.report, REPORTS_DIR), (job.save_embeddings, EMBEDDINGS_DIR)):
            if wanted:
                (outdir / folder).mkdir(exist_ok=True)
    except OSError as exc:
        raise InputError(f"{outdir}: cannot create the output folder ({exc.strerror or exc})") from None
    fingerprint = settings_fingerprint(job)
    with Journal(outdir) as journal:
        remove_stale_temporaries(exams_dir)
        remove_stale_temporaries(outdir)
        signatures = {exam.key: input_signature(exam) for exam in found.exams}
        todo: deque[tuple[Exam, str]] = deque()
        kept = []
        for exam in found.exams:
            reason = why_rescore(exam, journal.last(exam.key), fingerprint, signatures[exam.key], outdir, job.retry_failed)
            if reason is None:
                kept.append(exam.key)
            else:
                todo.append((exam, reason))
        log(f"{len(found.exams)} exams in {job.archive}: {len(kept)} kept from earlier runs, {len(todo)} to score")
        journal.begin_run(archive=str(job.archive), settings=fingerprint, exams=len(found.exams), to_score=len(todo), version=__version__)
        scored = _score(job, journal, todo, signatures, fingerprint, make_runner, log) if todo else []
        rows = tuple(row_of(exam, journal.last(exam.key)) for exam in found.exams)
        submission, summary = write_combined(outdir, rows, job.labels)
        if job.report:
            write_report_index(outdir / REPORTS_DIR / "index.html", rows, {exam.key: report_name(exam.name) for exam in found.exams})
    return BatchReport(rows, tuple(scored), tuple(kept), found.skipped, time.perf_counter() - start, submission, summary)


def _score(
    job: BatchJob,
    journal: Journal,
    todo: deque[tuple[Exam, str]],
    signatures: dict[str, dict],
    fingerprint: str,
    make_runner: Callable[[int], Runner],
    log: Callable[[str], None],
) -> list[str]:
    """Feed the runner, at most `capacity` exams in flight; record each result as it arrives."""
    total = len(todo)
    by_key = {exam.key: exam for exam, _ in todo}
    scored: list[str] = []
    with make_runner(total) as runner:
        if hasattr(runner, "description"):
            log(f"scoring on {runner.description}")
        in_flight = 0
        while todo or in_flight:
            while todo and in_flight < runner.capacity:
                exam, reason = todo.popleft()
                journal.append(STARTED, exam.key, reason=reason, attempt=journal.starts(exam.key) + 1)
                runner.submit(_task(job, exam, runner))
                in_flight += 1
            result = runner.next_result()
            in_flight -= 1
            exam = by_key[result.key]
            _record(job.outdir, journal, exam, result, fingerprint, signatures[exam.key])
            scored.append(exam.key)
            log(progress_line(len(scored), total, exam, result))
    return scored


def _task(job: BatchJob, exam: Exam, runner: Runner) -> ExamTask:
    pipeline = job.options.pipeline
    # Parallel exams share the cores: an exam decodes on at most its runner's share of them.
    source = dataclasses.replace(pipeline.source, decode_threads=runner.threads, workers=min(pipeline.source.workers, runner.threads))
    options = dataclasses.replace(
        job.options,
        video_id=exam.video_id,
        labels_csv=None if exam.labels_csv is None else str(exam.labels_csv),
        save_scores=None,
        pipeline=dataclasses.replace(pipeline, source=source),
        pin_memory=runner.device.startswith("cuda"),
    )
    report = output_path(job.outdir / REPORTS_DIR, exam.name, ".html") if job.report else None
    embeddings = output_path(job.outdir / EMBEDDINGS_DIR, exam.name, ".emb") if job.save_embeddings else None
    return ExamTask(
        exam.key, str(exam.path), str(job.bundle), job.bundle_hash, options, job.backend, runner.device, runner.threads,
        report=None if report is None else str(report), embeddings=None if embeddings is None else str(embeddings),
    )  # fmt: skip


def report_name(name: str) -> str:
    """The file name of an exam's review page inside OUTDIR/reports/ (as `output_path` makes it)."""
    return output_path(Path("."), name, ".html").name


def _record(outdir: Path, journal: Journal, exam: Exam, result: ExamResult, fingerprint: str, signature: dict) -> None:
    """Output first (atomically), then the journal record that vouches for it."""
    path = output_path(outdir / EXAMS_DIR, exam.name)
    fields: dict[str, Any] = {
        "video_id": result.video_id or exam.video_id,
        "frames": result.frames,
        "events": result.events,
        "seconds": round(result.seconds, 3),
        "error": result.error,
        "worker": result.worker,
        "settings": fingerprint,
        "input": signature,
    }
    if result.document is not None:
        atomic_write_text(path, result.document)
        fields["output"] = relative_output(exam)
        fields["sha256"] = hashlib.sha256(result.document.encode("utf-8")).hexdigest()
    else:
        path.unlink(missing_ok=True)  # a stale output from an earlier run would contradict the journal
    journal.append(result.status, exam.key, **fields)

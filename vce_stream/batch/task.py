"""One exam as a unit of batch work: the task a worker receives, the function it runs, what it returns.

`score_exam` is the same function in a local worker process and in a Ray task; it never raises for a
problem of the exam (an unreadable file, a decoder error, a bug tripped by odd input): the problem is
returned as a failed result, so one exam never stops the others. It writes nothing in OUTDIR: the exam
JSON comes back as text and the driver writes it, so the driver is the only writer there and a worker
on another machine needs no access to OUTDIR.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vce_stream.batch.journal import DONE, FAILED, INCOMPLETE
from vce_stream.errors import VceError
from vce_stream.events.outcome import ExamOutcome
from vce_stream.pipeline.run import RunOptions

# Scorers already built in this process: (bundle path, content hash, backend, device) -> (bundle, FrameScorer).
# Worker processes (local or Ray) live for many exams and load the model once.
_SCORERS: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}


@dataclass(frozen=True)
class ExamTask:
    """Everything a worker needs to score one exam.

    key: the exam's journal key. source: the video file or frame folder (a path the worker can read).
    bundle, bundle_hash: the model bundle directory and the content hash the driver validated; a worker
        whose copy differs refuses to score with it.
    options: the run options, with this exam's video id and label CSV.
    device: "cpu", "cuda" or "cuda:N". threads: torch intra-op threads (the same for every runner, so
        local and Ray runs compute the very same numbers).
    """

    key: str
    source: str
    bundle: str
    bundle_hash: str
    options: RunOptions
    backend: str = "torch"
    device: str = "cpu"
    threads: int = 1
    report: str | None = None  # where this exam's review page goes (the worker writes it, atomically)
    embeddings: str | None = None  # where this exam's embeddings file goes (likewise)


@dataclass(frozen=True)
class ExamResult:
    """What a worker returns: the exam's journal key and status, its outcome (the same record `run`
    returns; a failed exam's has no frames and says why in `error`), the event JSON text (None when
    nothing was scored) and which worker scored it."""

    key: str
    status: str
    outcome: ExamOutcome
    document: str | None = None
    worker: str = ""

    @property
    def video_id(self) -> str:
        return self.outcome.video_id

    @property
    def frames(self) -> int:
        return self.outcome.frames

    @property
    def events(self) -> int:
        return self.outcome.events

    @property
    def seconds(self) -> float:
        return self.outcome.seconds

    @property
    def fps(self) -> float:
        return self.outcome.fps

    @property
    def error(self) -> str | None:
        return self.outcome.error


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def failed_result(task: ExamTask, error: str, seconds: float = 0.0, worker: str | None = None) -> ExamResult:
    """A failed exam: nothing scored, `error` says why."""
    outcome = ExamOutcome(
        input=task.source, video_id=task.options.video_id or "", out="", frames=0, events=0, seconds=seconds,
        first_frame=0, last_frame=-1, error=error,
    )  # fmt: skip
    return ExamResult(task.key, FAILED, outcome, worker=worker or worker_name())


def _scorer(task: ExamTask) -> Any:
    key = (task.bundle, task.bundle_hash, task.backend, task.device)
    if key not in _SCORERS:
        from vce_stream.model.bundle import load_bundle
        from vce_stream.engine.select import make_scorer

        bundle = load_bundle(task.bundle)
        if bundle.content_hash != task.bundle_hash:
            raise VceError(
                f"{task.bundle}: this worker's model bundle differs from the driver's "
                f"(content hash {bundle.content_hash[:16]}, expected {task.bundle_hash[:16]})"
            )
        scorer = make_scorer(bundle, backend=task.backend, device=task.device, batch_size=task.options.pipeline.batch_size, threads=task.threads)
        _SCORERS[key] = (bundle, scorer)
    return _SCORERS[key]


def exam_extra_sinks(task: ExamTask, bundle: Any) -> list:
    """The per-exam outputs a worker writes itself: the review page and the embeddings file."""
    sinks: list = []
    if task.report:
        from vce_stream.sinks.report import ReportSink

        engine = f"{task.backend} on {task.device}"
        sinks.append(ReportSink.for_settings(task.report, bundle.labels, task.options.postprocess, bundle=task.bundle, engine=engine))
    if task.embeddings:
        from vce_stream.sinks.embeddings import EmbeddingsSink

        sinks.append(EmbeddingsSink(task.embeddings, bundle.arch.feature_dim, bundle.content_hash))
    return sinks


def score_exam(task: ExamTask) -> ExamResult:
    """Score one exam; every problem of the exam becomes a failed result (see the module docstring)."""
    import torch

    from vce_stream.pipeline.run import run_exam

    start = time.perf_counter()
    torch.set_num_threads(task.threads)
    try:
        bundle, scorer = _scorer(task)
        with tempfile.TemporaryDirectory(prefix="vce-batch-") as tmp:
            out = Path(tmp) / "events.json"
            outcome = run_exam(task.source, scorer, out, task.options, extra_sinks=exam_extra_sinks(task, bundle))
            document = out.read_text(encoding="utf-8")
    except VceError as exc:
        return failed_result(task, str(exc), time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001  an exam's own problem must not stop the batch
        return failed_result(task, f"{type(exc).__name__}: {exc}".strip().splitlines()[0], time.perf_counter() - start)
    return ExamResult(task.key, INCOMPLETE if outcome.incomplete else DONE, outcome, document, worker_name())

"""The batch's combined outputs: one submission JSON of all scored videos, and the summary table.

The combined submission copies each exam's video entry verbatim from its exam JSON (events in file
order: that order is the ranking), checked with the scorer's sanity rules. Exams that broke part way
contribute the events decided before the break; exams that failed have nothing to contribute, and a
`vce_stream` block lists both kinds (the scorer ignores extra keys). Nothing time-dependent goes into
the submission, so a resumed batch writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vce_stream.atomic import atomic_write_text
from vce_stream.batch.journal import DONE, FAILED, INCOMPLETE
from vce_stream.events.jsonio import dump_submission, parse_submission

SUBMISSION_NAME = "submission.json"
SUMMARY_NAME = "summary.csv"
EXAMS_DIR = "exams"
REPORTS_DIR = "reports"  # batch --report: <exam>.html per exam and index.html
EMBEDDINGS_DIR = "embeddings"  # batch --save-embeddings: <exam>.emb per exam
SUMMARY_COLUMNS = ("exam", "video_id", "status", "frames", "events", "seconds", "frames_per_s", "output", "error")


@dataclass(frozen=True)
class ExamRow:
    """One exam's line of the summary. output: the exam JSON relative to OUTDIR (None if none)."""

    exam: str
    video_id: str
    status: str
    frames: int = 0
    events: int = 0
    seconds: float = 0.0
    output: str | None = None
    error: str | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def scored(self) -> bool:
        """Whether the exam has events to contribute (complete, or up to where it broke)."""
        return self.status in (DONE, INCOMPLETE) and self.output is not None


def combined_submission(rows: Sequence[ExamRow], outdir: Path, labels: Sequence[str]) -> dict[str, Any]:
    """All scored videos in one submission object (rows' order), plus the failure block if any."""
    videos = []
    for row in rows:
        if not row.scored:
            continue
        path = outdir / row.output
        data = json.loads(path.read_text(encoding="utf-8"))
        parse_submission(data, str(path), labels)
        videos.extend(data["videos"])
    submission: dict[str, Any] = {"videos": videos}
    failed = [row.video_id for row in rows if row.status == FAILED]
    incomplete = [row.video_id for row in rows if row.status == INCOMPLETE]
    if failed or incomplete:
        submission["vce_stream"] = {"failed": failed, "incomplete": incomplete}
    return submission


def summary_csv(rows: Sequence[ExamRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    for r in rows:
        writer.writerow([r.exam, r.video_id, r.status, r.frames, r.events, f"{r.seconds:.3f}", f"{r.fps:.1f}", r.output or "", r.error or ""])
    return buffer.getvalue()


def format_table(rows: Sequence[ExamRow], *, max_error: int = 60) -> str:
    """The summary as an aligned text table (what the CLI prints)."""
    header = ("exam", "frames", "events", "seconds", "frames/s", "status")
    lines = [header]
    for r in rows:
        status = r.status if not r.error else f"{r.status}: {_clip(r.error, max_error)}"
        lines.append((r.exam, str(r.frames), str(r.events), f"{r.seconds:.1f}", f"{r.fps:.1f}", status))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    numeric = (False, True, True, True, True)
    out = []
    for line in lines:
        cells = [cell.rjust(w) if right else cell.ljust(w) for cell, w, right in zip(line, widths, numeric)]
        out.append("  ".join([*cells, line[-1]]).rstrip())
    return "\n".join(out)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def write_combined(outdir: Path, rows: Sequence[ExamRow], labels: Sequence[str]) -> tuple[Path, Path]:
    """Write OUTDIR/submission.json and OUTDIR/summary.csv atomically; return their paths."""
    submission_path, summary_path = outdir / SUBMISSION_NAME, outdir / SUMMARY_NAME
    atomic_write_text(submission_path, dump_submission(combined_submission(rows, outdir, labels)))
    atomic_write_text(summary_path, summary_csv(rows))
    return submission_path, summary_path


def write_report_index(path: Path, rows: Sequence[ExamRow], pages: dict[str, str]) -> None:
    """The batch's report index: one line per exam (status, frames, events) linking its review page."""
    from vce_stream.report.page import render_index

    entries = [
        {"exam": r.exam, "video_id": r.video_id, "status": r.status, "frames": r.frames, "events": r.events,
         "page": pages[r.exam] if r.scored and (path.parent / pages[r.exam]).is_file() else None, "error": r.error}
        for r in rows
    ]  # fmt: skip
    atomic_write_text(path, render_index(entries))

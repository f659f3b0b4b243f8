"""The batch journal: an append-only, fsynced record of every exam's state, in OUTDIR/journal.jsonl.

One JSON object a line. `run` opens a batch invocation; `started` marks an exam handed to a worker;
`done`, `incomplete` and `failed` close it with its figures (and, for written outputs, the sha256 of
the exam JSON). The last record of an exam is its state. Each line is written with one `write` on an
O_APPEND descriptor and fsynced before the driver goes on, so after a crash or `kill -9` the journal
holds every state change that happened, except at most a torn last line, which is dropped on reopening.

Only the batch driver writes it (workers return results), and an exclusive lock on the file keeps two
batch runs from sharing an OUTDIR; the kernel releases the lock when its process dies, however it dies.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vce_stream.errors import InputError

JOURNAL_NAME = "journal.jsonl"
RUN = "run"
STARTED = "started"
DONE = "done"
INCOMPLETE = "incomplete"
FAILED = "failed"
FINAL_STATES = (DONE, INCOMPLETE, FAILED)


class Journal:
    """The journal of one OUTDIR, opened for appending (and locked) by the batch driver."""

    def __init__(self, outdir: str | os.PathLike[str]) -> None:
        self.path = Path(outdir) / JOURNAL_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InputError(f"{self.path}: another batch run is using this output folder") from None
            self.records: list[dict[str, Any]] = self._replay()
            if created:
                _fsync_dir(self.path.parent)
        except BaseException:
            os.close(self._fd)
            raise
        self._last: dict[str, dict[str, Any]] = {}
        self._starts: dict[str, int] = {}
        for record in self.records:
            self._index(record)

    def _replay(self) -> list[dict[str, Any]]:
        """The records on disk; a torn last line (a crash mid-write) is cut off so appends stay whole."""
        data = os.pread(self._fd, os.fstat(self._fd).st_size, 0)
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            os.ftruncate(self._fd, complete)
            os.fsync(self._fd)
        records = []
        for number, line in enumerate(data[:complete].splitlines(), start=1):
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                record = None
            if not isinstance(record, dict) or "event" not in record:
                raise InputError(f"{self.path}: line {number} is not a journal record; remove the journal to start over")
            records.append(record)
        return records

    def _index(self, record: dict[str, Any]) -> None:
        key = record.get("exam")
        if key is None:
            return
        self._last[key] = record
        if record["event"] == STARTED:
            self._starts[key] = self._starts.get(key, 0) + 1

    def append(self, event: str, exam: str | None = None, **fields: Any) -> dict[str, Any]:
        """Write one record durably (written and fsynced when this returns) and return it."""
        record: dict[str, Any] = {"event": event, "time": round(time.time(), 3)}
        if exam is not None:
            record["exam"] = exam
        record.update(fields)
        line = json.dumps(record, ensure_ascii=True, sort_keys=True).encode("ascii") + b"\n"
        written = os.write(self._fd, line)
        if written != len(line):  # a full disk: never leave a torn line behind a good one
            os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
            raise OSError(f"{self.path}: short write ({written} of {len(line)} bytes)")
        os.fsync(self._fd)
        self.records.append(record)
        self._index(record)
        return record

    def begin_run(self, **fields: Any) -> dict[str, Any]:
        return self.append(RUN, host=socket.gethostname(), pid=os.getpid(), **fields)

    def last(self, exam: str) -> dict[str, Any] | None:
        """The exam's latest record (its state), or None if it never appeared."""
        return self._last.get(exam)

    def starts(self, exam: str) -> int:
        """How many times the exam was handed to a worker, over all runs."""
        return self._starts.get(exam, 0)

    def runs(self) -> Iterator[dict[str, Any]]:
        return (r for r in self.records if r["event"] == RUN)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the lock
            self._fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_journal(outdir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The complete records of OUTDIR's journal, read without locking (for reports and tests)."""
    path = Path(outdir) / JOURNAL_NAME
    records = []
    with open(path, "rb") as handle:
        for line in handle:
            if line.endswith(b"\n"):
                records.append(json.loads(line))
    return records


def _fsync_dir(path: Path) -> None:
    """Make a new directory entry durable (the file's own fsync does not cover its name)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

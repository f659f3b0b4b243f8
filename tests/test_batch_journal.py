"""The batch journal: durable appends, replay, a torn last line after a crash, one batch run per OUTDIR."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vce_stream.batch.journal import DONE, FAILED, JOURNAL_NAME, STARTED, Journal, read_journal
from vce_stream.errors import InputError


def test_records_are_replayed_and_the_last_record_is_the_state(tmp_path):
    with Journal(tmp_path) as journal:
        journal.begin_run(exams=2)
        journal.append(STARTED, "a.mp4")
        journal.append(STARTED, "b.mp4")
        journal.append(FAILED, "b.mp4", error="broken")
        journal.append(DONE, "a.mp4", frames=10)
        journal.append(STARTED, "b.mp4")
    with Journal(tmp_path) as journal:
        assert journal.last("a.mp4")["event"] == DONE and journal.last("a.mp4")["frames"] == 10
        assert journal.last("b.mp4")["event"] == STARTED
        assert journal.starts("a.mp4") == 1 and journal.starts("b.mp4") == 2
        assert journal.last("c.mp4") is None
        assert [r["exams"] for r in journal.runs()] == [2]


def test_a_torn_last_line_is_cut_off_and_later_appends_stay_whole(tmp_path):
    with Journal(tmp_path) as journal:
        journal.append(DONE, "a.mp4")
    path = tmp_path / JOURNAL_NAME
    with open(path, "ab") as handle:  # what a kill in the middle of a write leaves
        handle.write(b'{"event": "done", "exam": "b.m')
    with Journal(tmp_path) as journal:
        assert journal.last("b.mp4") is None
        journal.append(DONE, "c.mp4")
    assert [r["exam"] for r in read_journal(tmp_path)] == ["a.mp4", "c.mp4"]
    assert path.read_bytes().endswith(b"\n")


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=8), st.floats(min_value=0.0, max_value=1.0))
def test_a_journal_cut_at_any_byte_replays_a_prefix_of_its_records(tmp_path_factory, count, share):
    root = tmp_path_factory.mktemp("journal")
    with Journal(root) as journal:
        written = [journal.append(DONE, f"exam_{i}.mp4", frames=i) for i in range(count)]
    path = root / JOURNAL_NAME
    raw = path.read_bytes()
    cut = round(share * len(raw))
    path.write_bytes(raw[:cut])
    with Journal(root) as journal:
        replayed = journal.records
    assert replayed == written[: len(replayed)]
    assert len(replayed) == raw[:cut].count(b"\n")


def test_a_corrupt_line_in_the_middle_is_refused_with_its_line_number(tmp_path):
    (tmp_path / JOURNAL_NAME).write_text('{"event": "run"}\nnot json\n{"event": "run"}\n')
    with pytest.raises(InputError, match="line 2"):
        Journal(tmp_path)


def test_a_second_batch_run_on_the_same_outdir_is_refused(tmp_path):
    with Journal(tmp_path):
        with pytest.raises(InputError, match="another batch run"):
            Journal(tmp_path)
    Journal(tmp_path).close()  # released with the first


def test_the_lock_dies_with_a_killed_process(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from vce_stream.batch.journal import Journal; j = Journal(sys.argv[1]); print('locked', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InputError):
            Journal(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    Journal(tmp_path).close()


def test_records_are_one_json_object_per_line(tmp_path):
    with Journal(tmp_path) as journal:
        journal.append(DONE, "odd\nname\u2028.mp4", error="line\nbreak")
    lines = (tmp_path / JOURNAL_NAME).read_bytes().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["exam"] == "odd\nname\u2028.mp4"
    assert Path(tmp_path / JOURNAL_NAME).read_bytes().isascii()

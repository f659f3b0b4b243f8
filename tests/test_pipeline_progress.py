"""The progress line and bar: share of the exam, frames/s, ETA; silent when disabled."""

from __future__ import annotations

import io

from vce_stream.pipeline.progress import ProgressBar, format_duration, progress_line


def test_progress_line_shows_share_rate_and_eta():
    line = progress_line("exam", 2500, 10_000, 10.0)
    assert "[######" in line and " 25.0%" in line and "2500/10000 frames" in line
    assert "250.0 frames/s" in line and "ETA 0:30" in line


def test_progress_line_without_a_known_length_has_no_bar():
    line = progress_line("stdin", 120, None, 4.0)
    assert "[" not in line and "%" not in line and "30.0 frames/s" in line


def test_format_duration():
    assert format_duration(59.6) == "1:00" and format_duration(3725) == "1:02:05"


def test_a_disabled_bar_writes_nothing_and_an_enabled_one_erases_itself():
    quiet = io.StringIO()
    bar = ProgressBar("x", 10, quiet, enabled=False)
    bar.update(5)
    bar.close()
    assert quiet.getvalue() == ""
    loud = io.StringIO()
    bar = ProgressBar("x", 10, loud, enabled=True, interval=0.0)
    bar.update(5)
    bar.close()
    text = loud.getvalue()
    assert "50.0%" in text and text.endswith("\r") and text.startswith("\r")

"""The progress bar (a terminal only) and the one-line summary of a run."""

from __future__ import annotations

import time
from typing import TextIO


def format_duration(seconds: float) -> str:
    """h:mm:ss or m:ss."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(name: str, frames: int, total: int | None, seconds: float, width: int = 24) -> str:
    """`name [#####.....]  42.0%  12345/29400 frames  311.2 frames/s  ETA 0:48` (no bar when total unknown)."""
    rate = frames / seconds if seconds > 0 else 0.0
    if not total:
        return f"{name}  {frames} frames  {rate:.1f} frames/s  {format_duration(seconds)}"
    share = min(1.0, frames / total)
    done = int(share * width)
    eta = (total - frames) / rate if rate > 0 and frames < total else 0.0
    return (
        f"{name} [{'#' * done}{'.' * (width - done)}] {100 * share:5.1f}%  {frames}/{total} frames  "
        f"{rate:.1f} frames/s  ETA {format_duration(eta)}"
    )


class ProgressBar:
    """Redraws one status line on `stream` at most every `interval` seconds; silent when disabled."""

    def __init__(self, name: str, total: int | None, stream: TextIO, *, enabled: bool, interval: float = 0.5) -> None:
        self.name = name
        self.total = total
        self.stream = stream
        self.enabled = enabled
        self.interval = interval
        self._start = time.perf_counter()
        self._last_draw = 0.0
        self._width = 0

    def update(self, frames: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last_draw < self.interval:
            return
        self._last_draw = now
        self._draw(progress_line(self.name, frames, self.total, now - self._start))

    def _draw(self, line: str) -> None:
        pad = max(0, self._width - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._width = len(line)

    def close(self) -> None:
        """Erase the bar, so the summary line that follows stands alone."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

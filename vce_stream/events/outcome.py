"""One exam's outcome: what a run did, in one record that `run`, `batch` workers and the batch summary share.

An incomplete outcome (the input broke part way, or the run was stopped) still has its decided events
written; `error` says why it stopped and `stopped_at_frame` where.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vce_stream.errors import EXIT_INCOMPLETE, EXIT_OK


@dataclass(frozen=True)
class ExamOutcome:
    """input: the source's name. video_id: the id written in the JSON. out: the event JSON path.
    frames: frames scored. events: label events written. first_frame/last_frame: the scored index range.
    damaged/missing/untimed: the source's damage counters."""

    input: str
    video_id: str
    out: str
    frames: int
    events: int
    seconds: float
    first_frame: int
    last_frame: int
    damaged: int = 0
    missing: int = 0
    untimed: int = 0
    incomplete: bool = False
    error: str | None = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def stopped_at_frame(self) -> int | None:
        """The first frame index not scored, for an incomplete exam."""
        return self.last_frame + 1 if self.incomplete else None

    @property
    def exit_code(self) -> int:
        """The exit status `vce-stream run` ends with for this outcome (0, or 3 when incomplete)."""
        return EXIT_INCOMPLETE if self.incomplete else EXIT_OK

    def line(self) -> str:
        """The final one-line summary."""
        text = (
            f"{self.video_id}: {self.frames} frames, {self.events} label events, {self.seconds:.1f} s, "
            f"{self.fps:.1f} frames/s"
        )
        notes = [
            f"{count} {what}"
            for count, what in (
                (self.damaged, "damaged frames skipped"),
                (self.missing, "frames missing"),
                (self.untimed, "frames without timestamp"),
            )
            if count
        ]
        if notes:
            text += " (" + ", ".join(notes) + ")"
        if self.incomplete:
            text += f"; INCOMPLETE, stopped at frame {self.stopped_at_frame}; partial events in {self.out}"
        return text

    def report(self) -> dict[str, Any]:
        """The `vce_stream` block written into the JSON of an incomplete exam."""
        return {
            "incomplete": self.incomplete,
            "stopped_at_frame": self.stopped_at_frame,
            "error": self.error,
            "frames": self.frames,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "damaged_frames": self.damaged,
            "missing_frames": self.missing,
        }

"""One detected event: a run of frames where one label is present."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Event:
    """A single-label event.

    start, end: frame indices, both inclusive (SPEC §2: a one-frame event has start == end).
    label: one of the bundle's labels.
    score: the confidence used to rank events in the file (the mean probability of the label over the
        event's frames, for events from the temporal stage).
    """

    start: int
    end: int
    label: str
    score: float = 0.0

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"event ends before it starts: {self}")

    @property
    def length(self) -> int:
        return self.end - self.start + 1

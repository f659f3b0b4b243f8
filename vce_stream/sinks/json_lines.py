"""The `--follow` sink: each event as one JSON line the moment the post-processing closes it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TextIO

from vce_stream.events.event import Event
from vce_stream.sinks import Sink, register_sink


@register_sink("json-lines")
class JsonLinesSink(Sink):
    """Writes each event as one JSON line the moment the temporal stage closes it (for live use).

    Line: {"video_id": ..., "start": ..., "end": ..., "label": [...], "score": ..., **extra}. Flushed per
    call, so a reader of a pipe sees events while the exam still streams. If the reader goes away (a
    closed pipe), the sink goes quiet: the event JSON is still written by its own sink.
    """

    what = "JSON lines"

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.count = 0
        self.broken = False

    def emit(self, video_id: str, events: Sequence[Event], **extra: object) -> None:
        if self.broken:
            return
        try:
            for ev in events:
                record = {"video_id": video_id, "start": ev.start, "end": ev.end, "label": [ev.label], "score": round(ev.score, 6)}
                record.update(extra)
                self.stream.write(json.dumps(record) + "\n")
                self.count += 1
            if events:
                self.stream.flush()
        except OSError:
            self.broken = True

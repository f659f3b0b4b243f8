import io
import json

import numpy as np

from vce_stream.postprocess.config import TemporalConfig
from vce_stream.sinks.json_lines import JsonLinesSink
from vce_stream.postprocess.streaming import MedianGapState


def test_json_lines_sink_writes_each_event_when_the_state_machine_closes_it():
    stream = io.StringIO()
    sink = JsonLinesSink(stream)
    state = MedianGapState(("polyp",), [0.5], TemporalConfig())
    probs = np.zeros((60, 1))
    probs[10:20] = 0.9
    lines_after_push = []
    for lo in range(0, 60, 5):
        sink.emit("exam", state.push(np.arange(lo, lo + 5), probs[lo : lo + 5]))
        lines_after_push.append(stream.getvalue().count("\n"))
    sink.emit("exam", state.flush())
    # The event 10..19 is out by the push that delivers frame 19 + lag, long before the video ends.
    first_seen = next(i for i, n in enumerate(lines_after_push) if n)
    assert (first_seen + 1) * 5 - 1 <= 19 + TemporalConfig().lag + 4
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert records == [{"video_id": "exam", "start": 10, "end": 19, "label": ["polyp"], "score": 0.9}]
    assert sink.count == 1

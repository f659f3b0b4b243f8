"""The post-processing stage of a streaming run: one interface over the two live deciders.

`run` pushes every scored batch through one `EventStage` and gets back the events that just closed:
with the metric-aware decoding off it is the paper's filter (`MedianGapState`, every event final);
with it on it is `LiveDecoder` (an event is provisional until its label is decided for the video).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vce_stream.postprocess.config import PostprocessConfig
from vce_stream.postprocess.live import LiveDecoder, LiveEvent
from vce_stream.postprocess.streaming import MedianGapState


class EventStage:
    """push(frame_indices, probs) -> closed events; flush() -> the rest. Each is a `LiveEvent`
    (`.event`, `.final`)."""

    def __init__(self, labels: Sequence[str], config: PostprocessConfig) -> None:
        self.decoding = config.decoding.enabled
        if self.decoding:
            self._live = LiveDecoder(labels, config)
        else:
            self._state = MedianGapState(labels, config.thresholds_for(len(labels)), config.temporal)

    def push(self, frame_indices: np.ndarray, probs: np.ndarray) -> list[LiveEvent]:
        if self.decoding:
            return self._live.push(frame_indices, probs)
        return [LiveEvent(event, True) for event in self._state.push(frame_indices, probs)]

    def flush(self) -> list[LiveEvent]:
        if self.decoding:
            return self._live.flush()
        return [LiveEvent(event, True) for event in self._state.flush()]

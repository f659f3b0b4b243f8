"""Frame probabilities of whole videos -> events, through the streaming engine (as `run` does)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vce_stream.postprocess.config import PostprocessConfig
from vce_stream.postprocess.decode import decode_events
from vce_stream.events.event import Event
from vce_stream.postprocess.streaming import MedianGapState

REPLAY_BATCH = 256  # frames per push when replaying saved scores; any size gives the same events


def stream_events(
    frame_indices: np.ndarray, probs: np.ndarray, labels: Sequence[str], config: PostprocessConfig
) -> list[Event]:
    """All events of one video, pushed through `MedianGapState` in batches, then flushed."""
    state = MedianGapState(labels, config.thresholds_for(len(labels)), config.temporal)
    events: list[Event] = []
    for lo in range(0, len(frame_indices), REPLAY_BATCH):
        events.extend(state.push(frame_indices[lo : lo + REPLAY_BATCH], probs[lo : lo + REPLAY_BATCH]))
    events.extend(state.flush())
    return events


def video_events(
    frame_indices: np.ndarray, probs: np.ndarray, labels: Sequence[str], config: PostprocessConfig
) -> list[Event]:
    """The events written to the final file for one whole video.

    This is the one function `postprocess`, `run` (for its final file) and the tuning of `calibrate`
    and training (`tuning.decide_events`) call, so every path decides events the same way. With `config.decoding` enabled it is the metric-aware decoding
    (vce_stream.postprocess.decode), otherwise the paper's post-processing through the streaming engine.
    """
    if config.decoding.enabled:
        return decode_events(frame_indices, probs, labels, config)
    return stream_events(frame_indices, probs, labels, config)

"""The decoding while the exam streams: which live events are final and which are provisional.

`LiveDecoder` takes the batches `run` scores and returns single-label runs as soon as they are decided,
each marked final or provisional:
- pathologies (and any label without a special rule): runs from the streaming filter (`MedianGapState`);
  with gating on, a run is final once its label is present (this run or an earlier one reached the gate)
  and provisional before that; when a label becomes present, its earlier provisional runs are returned
  again as final;
- anatomy (when on): one run per section from the fixed-lag online Viterbi, final once the path has
  moved past the section (`anatomy.lag` frames later), subject to the same gates;
- landmarks (when on): provisional, since their cap and proximity rule need the whole path.
The final file is decided by `decode.decode_events` on the whole video; it keeps every final label and
cuts the runs at tuple boundaries. Frames are fed to the Viterbi as they arrive (holes are not filled).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vce_stream.postprocess.anatomy import OnlineMonotoneViterbi, section_emissions
from vce_stream.postprocess.config import PostprocessConfig, per_label
from vce_stream.postprocess.decode import anatomy_columns
from vce_stream.postprocess.gating import PresenceGate
from vce_stream.postprocess.landmarks import LANDMARK_SECTIONS
from vce_stream.events.event import Event
from vce_stream.postprocess.streaming import MedianGapState


@dataclass(frozen=True)
class LiveEvent:
    """A decided run and whether the final file will contain its label (final) or may drop it (provisional)."""

    event: Event
    final: bool


class LiveDecoder:
    """`push(frame_indices, probs) -> live events now decided`; `flush()` at the end of the video."""

    def __init__(self, labels: Sequence[str], config: PostprocessConfig) -> None:
        self.labels = tuple(labels)
        self._index = {label: c for c, label in enumerate(self.labels)}
        decoding = config.decoding
        self._filter = MedianGapState(self.labels, config.thresholds_for(len(self.labels)), config.temporal)
        self._gating = decoding.enabled and decoding.gating.enabled
        self._gate = PresenceGate(per_label(decoding.gating.gates, len(self.labels), "decoding.gating.gates values"))
        self._powers = per_label(decoding.gating.evidence_power, len(self.labels), "decoding.gating.evidence_power values")
        self._pending: list[list[Event]] = [[] for _ in self.labels]  # provisional runs per label
        self._landmarks = decoding.enabled and decoding.landmarks.enabled
        columns = anatomy_columns(self.labels)
        self._sections = columns if decoding.enabled and decoding.anatomy.enabled and columns is not None else None
        if self._sections is not None:
            self._viterbi = OnlineMonotoneViterbi(len(self._sections), decoding.anatomy.switch_penalty, decoding.anatomy.lag)
            self._eps = decoding.anatomy.eps
            self._waiting: list[tuple[np.ndarray, np.ndarray]] = []  # (frame indices, section probs) not yet decided
            self._open: tuple[int, int, int, float, int] | None = None  # section, first, last frame, prob sum, frames

    def push(self, frame_indices: np.ndarray, probs: np.ndarray) -> list[LiveEvent]:
        frame_indices = np.asarray(frame_indices, dtype=np.int64)
        probs = np.asarray(probs)
        out = self._runs(self._filter.push(frame_indices, probs))
        if self._sections is not None and frame_indices.size:
            section_probs = probs[:, self._sections]
            self._waiting.append((frame_indices, section_probs))
            out += self._sections_decided(self._viterbi.push(section_emissions(section_probs, self._eps)))
        return out

    def flush(self) -> list[LiveEvent]:
        out = self._runs(self._filter.flush())
        if self._sections is not None:
            out += self._sections_decided(self._viterbi.flush())
            if self._open is not None:
                out += self._close_section()
        return out

    # -- internals --------------------------------------------------------------------------------------

    def _runs(self, events: list[Event]) -> list[LiveEvent]:
        out: list[LiveEvent] = []
        for ev in events:
            c = self._index[ev.label]
            if self._sections is not None and c in self._sections:
                continue  # anatomy comes from the path
            if self._landmarks and ev.label in LANDMARK_SECTIONS:
                out.append(LiveEvent(ev, False))
                continue
            out += self._gated(c, ev)
        return out

    def _gated(self, c: int, ev: Event) -> list[LiveEvent]:
        if not self._gating:
            return [LiveEvent(ev, True)]
        was_present = self._gate.present[c]
        if self._gate.observe(c, ev.score * ev.length ** self._powers[c]):
            promoted = [] if was_present else [LiveEvent(p, True) for p in self._pending[c]]
            self._pending[c] = []
            return promoted + [LiveEvent(ev, True)]
        self._pending[c].append(ev)
        return [LiveEvent(ev, False)]

    def _sections_decided(self, sections: np.ndarray) -> list[LiveEvent]:
        out: list[LiveEvent] = []
        for section in sections.tolist():
            frames, probs = self._waiting[0]
            frame, p = int(frames[0]), float(probs[0, section])
            if frames.size == 1:
                self._waiting.pop(0)
            else:
                self._waiting[0] = (frames[1:], probs[1:])
            if self._open is not None and self._open[0] != section:
                out += self._close_section()
            if self._open is None:
                self._open = (section, frame, frame, p, 1)
            else:
                s, first, _, total, count = self._open
                self._open = (s, first, frame, total + p, count + 1)
        return out

    def _close_section(self) -> list[LiveEvent]:
        section, first, last, total, count = self._open
        self._open = None
        c = self._sections[section]
        return self._gated(c, Event(first, last, self.labels[c], total / count))

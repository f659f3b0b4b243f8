"""Live decoding: final live events agree with the final file; provisional ones are what it may drop."""

from __future__ import annotations

import numpy as np

from vce_stream.config import from_dict
from vce_stream.postprocess.config import PostprocessConfig
from vce_stream.postprocess.decode import decode_events
from vce_stream.postprocess.live import LiveDecoder
from vce_stream.labels import LABELS


def stream(decoder: LiveDecoder, frames: np.ndarray, probs: np.ndarray, batch: int = 128):
    out = []
    for lo in range(0, frames.size, batch):
        out += decoder.push(frames[lo : lo + batch], probs[lo : lo + batch])
    return out + decoder.flush()


def scene(seed: int = 0, n: int = 4000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    probs = np.clip(rng.normal(0.2, 0.15, (n, len(LABELS))), 0, 1).astype(np.float32)
    sections = np.repeat([0, 1, 2, 3, 4], [40, 60, 900, 2000, 1000])
    probs[np.arange(n), sections] = np.clip(rng.normal(0.75, 0.2, n), 0, 1)
    probs[300:330, LABELS.index("ulcer")] = 0.55  # weak first ulcer: provisional until ...
    probs[2500:2560, LABELS.index("ulcer")] = 0.95  # ... a convincing one makes ulcer present
    probs[1200:1210, LABELS.index("polyp")] = 0.6  # a weak polyp that never passes its gate
    return probs


def config(gating: bool = True, **decoding) -> PostprocessConfig:
    return from_dict(PostprocessConfig, {
        "thresholds": 0.5, "segmentation": "label",
        "decoding": {"enabled": True, "gating": {"enabled": gating, "gates": [0.9] * len(LABELS)}, **decoding},
    })


def test_live_gating_agrees_with_the_final_file():
    probs = scene()
    frames = np.arange(probs.shape[0])
    cfg = config()
    live = stream(LiveDecoder(LABELS, cfg), frames, probs)
    final = decode_events(frames, probs, LABELS, cfg)
    final_labels = {ev.label for ev in final}
    assert {le.event.label for le in live if le.final} == final_labels
    assert "ulcer" in final_labels and "polyp" not in final_labels
    ulcer = [le for le in live if le.event.label == "ulcer"]
    # The weak ulcer first arrives provisional, then again as final once the strong one passes the gate.
    assert [(le.event.start, le.final) for le in ulcer] == [(300, False), (300, True), (2500, True)]
    assert all(not le.final for le in live if le.event.label == "polyp")
    # Each final run is covered by the final file's (tuple-cut) events of its label.
    for le in live:
        if le.final:
            covered = {f for ev in final if ev.label == le.event.label for f in range(ev.start, ev.end + 1)}
            assert set(range(le.event.start, le.event.end + 1)) <= covered


def test_live_anatomy_with_a_long_lag_equals_the_final_sections_and_is_final_in_order():
    probs = scene(1)
    frames = np.arange(probs.shape[0])
    cfg = config(gating=False, anatomy={"enabled": True, "switch_penalty": 10.0, "lag": probs.shape[0] + 1})
    live = [le for le in stream(LiveDecoder(LABELS, cfg), frames, probs) if le.event.label in LABELS[:5]]
    final = [ev for ev in decode_events(frames, probs, LABELS, cfg) if ev.label in LABELS[:5]]
    spans = {label: (min(e.start for e in final if e.label == label), max(e.end for e in final if e.label == label)) for label in LABELS[:5]}
    assert [(le.event.label, le.event.start, le.event.end) for le in live] == [(label, *spans[label]) for label in LABELS[:5]]
    assert all(le.final for le in live)


def test_live_anatomy_with_a_short_lag_emits_sections_while_streaming():
    probs = scene(2)
    frames = np.arange(probs.shape[0])
    cfg = config(anatomy={"enabled": True, "switch_penalty": 10.0, "lag": 200})
    decoder = LiveDecoder(LABELS, cfg)
    early = []
    for lo in range(0, 3200, 100):  # the colon starts at frame 3000: stomach and esophagus are decided by now
        early += decoder.push(frames[lo : lo + 100], probs[lo : lo + 100])
    sections = [le.event.label for le in early if le.event.label in LABELS[:5]]
    assert sections[:3] == ["mouth", "esophagus", "stomach"]


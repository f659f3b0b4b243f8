"""The report page: self-contained, escaped, bounded in size, honest about what it knows."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vce_stream.events.event import Event
from vce_stream.labels import LABELS
from vce_stream.report.page import ReportFacts, curve_envelope, merge_touching, render_html, render_report, section_spans
from vce_stream.report.thumbnails import KeyFrameCollector, KeyFrameSettings


def exam(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame indices, probabilities and a monotone section path of a random exam of `n` frames."""
    rng = np.random.default_rng(seed)
    frames = np.arange(n, dtype=np.int64)
    probs = rng.random((n, len(LABELS))).astype(np.float32) * 0.3
    path = np.minimum(4, frames * 5 // n)
    return frames, probs, path


def key_frames(frames, probs, **kw):
    collector = KeyFrameCollector(LABELS, KeyFrameSettings(thumb_size=16, **kw))
    for a in range(0, frames.size, 256):
        idx = frames[a : a + 256]
        collector.push(idx, np.full((idx.size, 16, 16, 3), 128, np.uint8), probs[a : a + 256])
    return collector.result()


def page(facts: ReportFacts, events, frames, probs, path, **kw) -> str:
    return render_html(facts=facts, labels=LABELS, events=events, frame_indices=frames, probs=probs, key_frames=key_frames(frames, probs, **kw), anatomy_path=path)


def data_of(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    return json.loads(match.group(1))


def facts_for(frames: np.ndarray, **kw) -> ReportFacts:
    base = dict(input="exam.mkv", video_id="exam", frames=int(frames.size), first_frame=int(frames[0]), last_frame=int(frames[-1]))
    return ReportFacts(**{**base, **kw})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 1, width=32), min_size=1, max_size=300), st.integers(1, 50), st.integers(0, 3))
def test_curve_envelope_keeps_every_buckets_minimum_and_maximum(values, max_points, offset):
    values = np.asarray(values, dtype=np.float32)
    frames = np.arange(values.size, dtype=np.int64) * (offset + 1)  # holes when offset > 0
    first, last = 0, int(frames[-1])
    width, lo, hi = curve_envelope(frames, values, first, last, max_points)
    assert lo.size <= max_points and lo.size * width >= last - first + 1
    for b in range(lo.size):
        inside = values[(frames >= b * width) & (frames < (b + 1) * width)]
        if inside.size:
            assert lo[b] == inside.min() and hi[b] == inside.max()
        else:
            assert lo[b] > hi[b]  # an empty bucket says so


def test_page_is_self_contained_and_escapes_what_it_shows():
    frames, probs, path = exam(500)
    nasty = '</script><script>alert("x")</script>'
    facts = facts_for(frames, input=nasty, video_id="<b>v&1</b>", notes=(nasty,))
    html = page(facts, [Event(10, 20, "polyp", 0.9)], frames, probs, path)
    assert nasty not in html and "<b>v&1</b>" not in html
    assert "&lt;b&gt;v&amp;1&lt;/b&gt;" in html
    assert html.count("<script") == 2  # the data block and the drawing code, nothing injected
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html)  # nothing fetched from anywhere
    assert "<link" not in html and "@import" not in html
    assert "Reading aid, not a diagnosis" in html
    assert data_of(html)["lanes"][[lane["label"] for lane in data_of(html)["lanes"]].index("polyp")]["events"] == [[10, 20, 0.9]]


def test_page_without_events_says_nothing_was_found_and_keeps_the_anatomy_bar():
    frames, probs, path = exam(400)
    html = page(facts_for(frames), [], frames, probs, path)
    assert "Nothing was found" in html
    sections = data_of(html)["sections"]
    assert [s["label"] for s in sections] == ["mouth", "esophagus", "stomach", "small intestine", "colon"]
    assert sections[0]["start"] == 0 and sections[-1]["end"] == 399


def test_page_states_frame_indices_only_without_timestamps_and_times_with_them():
    frames, probs, path = exam(300)
    events = [Event(250, 260, "ulcer", 0.8)]
    untimed = page(facts_for(frames, fps=None), events, frames, probs, path)
    assert "frame indices only" in untimed and "times from the source" not in untimed
    timed = page(facts_for(frames, fps=25.0), events, frames, probs, path)
    assert "times from the source" in timed and "frames 250–260 (0:10)" in timed


def test_a_130000_frame_exam_gives_a_bounded_file(tmp_path):
    sizes = {}
    for n in (10_000, 130_000):
        frames, probs, path = exam(n, seed=n)
        out = tmp_path / f"r{n}.html"
        kf = key_frames(frames, probs, top_k=4, top_n=20)
        render_report(out, facts=facts_for(frames), labels=LABELS, events=[], frame_indices=frames, probs=probs, key_frames=kf, anatomy_path=path)
        curves = data_of(out.read_text())["curves"]
        sizes[n] = (out.stat().st_size, sum(len(base64.b64decode(c["hi"])) for c in curves.values()))
    assert max(sizes[130_000][1], sizes[10_000][1]) <= 18 * 1500  # at most 1,500 buckets a curve, whatever the length
    assert sizes[130_000][0] < 1.25 * sizes[10_000][0]  # so neither does the file (thumbnails are bounded)


def test_section_spans_and_touching_events():
    frames = np.array([5, 6, 7, 9, 10], dtype=np.int64)
    assert [(s["label"], s["start"], s["end"]) for s in section_spans(np.array([0, 0, 2, 2, 4]), frames)] == [
        ("mouth", 5, 6),
        ("stomach", 7, 9),
        ("colon", 10, 10),
    ]
    merged = merge_touching([Event(10, 19, "z-line", 1.0), Event(20, 29, "z-line", 0.5), Event(40, 41, "z-line", 0.2), Event(20, 22, "polyp", 0.3)])
    assert [(e.start, e.end, e.label, round(e.score, 3)) for e in merged] == [(20, 22, "polyp", 0.3), (10, 29, "z-line", 0.75), (40, 41, "z-line", 0.2)]

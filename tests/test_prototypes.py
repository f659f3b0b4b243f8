"""Few-shot prototypes: calibration, scoring, storage in the bundle, CLI, and events found from 5 examples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vce_stream.cli import main
from vce_stream.postprocess.config import TemporalConfig
from vce_stream.embeddings.store import EmbeddingWriter
from vce_stream.errors import InputError
from vce_stream.model.bundle import load_bundle
from vce_stream.model.random_bundle import create_random_bundle
from vce_stream.model.prototypes import (
    Prototype,
    PrototypeSet,
    add_prototype,
    build_prototype,
    findings_document,
    gather_examples,
    load_prototypes,
    prototype_probs,
    write_findings,
)
from vce_stream.postprocess.filters import offline_events

DIM = 32  # the tiny bundle's feature size


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def synthetic_exam(frames: int, segments: list[tuple[int, int]], finding: np.ndarray, seed: int) -> np.ndarray:
    """Unit features of an exam: mucosa (a slowly drifting direction + noise), and inside `segments` a
    finding direction mixed with the mucosa and noise (so cosines of the two overlap a little)."""
    rng = np.random.default_rng(seed)
    drift = np.cumsum(rng.standard_normal((frames, DIM)) * 0.02, axis=0)
    mucosa = unit(np.ones(DIM) + drift)
    rows = mucosa + rng.standard_normal((frames, DIM)) * 0.1
    for start, end in segments:
        rows[start:end + 1] = 0.7 * finding + 0.3 * mucosa[start:end + 1] + rng.standard_normal((end - start + 1, DIM)) * 0.1
    return unit(rows)


def write(path: Path, rows: np.ndarray, bundle_hash: str, video_id: str) -> Path:
    with EmbeddingWriter(path, rows.shape[1], bundle_hash, video_id) as writer:
        writer.push(np.arange(len(rows)), rows)
    return path


def match_events(events, truth: list[tuple[int, int]], min_iou: float = 0.3) -> int:
    """Greedy one-to-one matches of predicted events and ground-truth segments at temporal IoU >= min_iou."""
    used, hits = set(), 0
    for e in events:
        for j, (s, t) in enumerate(truth):
            inter = min(e.end, t) - max(e.start, s) + 1
            union = max(e.end, t) - min(e.start, s) + 1
            if j not in used and inter > 0 and inter / union >= min_iou:
                used.add(j)
                hits += 1
                break
    return hits


@pytest.fixture
def bundle(tmp_path):
    return load_bundle(create_random_bundle(tmp_path / "bundle", "tiny", seed=0))


@settings(max_examples=20, deadline=None)
@given(threshold=st.floats(-0.9, 0.9), temperature=st.floats(0.01, 0.5), seed=st.integers(0, 10_000))
def test_prototype_probs_is_one_half_at_the_threshold_and_increases_with_cosine(threshold, temperature, seed):
    vector = unit(np.random.default_rng(seed).standard_normal(DIM))
    protos = PrototypeSet(1, (Prototype("x", vector, threshold, temperature, (), True),))
    other = unit(np.random.default_rng(seed + 1).standard_normal(DIM))
    other = unit(other - (other @ vector) * vector)  # orthogonal to the prototype
    cosines = np.linspace(-0.95, 0.95, 21)
    feats = unit(cosines[:, None] * vector + np.sqrt(1 - cosines[:, None] ** 2) * other)
    probs = prototype_probs(feats, protos)[:, 0]
    assert np.all(np.diff(probs) >= 0)
    at = unit(threshold * vector + np.sqrt(1 - threshold**2) * other)
    assert prototype_probs(at[None], protos)[0, 0] == pytest.approx(0.5, abs=1e-3)


def test_calibrated_threshold_separates_examples_from_background():
    finding = unit(np.random.default_rng(1).standard_normal(DIM))
    rows = synthetic_exam(2000, [(500, 540)], finding, seed=0)
    proto = build_prototype("x", rows[[505, 512, 520, 528, 535]], rows[:400], ())
    background_cos = rows[:400] @ proto.vector
    assert proto.separable and proto.threshold > np.quantile(background_cos, 0.99)
    assert (rows[500:541] @ proto.vector > proto.threshold).mean() > 0.8


def test_a_finding_added_from_5_examples_is_found_as_events_in_other_exams(bundle, tmp_path):
    """Synthetic feature sequences (not images): event-level precision and recall of a 5-shot prototype."""
    finding = unit(np.random.default_rng(42).standard_normal(DIM))
    first = [(300, 340), (1200, 1230), (2500, 2560)]
    write(tmp_path / "e0.emb", synthetic_exam(3000, first, finding, seed=0), bundle.content_hash, "e0")
    refs = [f"{tmp_path / 'e0.emb'}:{f}" for f in (305, 320, 1210, 2520, 2550)]
    feats, background, names = gather_examples(refs, bundle.content_hash, DIM)
    protos = add_prototype(bundle.path, build_prototype("angiodysplasia-like", feats, background, names))
    tp = predicted = actual = 0
    for seed in (1, 2, 3):
        rng = np.random.default_rng(seed)
        starts = np.sort(rng.choice(np.arange(100, 2800, 300), size=4, replace=False))
        truth = [(int(s), int(s + rng.integers(15, 60))) for s in starts]
        probs = prototype_probs(synthetic_exam(3000, truth, finding, seed=seed), protos)
        events = offline_events(np.arange(3000), probs, [0.5], TemporalConfig(), protos.labels)
        tp += match_events(events, truth)
        predicted += len(events)
        actual += len(truth)
    precision, recall = tp / predicted, tp / actual
    assert precision >= 0.8 and recall >= 0.8, (precision, recall)


def test_prototypes_are_versioned_hashed_and_leave_the_bundle_hash_alone(bundle, tmp_path):
    vector = unit(np.ones(DIM))
    before = bundle.content_hash
    add_prototype(bundle.path, Prototype("first", vector, 0.5, 0.05, ("e:1",), True))
    protos = add_prototype(bundle.path, Prototype("second", -vector, 0.4, 0.05, ("e:2",), False))
    reloaded = load_bundle(bundle.path)
    assert reloaded.content_hash == before and protos.version == 2 and protos.labels == ("first", "second")
    assert sorted(p.name for p in bundle.path.glob("prototypes*")) == ["prototypes.v2.safetensors"]
    assert load_prototypes(reloaded).prototypes[1].examples == ("e:2",)
    replaced = add_prototype(bundle.path, Prototype("first", -vector, 0.3, 0.05, ("e:3",), True))
    assert replaced.version == 3 and replaced.labels == ("second", "first")
    data = bytearray((bundle.path / "prototypes.v3.safetensors").read_bytes())
    data[-1] ^= 1
    (bundle.path / "prototypes.v3.safetensors").write_bytes(bytes(data))
    with pytest.raises(InputError, match="content hash mismatch"):
        load_prototypes(load_bundle(bundle.path))


def test_findings_file_carries_prototype_events_only(tmp_path):
    from vce_stream.events.event import Event

    protos = PrototypeSet(4, (Prototype("x", unit(np.ones(DIM)), 0.5, 0.05, (), True),))
    write_findings(tmp_path / "f.json", "v1", "a" * 64, protos, [Event(9, 12, "x", 0.75), Event(1, 3, "x", 0.5)])
    doc = json.loads((tmp_path / "f.json").read_text())
    assert doc == findings_document("v1", "a" * 64, protos, [Event(1, 3, "x", 0.5), Event(9, 12, "x", 0.75)])
    assert doc["format"] == "vce-stream-findings" and doc["prototypes_version"] == 4
    assert [(f["start"], f["end"]) for f in doc["findings"]] == [(1, 3), (9, 12)]


def cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


def test_cli_prototypes_add_and_list(bundle, tmp_path, capsys):
    rows = synthetic_exam(600, [(200, 230)], unit(np.random.default_rng(3).standard_normal(DIM)), seed=5)
    emb = write(tmp_path / "e.emb", rows, bundle.content_hash, "e")
    code, out, err = cli(["prototypes", "add", bundle.path, "--label", "new finding",
                          "--examples", ",".join(f"{emb}:{f}" for f in (201, 210, 215, 222, 229))], capsys)
    assert code == 0, err
    assert "prototype 'new finding' from 5 examples" in out and "version 1" in out
    code, out, _ = cli(["prototypes", "list", bundle.path], capsys)
    assert code == 0 and out.splitlines()[1].startswith("new finding\tthreshold")


@pytest.mark.parametrize(
    "examples, label, message",
    [
        ("{other}:1", "x", "another bundle"),
        ("{emb}:9999", "x", "no embedding for frame 9999"),
        ("{emb}", "x", "not EMB:INDEX"),
        ("{emb}:1", "{trained}", "trained labels"),
        (" , ", "x", "empty"),
    ],
)
def test_cli_prototypes_add_bad_input_exits_2_in_one_line(bundle, tmp_path, capsys, examples, label, message):
    rows = unit(np.random.default_rng(0).standard_normal((300, DIM)))
    emb = write(tmp_path / "e.emb", rows, bundle.content_hash, "e")
    other = write(tmp_path / "o.emb", rows, "f" * 64, "o")
    code, out, err = cli(["prototypes", "add", bundle.path, "--label", label.format(trained=bundle.labels[0]),
                          "--examples", examples.format(emb=emb, other=other)], capsys)
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1
    assert not list(bundle.path.glob("prototypes*"))

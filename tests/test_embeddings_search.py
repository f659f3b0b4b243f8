"""Exact frame-to-frame and text-to-frame search over embeddings files, and their CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vce_stream.cli import main
from vce_stream.embeddings.search import (
    Exclusion,
    StoredPromptEncoder,
    exact_search,
    open_exams,
    similar_frames,
    text_search,
)
from vce_stream.embeddings.store import EmbeddingWriter, read_embeddings
from vce_stream.errors import InputError
from vce_stream.model.bundle import load_bundle
from vce_stream.model.random_bundle import create_random_bundle

HASH_A, HASH_B = "a" * 64, "b" * 64


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def write(path: Path, rows: np.ndarray, video_id: str, bundle_hash: str = HASH_A, frames=None) -> Path:
    frames = np.arange(len(rows)) if frames is None else np.asarray(frames)
    with EmbeddingWriter(path, rows.shape[1], bundle_hash, video_id) as writer:
        writer.push(frames, rows)
    return path


def cli(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 30), min_size=1, max_size=4), top=st.integers(1, 12),
       within=st.integers(0, 5), chunk=st.integers(1, 9), seed=st.integers(0, 1000))
def test_exact_search_equals_a_full_sort_with_exclusion(tmp_path_factory, sizes, top, within, chunk, seed):
    root = tmp_path_factory.mktemp("exact")
    exams = [read_embeddings(write(root / f"e{i}.emb", unit_rows(n, 8, seed + i), f"e{i}")) for i, n in enumerate(sizes)]
    query = unit_rows(1, 8, seed + 99)[0]
    hits = exact_search(exams, query, top, Exclusion("e0", 3, within), chunk=chunk)
    everything = [
        (float(np.asarray(e.vectors[r], dtype=np.float32) @ query), p, int(e.frame_indices[r]))
        for p, e in enumerate(exams) for r in range(len(e))
        if not (e.video_id == "e0" and abs(int(e.frame_indices[r]) - 3) <= within)
    ]
    expected = sorted(everything, key=lambda t: (-t[0], t[1], t[2]))[:top]
    assert [(h.exam, h.frame) for h in hits] == [(f"e{p}", f) for _, p, f in expected]
    np.testing.assert_allclose([h.score for h in hits], [s for s, _, _ in expected], rtol=1e-5, atol=1e-6)


def test_similar_finds_the_same_frame_in_another_exam_with_real_tiny_model_features(tmp_path):
    """Features from the tiny random model's one forward pass: a frame repeated in exam B is found."""
    bundle = load_bundle(create_random_bundle(tmp_path / "bundle", "tiny", seed=0))
    model = bundle.build_frame_model()
    g = torch.Generator().manual_seed(0)
    frames_a = torch.randint(0, 256, (20, 32, 32, 3), dtype=torch.uint8, generator=g)
    frames_b = torch.randint(0, 256, (20, 32, 32, 3), dtype=torch.uint8, generator=g)
    frames_b[13] = frames_a[5]
    with torch.no_grad():
        _, feats_a = model.forward_with_features(frames_a)
        _, feats_b = model.forward_with_features(frames_b)
    write(tmp_path / "a.emb", feats_a.numpy(), "A", bundle.content_hash)
    write(tmp_path / "b.emb", feats_b.numpy(), "B", bundle.content_hash)
    exams = open_exams([tmp_path / "a.emb", tmp_path / "b.emb"], bundle_hash=bundle.content_hash)
    query, hits = similar_frames(exams, "A:5", top=3, exclude_within=2)
    assert (query.exam, query.frame) == ("A", 5)
    assert (hits[0].exam, hits[0].frame) == ("B", 13) and hits[0].score > 0.999
    assert all(not (h.exam == "A" and abs(h.frame - 5) <= 2) for h in hits)


def test_text_search_with_the_bundles_stored_prompt_embeddings(tmp_path):
    bundle = load_bundle(create_random_bundle(tmp_path / "bundle", "tiny", seed=1))
    encoder = StoredPromptEncoder.from_bundle(bundle)
    label = bundle.labels[4]
    rows = unit_rows(50, bundle.arch.feature_dim, 0)
    rows[31] = encoder([label])[0]
    exams = open_exams([write(tmp_path / "e.emb", rows, "E", bundle.content_hash)])
    assert text_search(exams, bundle.prompts[4], encoder, top=1)[0].frame == 31
    assert text_search(exams, label.upper(), encoder, top=1)[0].frame == 31
    with pytest.raises(InputError, match="no text tower"):
        text_search(exams, "fresh blood in the small bowel", encoder, top=1)


def test_text_search_with_a_tiny_random_text_encoder_ranks_the_planted_frame_first(tmp_path):
    def random_text_encoder(texts):  # a seeded random projection of the characters: a stand-in tower
        weights = np.random.default_rng(7).standard_normal((256, 16))
        counts = np.stack([np.bincount(np.frombuffer(t.encode(), np.uint8), minlength=256) for t in texts])
        out = counts @ weights
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    rows = unit_rows(40, 16, 1)
    rows[17] = random_text_encoder(["fresh blood"])[0]
    exams = open_exams([write(tmp_path / "e.emb", rows, "E")])
    hits = text_search(exams, "  fresh blood ", random_text_encoder, top=5)
    assert hits[0].frame == 17 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_cli_similar_prints_a_table_and_json(tmp_path, capsys):
    a = write(tmp_path / "a.emb", unit_rows(30, 8, 0), "A")
    rows_b = unit_rows(30, 8, 1)
    rows_b[9] = unit_rows(30, 8, 0)[12]
    b = write(tmp_path / "b.emb", rows_b, "B")
    code, out, _ = cli(["similar", a, b, "--frame", "A:12", "--top", "4", "--exclude-within", "3"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["rank", "exam", "frame", "score"] and len(lines) == 5
    assert lines[1].split()[:3] == ["1", "B", "9"]
    code, out, _ = cli(["similar", a, b, "--frame", "a:12", "--top", "2", "--json"], capsys)  # file stem works
    doc = json.loads(out)
    assert code == 0 and doc["query"] == {"exam": "A", "frame": 12, "exclude_within": 0}
    assert [r["rank"] for r in doc["results"]] == [1, 2] and doc["results"][0]["frame"] == 9


def test_cli_search_with_stored_prompt_embeddings_as_json(tmp_path, capsys):
    bundle_dir = create_random_bundle(tmp_path / "bundle", "tiny", seed=2)
    bundle = load_bundle(bundle_dir)
    rows = unit_rows(25, bundle.arch.feature_dim, 3)
    rows[20] = StoredPromptEncoder.from_bundle(bundle)([bundle.labels[0]])[0]
    emb = write(tmp_path / "e.emb", rows, "E", bundle.content_hash)
    code, out, err = cli(["search", emb, "--text", bundle.labels[0], "--model", bundle_dir, "--json", "--top", "3"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["query"] == {"text": bundle.labels[0]} and doc["results"][0]["frame"] == 20


@pytest.fixture
def bad_inputs(tmp_path):
    bundle_dir = create_random_bundle(tmp_path / "bundle", "tiny", seed=0)
    h = load_bundle(bundle_dir).content_hash
    return dict(
        bundle=bundle_dir,
        good=write(tmp_path / "good.emb", unit_rows(10, 32, 0), "G", h),
        other=write(tmp_path / "other.emb", unit_rows(10, 32, 1), "O", HASH_B),
        wide=write(tmp_path / "wide.emb", unit_rows(10, 64, 2), "W", h),
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["similar", "{good}", "{other}", "--frame", "G:1"], "another bundle"),
        (["similar", "{other}", "--frame", "O:1", "--model", "{bundle}"], "another bundle"),
        (["similar", "{good}", "--frame", "G:10"], "no embedding for frame 10"),
        (["similar", "{good}", "--frame", "X:1"], "no exam 'X'"),
        (["similar", "{good}", "--frame", "G"], "EXAM:INDEX"),
        (["similar", "{good}", "{wide}", "--frame", "G:1"], "feature size 64"),
        (["search", "{good}", "--text", "  ", "--model", "{bundle}"], "empty"),
        (["search", "{other}", "--text", "blood", "--model", "{bundle}"], "another bundle"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(bad_inputs, capsys, args, message):
    code, out, err = cli([a.format(**bad_inputs) for a in args], capsys)
    assert code == 2 and out == ""
    assert message in err and len(err.strip().splitlines()) == 1

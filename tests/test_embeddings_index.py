"""The FAISS archive index: exact while small, IVF-SQ8 trained once, grown by adding exams."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from vce_stream.cli import main  # noqa: E402
from vce_stream.embeddings.index import IndexParams, create_index, open_index, open_or_create  # noqa: E402
from vce_stream.embeddings.search import Exclusion, exact_search, open_exams  # noqa: E402
from vce_stream.embeddings.store import EmbeddingWriter, read_embeddings  # noqa: E402
from vce_stream.errors import InputError  # noqa: E402

HASH = "c" * 64
SMALL = IndexParams(exact_below=1600, nlist=16, nprobe=4, train_per_list=64)


def clustered(n: int, dim: int, seed: int, centres: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = centres[rng.integers(0, len(centres), n)] + 0.35 * rng.standard_normal((n, dim)) / np.sqrt(dim)
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def write_exam(path: Path, rows: np.ndarray, video_id: str, bundle_hash: str = HASH) -> Path:
    with EmbeddingWriter(path, rows.shape[1], bundle_hash, video_id) as writer:
        writer.push(np.arange(len(rows)) * 2, rows)  # every other frame, so indices differ from rows
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("archive")
    centres = np.random.default_rng(0).standard_normal((40, 32))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    paths = [write_exam(root / f"exam{i}.emb", clustered(700, 32, i, centres), f"exam{i}") for i in range(5)]
    return root, paths, centres


def test_flat_below_the_threshold_equals_exact_search(archive, tmp_path):
    _, paths, _ = archive
    exams = open_exams(paths[:2])
    index = create_index(tmp_path / "idx", 32, HASH, SMALL)
    assert index.add(exams) == ["exam0", "exam1"] and index.kind == "flat" and index.count == 1400
    query = np.asarray(exams[1].vectors[100], dtype=np.float32)
    exclusion = Exclusion("exam1", 200, 6)
    assert [(h.exam, h.frame) for h in open_index(tmp_path / "idx").search(query, 10, exclusion)] == \
        [(h.exam, h.frame) for h in exact_search(exams, query, 10, exclusion)]


def test_ivf_recall_at_10_against_exact_on_clustered_data(archive, tmp_path):
    _, paths, centres = archive
    exams = open_exams(paths)
    index = create_index(tmp_path / "idx", 32, HASH, SMALL)
    index.add(exams)
    assert index.kind == "ivf-sq8" and index.count == 3500
    queries = clustered(50, 32, 99, centres)
    found = [
        len({(h.exam, h.frame) for h in index.search(q, 10)} & {(h.exam, h.frame) for h in exact_search(exams, q, 10)})
        for q in queries
    ]
    assert sum(found) / (10 * len(queries)) >= 0.9


def test_adding_an_exam_keeps_earlier_rows_and_does_not_retrain(archive, tmp_path):
    _, paths, _ = archive
    index = open_or_create(tmp_path / "idx", open_exams(paths[:3]), SMALL)
    index.add(open_exams(paths[:3]))
    assert index.kind == "ivf-sq8" and index.meta["trained_at"] == 2100
    centroids = index.index.quantizer.reconstruct_n(0, SMALL.nlist).copy()
    frames_before = np.array(index.frames)
    assert index.add(open_exams(paths[2:4])) == ["exam3"]  # exam2 is already there: skipped
    reopened = open_index(tmp_path / "idx")
    assert reopened.count == 2800 and reopened.meta["trained_at"] == 2100
    np.testing.assert_array_equal(reopened.index.quantizer.reconstruct_n(0, SMALL.nlist), centroids)
    np.testing.assert_array_equal(reopened.frames[:2100], frames_before)
    for path in (paths[0], paths[3]):  # an old and the new exam: a stored frame finds itself first
        emb = read_embeddings(path)
        hit = reopened.search(np.asarray(emb.vectors[33], dtype=np.float32), 1)[0]
        assert (hit.exam, hit.frame) == (emb.video_id, 66)
    gen = reopened.meta["generation"]  # one generation on disk: the old one was removed after the commit
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [f"frames.{gen}.npy", f"index.{gen}.faiss", "index.json"]


def test_refuses_another_feature_size_and_another_bundle(archive, tmp_path):
    _, paths, _ = archive
    index = create_index(tmp_path / "idx", 32, HASH, SMALL)
    wide = read_embeddings(write_exam(tmp_path / "wide.emb", clustered(5, 64, 0, np.ones((1, 64))), "wide"))
    with pytest.raises(InputError, match="feature size 64.*built with 32"):
        index.add([wide])
    other = read_embeddings(write_exam(tmp_path / "other.emb", clustered(5, 32, 0, np.ones((1, 32))), "o", "d" * 64))
    with pytest.raises(InputError, match="another bundle"):
        index.add([other])
    with pytest.raises(InputError, match="feature size 32"):
        open_index(tmp_path / "idx", dim=64)


def test_cli_index_then_similar_through_the_index(archive, tmp_path, capsys):
    _, paths, _ = archive
    out_dir = tmp_path / "idx"
    with pytest.raises(SystemExit) as info:
        main(["index", str(out_dir), "--add", str(paths[0]), "--add", str(paths[1])])
    assert info.value.code == 0 and "flat index, 1400 frames of 2 exams" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["similar", str(paths[0]), "--index", str(out_dir), "--frame", "exam0:10", "--top", "3", "--json"])
    out = capsys.readouterr().out
    assert info.value.code == 0 and '"exam"' in out
    wide = write_exam(tmp_path / "wide.emb", clustered(5, 64, 0, np.ones((1, 64))), "wide", HASH)
    with pytest.raises(SystemExit) as info:
        main(["similar", str(wide), "--index", str(out_dir), "--frame", "wide:2"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "feature size 32" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("field, value", [("index_file", "../outside.faiss"), ("dim", 0), ("format", "x"), ("count", -1)])
def test_a_tampered_index_description_is_refused(archive, tmp_path, field, value):
    import json

    _, paths, _ = archive
    create_index(tmp_path / "idx", 32, HASH, SMALL).add(open_exams(paths[:1]))
    meta_path = tmp_path / "idx" / "index.json"
    meta = json.loads(meta_path.read_text())
    meta[field] = value
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="index.json: not a vce-stream"):
        open_index(tmp_path / "idx")

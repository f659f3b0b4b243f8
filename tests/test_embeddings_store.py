"""The embeddings file: streamed writes, atomic finalisation, validated memory-mapped reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vce_stream.embeddings.store import HEADER_SIZE, EmbeddingWriter, read_embeddings, read_header
from vce_stream.errors import FrameOrderError, InputError

HASH = "ab" * 32


def unit_rows(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dim=st.integers(1, 40), sizes=st.lists(st.integers(0, 17), max_size=6), start=st.integers(0, 1000),
       gap=st.integers(1, 5))
def test_round_trip_keeps_indices_and_fp16_vectors_for_any_batching(tmp_path_factory, dim, sizes, start, gap):
    path = tmp_path_factory.mktemp("emb") / "exam.emb"
    n = sum(sizes)
    indices = start + gap * np.arange(n)
    rows = unit_rows(n, dim)
    with EmbeddingWriter(path, dim, HASH, "exam-1") as writer:
        at = 0
        for size in sizes:
            writer.push(indices[at:at + size], rows[at:at + size])
            at += size
    emb = read_embeddings(path)
    assert (emb.dim, len(emb), emb.bundle_hash, emb.video_id, emb.complete) == (dim, n, HASH, "exam-1", True)
    np.testing.assert_array_equal(emb.frame_indices, indices)
    np.testing.assert_array_equal(emb.vectors, rows.astype(np.float16))
    assert os.path.getsize(path) == HEADER_SIZE + (n * dim * 2 + 7) // 8 * 8 + 8 * n
    assert sorted(p.name for p in path.parent.iterdir()) == ["exam.emb"]  # no temporary left behind


def test_row_of_finds_frames_and_refuses_a_missing_frame(tmp_path):
    with EmbeddingWriter(tmp_path / "e.emb", 4, HASH, "v") as writer:
        writer.push([3, 7, 9], unit_rows(3, 4))
    emb = read_embeddings(tmp_path / "e.emb")
    assert [emb.row_of(i) for i in (3, 7, 9)] == [0, 1, 2]
    with pytest.raises(InputError, match=r"e\.emb.*no embedding for frame 8"):
        emb.row_of(8)


def test_memory_stays_flat_streaming_130000_frames_of_dim_512(tmp_path):
    batch = unit_rows(64, 512).astype(np.float16)
    tracemalloc.start()
    try:
        writer = EmbeddingWriter(tmp_path / "long.emb", 512, HASH, "long")
        for start in range(0, 130_048, 64):
            writer.push(np.arange(start, start + 64), batch)
        writer.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    stored = os.path.getsize(tmp_path / "long.emb")
    assert stored > 130_000 * 1032  # the file holds them all ...
    assert peak < 4 * 2**20  # ... while Python memory peaked at a few batches (a full copy is 134 MB)


def test_abort_and_an_exception_leave_no_file(tmp_path):
    writer = EmbeddingWriter(tmp_path / "a.emb", 4, HASH, "v")
    writer.push([0], unit_rows(1, 4))
    writer.abort()
    with pytest.raises(RuntimeError), EmbeddingWriter(tmp_path / "b.emb", 4, HASH, "v") as w:
        w.push([0], unit_rows(1, 4))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_sigkill_mid_write_leaves_no_file_under_the_final_name(tmp_path):
    target = tmp_path / "killed.emb"
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from vce_stream.embeddings.store import EmbeddingWriter
        w = EmbeddingWriter({str(target)!r}, 64, {HASH!r}, "killed")
        rows = np.ones((256, 64), dtype=np.float16)
        for k in range(10):
            w.push(np.arange(k * 256, (k + 1) * 256), rows)
        print("ready", flush=True)
        i = 10
        while True:
            w.push(np.arange(i * 256, (i + 1) * 256), rows); i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists()
    leftovers = list(tmp_path.iterdir())
    assert leftovers and all(p.name.startswith(".killed.emb.") and p.name.endswith(".tmp") for p in leftovers)
    main_tmp = next(p for p in leftovers if not p.name.endswith(".idx.tmp"))
    with pytest.raises(InputError):  # the half-written temporary is not mistaken for embeddings
        read_embeddings(main_tmp)


def test_incomplete_flag_survives_close(tmp_path):
    with EmbeddingWriter(tmp_path / "p.emb", 4, HASH, "v") as writer:
        writer.push([0, 1], unit_rows(2, 4))
        writer.close(complete=False)
    assert read_embeddings(tmp_path / "p.emb").complete is False


def test_push_refuses_backwards_indices_and_wrong_shapes(tmp_path):
    with EmbeddingWriter(tmp_path / "o.emb", 4, HASH, "v") as writer:
        writer.push([5], unit_rows(1, 4))
        with pytest.raises(FrameOrderError):
            writer.push([5], unit_rows(1, 4))
        with pytest.raises(ValueError, match="shape"):
            writer.push([6, 7], unit_rows(2, 3))


def _write(tmp_path, n=3, dim=4):
    path = tmp_path / "x.emb"
    with EmbeddingWriter(path, dim, HASH, "v") as writer:
        writer.push(np.arange(n), unit_rows(n, dim))
    return path


def _patch_header(path, **changes):
    data = bytearray(path.read_bytes())
    fields = json.loads(data[8:HEADER_SIZE].decode().rstrip())
    fields.update(changes)
    text = b"VCEEMB1\n" + json.dumps(fields).encode()
    data[:HEADER_SIZE] = text + b" " * (HEADER_SIZE - len(text))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(format="other"), "format"),
        (dict(version=2), "version 2"),
        (dict(dim=0), "dim"),
        (dict(count=10**12), "does not fit"),
        (dict(bundle_hash="nothex"), "bundle hash"),
        (dict(count=2), "offsets"),
    ],
)
def test_read_refuses_a_malformed_header(tmp_path, change, message):
    path = _write(tmp_path)
    _patch_header(path, **change)
    with pytest.raises(InputError, match=message):
        read_embeddings(path)


def test_read_refuses_truncation_bad_magic_and_a_missing_file(tmp_path):
    path = _write(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-1])
    with pytest.raises(InputError, match="truncated"):
        read_header(path)
    path.write_bytes(b"PK" + data[2:])
    with pytest.raises(InputError, match="magic"):
        read_header(path)
    with pytest.raises(InputError, match="not found"):
        read_header(tmp_path / "none.emb")

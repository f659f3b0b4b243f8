"""An engine's model file is checked before it is loaded (issue 12, fault 4): the manifest records its
sha256 and size, its name is a plain file name inside the engine directory, links out are refused, and
a damaged file is one line, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines.build import build_engine
from vce_stream.engine.manifest import (
    MANIFEST_NAME,
    EngineArtifactError,
    check_artifact_name,
    file_digest,
    read_manifest,
    verified_artifact,
)
from vce_stream.engine.profile import BatchProfile
from vce_stream.cli import main
from vce_stream.engine.select import make_scorer
from vce_stream.errors import InputError
from vce_stream.model.bundle import load_bundle
from vce_stream.model.random_bundle import create_random_bundle

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(create_random_bundle(tmp_path_factory.mktemp("bundle") / "tiny", "tiny", seed=0))


@pytest.fixture(scope="module")
def built(tmp_path_factory, bundle) -> Path:
    path, _ = build_engine(bundle, "onnxruntime", "fp32", BatchProfile(1, 2, 4), out=tmp_path_factory.mktemp("e") / "engine", device="cpu")
    return path


@pytest.fixture
def engine(built, tmp_path) -> Path:
    copy = tmp_path / "engine"
    shutil.copytree(built, copy)
    return copy


def edit_manifest(engine: Path, **changes) -> None:
    data = json.loads((engine / MANIFEST_NAME).read_text())
    data.update(changes)
    (engine / MANIFEST_NAME).write_text(json.dumps(data))


def test_build_records_the_artifacts_hash_and_size(built):
    manifest = read_manifest(built)
    assert (manifest.artifact_sha256, manifest.artifact_bytes) == file_digest(built / manifest.artifact)
    assert verified_artifact(built, manifest) == (built / manifest.artifact).resolve()


def test_a_swapped_model_file_is_refused_naming_it(engine, bundle, tmp_path):
    manifest = read_manifest(engine)
    model = engine / manifest.artifact
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other content: only the hash tells
    model.write_bytes(bytes(data))
    with pytest.raises(EngineArtifactError, match=rf"{model}: content hash mismatch"):
        make_scorer(bundle, engine_dir=engine, device="cpu", batch_size=2)
    other = create_random_bundle(tmp_path / "other", "tiny", seed=1)
    other_engine, _ = build_engine(load_bundle(other), "onnxruntime", "fp32", BatchProfile(1, 2, 4), out=tmp_path / "oe", device="cpu")
    shutil.copy(other_engine / manifest.artifact, model)  # another model's file, whatever its size
    with pytest.raises(EngineArtifactError, match=str(model)):
        make_scorer(bundle, engine_dir=engine, device="cpu", batch_size=2)


@pytest.mark.parametrize("name", ["../other/model.onnx", "/tmp/model.onnx", "sub/model.onnx", "..", ".hidden", "a\\b.onnx", ""])
def test_artifact_paths_outside_the_engine_directory_are_refused(engine, bundle, name):
    edit_manifest(engine, artifact=name)
    with pytest.raises(EngineArtifactError, match="plain file name inside the engine directory"):
        make_scorer(bundle, engine_dir=engine, device="cpu", batch_size=2)


def test_a_model_file_linking_outside_the_engine_directory_is_refused(engine, bundle, tmp_path):
    manifest = read_manifest(engine)
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(engine / manifest.artifact, outside)  # the very bytes the manifest vouches for
    os.symlink(outside, engine / manifest.artifact)
    with pytest.raises(EngineArtifactError, match="outside the engine directory"):
        make_scorer(bundle, engine_dir=engine, device="cpu", batch_size=2)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_damaged_model_file_is_one_line_even_when_the_manifest_agrees(engine, bundle, damage, capsys):
    manifest = read_manifest(engine)
    model = engine / manifest.artifact
    data = model.read_bytes()
    model.write_bytes({"truncated": data[: len(data) // 3], "garbage": os.urandom(5000), "empty": b""}[damage])
    with pytest.raises(EngineArtifactError, match="truncated or replaced"):
        make_scorer(bundle, engine_dir=engine, device="cpu", batch_size=2)
    sha, size = file_digest(model)
    edit_manifest(engine, artifact_sha256=sha, artifact_bytes=size)  # a manifest rewritten to match
    with pytest.raises(InputError, match=rf"{model}: not a usable ONNX engine file"):
        make_scorer(bundle, engine_dir=engine, device="cpu", batch_size=2)


def test_a_format_1_manifest_is_refused_with_a_rebuild_hint(engine, bundle):
    data = json.loads((engine / MANIFEST_NAME).read_text())
    data["format_version"] = 1
    del data["artifact_sha256"], data["artifact_bytes"]
    (engine / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(InputError, match="manifest format 1 .* rebuild the engine"):
        read_manifest(engine)


def test_run_command_refuses_a_swapped_engine_with_status_2(engine, bundle, tmp_path, capsys):
    from vce_stream.synthetic import SyntheticConfig, make_exam

    exam = tmp_path / "exam.mkv"
    make_exam(exam, SyntheticConfig(frames=100, width=64, height=64, seed=3))
    manifest = read_manifest(engine)
    (engine / manifest.artifact).write_bytes(b"\x08\x07" * 100)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(exam), "--model", str(bundle.path), "--engine", str(engine), "--batch-size", "2", "--out", str(tmp_path / "o.json")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(engine / manifest.artifact) in err and "truncated or replaced" in err
    assert not (tmp_path / "o.json").exists()


@settings(max_examples=300, deadline=None)
@given(name=st.text(alphabet=st.sampled_from(list("ab./\\:\0 ~-_")), max_size=12))
def test_an_accepted_artifact_name_never_leaves_its_directory(name, tmp_path_factory):
    root = Path("/engines/e1")
    try:
        check_artifact_name(name, "manifest.json")
    except EngineArtifactError:
        return
    joined = root / name
    assert joined.parent == root and os.path.normpath(joined) == str(joined) and joined.name == name

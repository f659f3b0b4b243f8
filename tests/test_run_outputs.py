"""`run --save-embeddings` and `run --report`: outputs fed while the exam streams, as sinks."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from vce_stream.cli import main
from vce_stream.embeddings.store import read_embeddings
from vce_stream.engine.backends.pytorch import torch_scorer
from vce_stream.model.bundle import load_bundle
from vce_stream.model.random_bundle import create_random_bundle
from vce_stream.scores import load_scores
from vce_stream.sources import open_source
from vce_stream.sources.preprocess import prepare_frame
from vce_stream.synthetic import SyntheticConfig, make_exam


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return create_random_bundle(tmp_path_factory.mktemp("bundle") / "tiny", "tiny", seed=0)


@pytest.fixture(scope="module")
def exam(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("exam")
    make_exam(root / "exam.mkv", SyntheticConfig(frames=140, width=80, height=80, seed=4), gt_path=root / "gt.json")
    return root / "exam.mkv"


def cli(args: list, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return info.value.code, capsys.readouterr().err


def test_save_embeddings_writes_the_features_of_the_pass_that_gave_the_probabilities(bundle, exam, tmp_path, capsys):
    out, scores, emb = tmp_path / "events.json", tmp_path / "scores.npz", tmp_path / "exam.emb"
    code, err = cli(["run", exam, "--model", bundle, "--out", out, "--save-scores", scores, "--save-embeddings", emb, "--quiet"], capsys)
    assert code == 0, err
    embeddings = read_embeddings(emb)
    _, videos = load_scores(scores)
    frames, _ = videos["exam"]
    loaded = load_bundle(bundle)
    assert embeddings.complete and embeddings.bundle_hash == loaded.content_hash and embeddings.video_id == "exam"
    np.testing.assert_array_equal(embeddings.frame_indices, frames)
    # The stored rows are the model's own features (fp16) of those very frames.
    source = open_source(exam)
    first = [prepare_frame(frame, loaded.preprocess) for (_, frame), _ in zip(source.frames(), range(5))]
    source.close()
    _, reference = torch_scorer(loaded).score_with_features(torch.from_numpy(np.stack(first)))
    np.testing.assert_allclose(embeddings.vectors[:5].astype(np.float32), reference, atol=2e-3)


def test_report_is_written_from_the_stream_with_key_frame_thumbnails(bundle, exam, tmp_path, capsys):
    out, page = tmp_path / "events.json", tmp_path / "exam.html"
    code, err = cli(["run", exam, "--model", bundle, "--out", out, "--report", page, "--report-top", "12", "--quiet"], capsys)
    assert code == 0, err
    html = page.read_text(encoding="utf-8")
    assert "reading aid" in html.lower() and "exam" in html
    assert len(re.findall(r"data:image/jpeg;base64,", html)) >= 12
    assert str(bundle) in html and "PyTorch eager" in html


def test_an_embeddings_path_equal_to_the_event_json_is_refused_before_scoring(bundle, exam, tmp_path, capsys):
    out = tmp_path / "events.json"
    code, err = cli(["run", exam, "--model", bundle, "--out", out, "--save-embeddings", out, "--quiet"], capsys)
    assert code == 2 and "each output needs its own path" in err and not out.exists()


def test_findings_from_a_few_shot_prototype_are_events_in_a_file_of_their_own(bundle, exam, tmp_path, capsys):
    """`prototypes add` from 5 consecutive frames of an exam, then `run --findings`: the examples' own
    stretch comes back as an event of the new finding, and the event JSON never names it."""
    import json
    import shutil

    own = tmp_path / "bundle"
    shutil.copytree(bundle, own)
    emb = tmp_path / "exam.emb"
    code, err = cli(["run", exam, "--model", own, "--out", tmp_path / "first.json", "--save-embeddings", emb, "--quiet"], capsys)
    assert code == 0, err
    examples = ",".join(f"{emb}:{i}" for i in range(60, 65))
    code, err = cli(["prototypes", "add", own, "--label", "my finding", "--examples", examples], capsys)
    assert code == 0, err
    findings, out = tmp_path / "findings.json", tmp_path / "events.json"
    code, err = cli(["run", exam, "--model", own, "--out", out, "--findings", findings, "--quiet"], capsys)
    assert code == 0, err
    document = json.loads(findings.read_text())
    text = json.dumps(document)
    assert "my finding" in text and "my finding" not in out.read_text()
    spans = [(e["start"], e["end"]) for e in document["findings"] if e["label"] == "my finding"]
    assert any(start <= 62 <= end for start, end in spans), document


def test_findings_need_a_bundle_with_prototypes(bundle, exam, tmp_path, capsys):
    code, err = cli(["run", exam, "--model", bundle, "--out", tmp_path / "e.json", "--findings", tmp_path / "f.json", "--quiet"], capsys)
    assert code == 2 and "no prototype findings" in err


def test_a_video_report_shows_times_and_a_frame_folder_report_frame_indices_only(bundle, exam, tmp_path, capsys):
    from vce_stream.synthetic import SyntheticConfig, make_exam

    folder = tmp_path / "frames"
    make_exam(folder, SyntheticConfig(frames=100, width=64, height=64, seed=6), gt_path=tmp_path / "f.gt.json")
    pages = {}
    for name, source in (("video", exam), ("folder", folder)):
        pages[name] = tmp_path / f"{name}.html"
        code, err = cli(["run", source, "--model", bundle, "--out", tmp_path / f"{name}.json", "--report", pages[name], "--quiet"], capsys)
        assert code == 0, err
    video, folder = (pages[k].read_text(encoding="utf-8") for k in ("video", "folder"))
    assert "times from the source's timestamps" in video and "<b>frame indices only</b>" not in video
    assert "<b>frame indices only</b>" in folder


def test_a_finding_from_a_folder_of_example_images(bundle, exam, tmp_path, capsys):
    """`prototypes add --examples-dir`: example images scored by the bundle's own model, calibrated
    against an exam's embeddings; frames of the exam that are those very images come back as events."""
    import json
    import shutil

    import av

    own = tmp_path / "bundle"
    shutil.copytree(bundle, own)
    emb = tmp_path / "exam.emb"
    code, err = cli(["run", exam, "--model", own, "--out", tmp_path / "first.json", "--save-embeddings", emb, "--quiet"], capsys)
    assert code == 0, err
    examples = tmp_path / "examples"
    examples.mkdir()
    with av.open(str(exam)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if 60 <= i < 65:
                frame.to_image().save(examples / f"example_{i}.png")
            if i >= 65:
                break
    # The background: an exam without the finding (here: this exam's frames from 120 on, as their own file).
    from vce_stream.embeddings.store import EmbeddingWriter, read_embeddings

    full = read_embeddings(emb)
    later = full.frame_indices >= 120
    background = tmp_path / "background.emb"
    writer = EmbeddingWriter(background, full.dim, full.bundle_hash, "background")
    writer.push(np.asarray(full.frame_indices)[later], np.asarray(full.vectors, dtype=np.float32)[later])
    writer.close()
    code, err = cli(["prototypes", "add", own, "--label", "from images", "--examples-dir", examples, "--background", background], capsys)
    assert code == 0, err
    findings = tmp_path / "findings.json"
    code, err = cli(["run", exam, "--model", own, "--out", tmp_path / "events.json", "--findings", findings, "--quiet"], capsys)
    assert code == 0, err
    spans = [(e["start"], e["end"]) for e in json.loads(findings.read_text())["findings"] if e["label"] == "from images"]
    assert any(start <= 62 <= end for start, end in spans), spans
    code, err = cli(["prototypes", "add", own, "--label", "x", "--examples-dir", examples], capsys)
    assert code == 2 and "needs --background" in err

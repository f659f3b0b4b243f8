"""The model bundle: round trip, validation errors (one line naming the file), CLI, torch scorer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vce_stream.postprocess.config import PostprocessConfig, TemporalConfig
from vce_stream.engine.base import FrameScorer
from vce_stream.errors import InputError
from vce_stream.labels import LABELS
from vce_stream.model.bundle import MANIFEST_NAME, WEIGHTS_NAME, load_bundle, replace_postprocess, save_bundle
from vce_stream.model.random_bundle import create_random_bundle
from vce_stream.model.classifier import build_classifier
from vce_stream.model.config import arch_preset
from vce_stream.engine.backends.pytorch import torch_scorer

TINY = arch_preset("tiny")


@pytest.fixture(scope="module")
def bundle_path(tmp_path_factory) -> Path:
    return create_random_bundle(tmp_path_factory.mktemp("bundles") / "tiny", arch="tiny", seed=0)


@pytest.fixture
def copy_of_bundle(bundle_path, tmp_path) -> Path:
    target = tmp_path / "copy"
    target.mkdir()
    for name in (MANIFEST_NAME, WEIGHTS_NAME):
        (target / name).write_bytes((bundle_path / name).read_bytes())
    return target


def frames(batch: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=generator)


def edit_manifest(bundle: Path, change) -> None:
    path = bundle / MANIFEST_NAME
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def load_error(bundle: Path) -> str:
    with pytest.raises(InputError) as info:
        load_bundle(bundle)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- round trip -----------------------------------------------------------------------------------


def test_random_bundle_loads_with_its_settings(bundle_path):
    bundle = load_bundle(bundle_path)
    assert bundle.path == bundle_path
    assert bundle.labels == LABELS
    assert bundle.arch == TINY
    assert bundle.preprocess.size == TINY.img_size
    assert bundle.thresholds == (0.5,) * len(LABELS)
    assert bundle.postprocess.temporal == TemporalConfig()
    assert len(bundle.content_hash) == 64
    assert bundle.prompts[3] == "a video capsule endoscopy image showing small intestine"
    assert bundle.manifest.source["kind"] == "random"


def test_saved_model_reloads_with_identical_outputs(tmp_path):
    model = build_classifier(TINY, seed=5).eval()
    thresholds = [0.1 + 0.05 * i for i in range(len(LABELS))]
    post = PostprocessConfig(temporal=TemporalConfig(window=5, gap=3, min_len=2), order="time")
    path = save_bundle(tmp_path / "b", model, TINY, LABELS, thresholds, post, extra={"val_map50": 0.31})
    bundle = load_bundle(path)
    assert bundle.thresholds == pytest.approx(thresholds)
    assert bundle.postprocess.temporal.window == 5 and bundle.postprocess.order == "time"
    assert bundle.manifest.extra == {"val_map50": 0.31}
    images = torch.randn(3, 3, 32, 32)
    reloaded = bundle.build_model()
    assert not reloaded.training
    with torch.no_grad():
        for new, old in zip(reloaded(images), model(images)):  # logits, contrastive logits
            torch.testing.assert_close(new, old, atol=0, rtol=0)


def test_same_seed_gives_identical_bundle_files(tmp_path):
    a = create_random_bundle(tmp_path / "a", seed=3)
    b = create_random_bundle(tmp_path / "b", seed=3)
    c = create_random_bundle(tmp_path / "c", seed=4)
    assert (a / WEIGHTS_NAME).read_bytes() == (b / WEIGHTS_NAME).read_bytes()
    assert load_bundle(a).content_hash == load_bundle(b).content_hash != load_bundle(c).content_hash


def test_content_hash_ignores_thresholds_but_not_preprocessing(copy_of_bundle, bundle_path):
    original = load_bundle(bundle_path).content_hash
    edit_manifest(copy_of_bundle, lambda d: d["postprocess"].update(thresholds=0.3))
    assert load_bundle(copy_of_bundle).content_hash == original
    edit_manifest(copy_of_bundle, lambda d: d["preprocess"].update(mean=[0.5, 0.5, 0.5]))
    assert load_bundle(copy_of_bundle).content_hash != original


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(thresholds=st.lists(st.floats(0.0, 1.0), min_size=len(LABELS), max_size=len(LABELS)))
def test_thresholds_survive_the_manifest_round_trip(tmp_path, thresholds):
    model = build_classifier(TINY, seed=0)
    path = save_bundle(tmp_path / "t", model, TINY, LABELS, thresholds)
    assert load_bundle(path).thresholds == tuple(thresholds)


def test_save_replaces_an_existing_bundle_and_refuses_other_directories(tmp_path):
    target = create_random_bundle(tmp_path / "b", seed=1)
    first = load_bundle(target).content_hash
    create_random_bundle(target, seed=2)
    assert load_bundle(target).content_hash != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temporary directories left
    other = tmp_path / "data"
    other.mkdir()
    (other / "exam.mp4").write_bytes(b"x")
    with pytest.raises(InputError, match="not a model bundle; refusing to overwrite"):
        create_random_bundle(other)
    assert (other / "exam.mp4").read_bytes() == b"x"


def test_save_checks_labels_against_the_architecture(tmp_path):
    with pytest.raises(ValueError, match="arch.num_labels is 17 but 16 labels"):
        save_bundle(tmp_path / "b", build_classifier(TINY, seed=0), TINY, LABELS[:16])


def test_random_bundle_with_a_subset_of_labels(tmp_path):
    bundle = load_bundle(create_random_bundle(tmp_path / "b", labels=["polyp", "ulcer"]))
    assert bundle.labels == ("polyp", "ulcer") and bundle.arch.num_labels == 2
    assert torch_scorer(bundle).score(frames(2)).shape == (2, 2)


def test_replace_postprocess_keeps_the_weights_and_refuses_settings_that_do_not_fit(copy_of_bundle):
    before = load_bundle(copy_of_bundle)
    manifest = (copy_of_bundle / MANIFEST_NAME).read_bytes()
    with pytest.raises(InputError, match=f"{copy_of_bundle / MANIFEST_NAME}: postprocess: .*3 .*17"):
        replace_postprocess(copy_of_bundle, PostprocessConfig(thresholds=(0.1, 0.2, 0.3)))
    assert (copy_of_bundle / MANIFEST_NAME).read_bytes() == manifest  # nothing written
    after = replace_postprocess(copy_of_bundle, PostprocessConfig(thresholds=0.25, order="time"))
    assert after.thresholds == (0.25,) * len(LABELS) and after.postprocess.order == "time"
    assert after.content_hash == before.content_hash and after.manifest.source == before.manifest.source
    assert load_bundle(copy_of_bundle).postprocess == after.postprocess


# --- validation -----------------------------------------------------------------------------------


def test_missing_directory(tmp_path):
    assert load_error(tmp_path / "nope") == f"{tmp_path / 'nope'}: no such model bundle directory"


def test_missing_manifest(copy_of_bundle):
    (copy_of_bundle / MANIFEST_NAME).unlink()
    assert load_error(copy_of_bundle).startswith(f"{copy_of_bundle / MANIFEST_NAME}: file not found")


def test_missing_weights(copy_of_bundle):
    (copy_of_bundle / WEIGHTS_NAME).unlink()
    assert load_error(copy_of_bundle).startswith(f"{copy_of_bundle / WEIGHTS_NAME}: file not found")


def test_hash_mismatch(copy_of_bundle):
    path = copy_of_bundle / WEIGHTS_NAME
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    message = load_error(copy_of_bundle)
    assert message.startswith(f"{path}: content hash mismatch")


def test_label_count_disagreeing_with_the_weights(copy_of_bundle):
    def drop_a_label(d):
        d["labels"] = d["labels"][:16]
        d["prompts"] = d["prompts"][:16]
        d["arch"]["num_labels"] = 16

    edit_manifest(copy_of_bundle, drop_a_label)
    message = load_error(copy_of_bundle)
    assert message == (
        f"{copy_of_bundle / WEIGHTS_NAME}: the classifier has 17 outputs but manifest.yaml lists 16 labels"
    )


def test_label_count_disagreeing_with_the_architecture(copy_of_bundle):
    edit_manifest(copy_of_bundle, lambda d: d.update(labels=d["labels"][:16]))
    assert "arch.num_labels is 17 but 16 labels are listed" in load_error(copy_of_bundle)


def test_unknown_format_version(copy_of_bundle):
    edit_manifest(copy_of_bundle, lambda d: d.update(format_version=7))
    message = load_error(copy_of_bundle)
    assert message.startswith(f"{copy_of_bundle / MANIFEST_NAME}: unknown bundle format version 7")


def test_not_a_bundle_manifest(copy_of_bundle):
    (copy_of_bundle / MANIFEST_NAME).write_text("videos: []\n")
    assert "not a vce-stream model bundle manifest" in load_error(copy_of_bundle)


def test_malformed_yaml(copy_of_bundle):
    (copy_of_bundle / MANIFEST_NAME).write_text("format: [unclosed\n")
    assert load_error(copy_of_bundle).startswith(f"{copy_of_bundle / MANIFEST_NAME}: not valid YAML")


def test_unknown_manifest_key(copy_of_bundle):
    edit_manifest(copy_of_bundle, lambda d: d["arch"].update(depthh=3))
    message = load_error(copy_of_bundle)
    assert str(copy_of_bundle / MANIFEST_NAME) in message and "depthh" in message


def test_misspelt_label(copy_of_bundle):
    edit_manifest(copy_of_bundle, lambda d: d["labels"].__setitem__(14, "lymphangiectasia"))
    assert "unknown label(s) ['lymphangiectasia']" in load_error(copy_of_bundle)


def test_architecture_that_does_not_fit_the_weights(copy_of_bundle):
    edit_manifest(copy_of_bundle, lambda d: d["arch"].update(depth=3))
    message = load_error(copy_of_bundle)
    assert message.startswith(f"{copy_of_bundle / WEIGHTS_NAME}: tensors do not fit the architecture")
    assert "missing ['visual.trunk.blocks.2." in message


def test_weights_file_must_stay_inside_the_bundle(copy_of_bundle):
    edit_manifest(copy_of_bundle, lambda d: d["weights"].update(file="../elsewhere.safetensors"))
    assert "must be a file name inside the bundle" in load_error(copy_of_bundle)


def test_weights_that_are_not_safetensors(copy_of_bundle):
    import hashlib

    junk = b"\x80\x04pickle-bytes"
    (copy_of_bundle / WEIGHTS_NAME).write_bytes(junk)
    edit_manifest(copy_of_bundle, lambda d: d["weights"].update(sha256=hashlib.sha256(junk).hexdigest()))
    assert "not a readable safetensors file" in load_error(copy_of_bundle)


def test_weights_replaced_after_loading_are_caught_when_building(copy_of_bundle):
    bundle = load_bundle(copy_of_bundle)
    path = copy_of_bundle / WEIGHTS_NAME
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="content hash mismatch"):
        bundle.build_model()


# --- torch scorer -----------------------------------------------------------------------------------


def test_torch_scorer_is_a_frame_scorer_giving_the_frame_model_probabilities(bundle_path):
    bundle = load_bundle(bundle_path)
    scorer = torch_scorer(bundle, "cpu")
    assert isinstance(scorer, FrameScorer)
    assert scorer.labels == LABELS
    x = frames(5)
    probs = scorer.score(x)
    assert probs.dtype == np.float32 and probs.shape == (5, len(LABELS))
    with torch.no_grad():
        expected = bundle.build_frame_model()(x).numpy()
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-6)
    # Scores do not depend on what else is in the batch.
    np.testing.assert_allclose(scorer.score(x[:2]), probs[:2], rtol=0, atol=1e-5)


def test_torch_scorer_accepts_pinned_memory_and_refuses_float_frames(bundle_path):
    scorer = torch_scorer(load_bundle(bundle_path))
    x = frames(2)
    if torch.cuda.is_available():
        x = x.pin_memory()
    assert scorer.score(x).shape == (2, len(LABELS))
    with pytest.raises(ValueError, match="expected uint8 frames"):
        scorer.score(x.float())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_scorer_on_cuda_matches_cpu(bundle_path):
    bundle = load_bundle(bundle_path)
    x = frames(4).pin_memory()
    np.testing.assert_allclose(torch_scorer(bundle, "cuda").score(x), torch_scorer(bundle, "cpu").score(x), atol=1e-4)


# --- command line -----------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vce_stream", *args], capture_output=True, text=True, timeout=120)


def test_cli_demo_bundle_then_info(tmp_path):
    out = tmp_path / "demo"
    made = run_cli("demo-bundle", str(out), "--seed", "2", "--threshold", "0.4")
    assert made.returncode == 0, made.stderr
    assert load_bundle(out).thresholds == (0.4,) * len(LABELS)
    shown = run_cli("info", str(out))
    assert shown.returncode == 0, shown.stderr
    assert load_bundle(out).content_hash in shown.stdout
    assert "differential (lambda_init 0.8" in shown.stdout
    assert "window 7, gap 5, min length 3" in shown.stdout
    assert "small intestine" in shown.stdout


def test_cli_info_on_a_broken_bundle_is_one_line_and_exit_2(copy_of_bundle):
    (copy_of_bundle / WEIGHTS_NAME).unlink()
    result = run_cli("info", str(copy_of_bundle))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith(f"vce-stream: error: {copy_of_bundle / WEIGHTS_NAME}: file not found")


def test_labels_swapped_with_prompts_unchanged_are_refused(copy_of_bundle):
    def swap(d):
        d["labels"][2], d["labels"][4] = d["labels"][4], d["labels"][2]

    edit_manifest(copy_of_bundle, swap)
    message = load_error(copy_of_bundle)
    assert message.startswith(f"{copy_of_bundle / MANIFEST_NAME}: prompt 2 ")
    assert "does not name its label 'colon' but names 'stomach'" in message


@settings(max_examples=60, deadline=None)
@given(order=st.permutations(list(range(17))))
def test_a_label_order_is_accepted_only_with_its_own_prompts(order):
    from vce_stream.model.heads import label_prompts, prompt_mismatch

    labels = [LABELS[i] for i in order]
    assert prompt_mismatch(labels, label_prompts(labels)) is None
    mismatch = prompt_mismatch(labels, label_prompts(LABELS))
    assert (mismatch is None) == (labels == list(LABELS))


def test_save_bundle_refuses_prompts_that_do_not_name_their_labels(tmp_path):
    model = build_classifier(TINY)
    labels = list(LABELS)
    with pytest.raises(ValueError, match="does not name its label"):
        save_bundle(tmp_path / "b", model, TINY, labels, prompts=list(reversed([f"a photo of {x}" for x in labels])))

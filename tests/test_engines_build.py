"""ONNX Runtime (fp32, int8) and torch engines built from a tiny bundle: their checks, their agreement
with the PyTorch model (alone and through a whole run), the cache, `--backend auto`, and refusals.

Tolerances are the documented ones in engines.build.AgreementTolerance (fp32 1e-4, int8 5e-2).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.build import AgreementTolerance, BuildConfig, EngineBuildError, build_engine, calibration_frames
from vce_stream.engine.cache import list_cached
from vce_stream.engine.device import DeviceFacts
from vce_stream.engine.manifest import MANIFEST_NAME, EngineMismatchError, read_manifest
from vce_stream.engine.profile import BatchProfile
from vce_stream.cli import main
from vce_stream.postprocess.config import PostprocessConfig
from vce_stream.errors import VceError
from vce_stream.events.jsonio import read_submission
from vce_stream.model.bundle import load_bundle
from vce_stream.model.random_bundle import create_random_bundle
from vce_stream.engine.select import choose_engine, make_scorer
from vce_stream.engine.backends.pytorch import torch_scorer

pytest.importorskip("onnxruntime")

PROFILE = BatchProfile(1, 4, 8)
TOLERANCE = AgreementTolerance()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(create_random_bundle(tmp_path_factory.mktemp("bundle") / "tiny", "tiny", seed=0))


@pytest.fixture(scope="module")
def cache(tmp_path_factory, bundle) -> dict[str, Path]:
    """One cache holding the three CPU engines of the tiny bundle."""
    root = tmp_path_factory.mktemp("engines")
    built = {}
    for backend, precision in (("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("torch", "fp32")):
        path, _ = build_engine(bundle, backend, precision, PROFILE, cache_root=root, device="cpu")
        built[f"{backend}-{precision}"] = path
    built["root"] = root
    return built


def frames(n: int, size: int = 32, seed: int = 1) -> torch.Tensor:
    return calibration_frames(n, size, seed)


@pytest.mark.parametrize("name", ["onnxruntime-fp32", "onnxruntime-int8", "torch-fp32"])
def test_built_engines_record_their_properties_and_agree_with_pytorch(cache, bundle, name):
    path = cache[name]
    manifest = read_manifest(path)
    backend, precision = name.split("-")
    assert (manifest.backend, manifest.precision, manifest.profile) == (backend, precision, PROFILE)
    assert manifest.bundle_hash == bundle.content_hash and manifest.labels == bundle.labels
    assert manifest.device.kind == "cpu" and manifest.versions["torch"] == torch.__version__
    assert manifest.agreement.frames == PROFILE.max + 1
    assert 0 <= manifest.agreement.max_abs_diff <= TOLERANCE.for_precision(precision)
    assert path.parent == cache["root"] and path.name.startswith(f"{backend}-{precision}-b1-4-8-")
    if manifest.artifact:
        assert (path / manifest.artifact).is_file()

    scorer = make_scorer(bundle, engine_dir=path, device="cpu", batch_size=4)
    batch = frames(13)  # split into 8 + 5, and the profile is exercised again at run time
    reference = torch_scorer(bundle, "cpu").score(batch)
    probs = scorer.score(batch)
    assert probs.shape == (13, 17) and probs.dtype == np.float32
    assert np.abs(probs - reference).max() <= TOLERANCE.for_precision(precision)
    single = scorer.score(batch[:1])  # below nothing, but a one-frame flush works
    assert np.abs(single - reference[:1]).max() <= TOLERANCE.for_precision(precision)
    assert scorer.score(batch[:0]).shape == (0, 17)


def test_int8_differs_from_fp32_but_stays_within_its_tolerance(cache, bundle):
    batch = frames(8)
    fp32 = make_scorer(bundle, engine_dir=cache["onnxruntime-fp32"]).score(batch)
    int8 = make_scorer(bundle, engine_dir=cache["onnxruntime-int8"]).score(batch)
    gap = np.abs(fp32 - int8).max()
    assert 0 < gap <= TOLERANCE.int8  # quantisation really happened


def test_backend_auto_prefers_the_cached_int8_engine_then_falls_back_to_torch(cache, bundle, tmp_path):
    choice = choose_engine(bundle, "auto", device="cpu", batch_size=4, cache_root=cache["root"])
    assert (choice.backend, choice.engine_dir) == ("onnxruntime", cache["onnxruntime-int8"])
    explicit = choose_engine(bundle, "onnxruntime", device="cpu", batch_size=4, cache_root=cache["root"])
    assert explicit.engine_dir == cache["onnxruntime-int8"]
    # A batch size outside every cached profile still takes the engine: the runner splits it (issue 15).
    split = choose_engine(bundle, "auto", device="cpu", batch_size=64, cache_root=cache["root"])
    assert split.engine_dir == cache["onnxruntime-int8"] and "split to fit" in split.reason
    assert choose_engine(bundle, "auto", device="cpu", cache_root=tmp_path / "empty").backend == "torch"
    with pytest.raises(VceError, match="no onnxruntime engine .* build one with: vce-stream build-engine --model"):
        choose_engine(bundle, "onnxruntime", device="cpu", cache_root=tmp_path / "empty")


def copy_engine(src: Path, dst: Path, **manifest_changes) -> Path:
    shutil.copytree(src, dst)
    data = json.loads((dst / MANIFEST_NAME).read_text())
    data.update(manifest_changes)
    (dst / MANIFEST_NAME).write_text(json.dumps(data))
    return dst


def test_an_engine_of_another_bundle_is_refused(cache, tmp_path):
    other = load_bundle(create_random_bundle(tmp_path / "other", "tiny", seed=1))
    with pytest.raises(EngineMismatchError, match=r"built for another bundle .* rebuild it with: vce-stream build-engine --model \S+other --backend onnxruntime --precision fp32 --batch 1,4,8"):
        make_scorer(other, engine_dir=cache["onnxruntime-fp32"])


def test_an_engine_from_another_cpu_or_library_version_is_refused(cache, bundle, tmp_path):
    arm = DeviceFacts(kind="cpu", name="Neoverse-V2", instruction_sets=("asimd", "sve2"))
    moved = copy_engine(cache["onnxruntime-int8"], tmp_path / "arm", device=dataclasses.asdict(arm))
    with pytest.raises(EngineMismatchError, match=r"built for Neoverse-V2 \(asimd, sve2\), this machine has"):
        make_scorer(bundle, engine_dir=moved)
    versions = read_manifest(cache["onnxruntime-int8"]).versions
    old = copy_engine(cache["onnxruntime-int8"], tmp_path / "old", versions={**versions, "onnxruntime": "1.20.0"})
    with pytest.raises(EngineMismatchError, match="built with onnxruntime 1.20.0, this machine has onnxruntime"):
        make_scorer(bundle, engine_dir=old)


def test_a_run_batch_outside_the_profile_is_split_and_a_wrong_backend_is_refused(cache, bundle):
    """Issue 15 item 6: the runner splits or pads any batch into the profile, so no batch size is refused."""
    choice = choose_engine(bundle, engine_dir=cache["onnxruntime-fp32"], batch_size=32)
    assert "run batch 32 is split to fit" in choice.reason
    scorer = make_scorer(bundle, engine_dir=cache["onnxruntime-fp32"], batch_size=32)
    batch = frames(32)
    assert np.abs(scorer.score(batch) - torch_scorer(bundle, "cpu").score(batch)).max() <= TOLERANCE.fp32
    with pytest.raises(EngineMismatchError, match="is a onnxruntime engine, but --backend torch"):
        make_scorer(bundle, "torch", engine_dir=cache["onnxruntime-fp32"])


def test_a_build_beyond_its_tolerance_fails_and_leaves_no_engine(bundle, tmp_path):
    strict = BuildConfig(tolerance=dataclasses.replace(TOLERANCE, int8=1e-6))
    with pytest.raises(EngineBuildError, match="differ from the PyTorch model's by up to .* more than the int8 tolerance 1e-06"):
        build_engine(bundle, "onnxruntime", "int8", PROFILE, out=tmp_path / "eng", config=strict)
    assert not (tmp_path / "eng").exists() and list(tmp_path.iterdir()) == []


def test_build_refuses_to_overwrite_a_folder_that_is_not_an_engine(bundle, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    with pytest.raises(VceError, match="not an engine directory; refusing to overwrite"):
        build_engine(bundle, "torch", "fp32", PROFILE, out=tmp_path / "notes")
    with pytest.raises(VceError, match=r"onnxruntime engines are built in \('fp32', 'int8'\), not 'fp16'"):
        build_engine(bundle, "onnxruntime", "fp16", PROFILE, out=tmp_path / "x")


def test_cli_builds_lists_and_clears_engines(bundle, tmp_path, capsys):
    root = tmp_path / "cache"
    with pytest.raises(SystemExit) as exit_info:
        main(["build-engine", "--model", str(bundle.path), "--backend", "torch", "--batch", "1,4,8", "--cache-dir", str(root)])
    assert exit_info.value.code == 0
    assert "built torch fp32 engine, batch 1,4,8" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["engines", "list", "--cache-dir", str(root)])
    listing = capsys.readouterr().out
    assert "1 engine(s)" in listing and f"bundle {bundle.content_hash[:12]}" in listing
    with pytest.raises(SystemExit) as exit_info:
        main(["build-engine", "--model", str(bundle.path), "--backend", "torch", "--batch", "4,2,8", "--cache-dir", str(root)])
    assert exit_info.value.code == 2 and "vce-stream: error: batch profile needs 1 <= min <= opt <= max" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["engines", "clear", "--cache-dir", str(root)])
    assert "removed 1 engine folder(s)" in capsys.readouterr().out and list_cached(root) == []


# --- through a whole run -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exam(tmp_path_factory) -> Path:
    from vce_stream.synthetic import SyntheticConfig, make_exam

    video = tmp_path_factory.mktemp("exam") / "exam_07.mkv"
    make_exam(video, SyntheticConfig(frames=160, width=64, height=64, seed=5, lesion_rate=10))
    return video


def run_and_read(exam: Path, bundle, scorer, out_dir: Path, post: PostprocessConfig) -> tuple[np.ndarray, dict]:
    from vce_stream.pipeline.run import PipelineConfig, RunOptions, run_exam
    from vce_stream.scores import load_scores

    out, scores = out_dir / "events.json", out_dir / "scores.npz"
    options = RunOptions(save_scores=str(scores), postprocess=post, preprocess=bundle.preprocess, pipeline=PipelineConfig(batch_size=4))
    summary = run_exam(exam, scorer, out, options)
    assert summary.frames == 160 and not summary.incomplete
    return load_scores(scores)[1]["exam_07"][1], read_submission(out)


def thresholds_away_from(probs: np.ndarray) -> tuple[float, ...]:
    """Per label, the midpoint of the widest gap between sorted probabilities near the median, so that
    events exist and no probability sits close to its threshold."""
    out = []
    for column in probs.T:
        values = np.sort(column)
        middle = values[len(values) // 4 : 3 * len(values) // 4 + 1]
        gaps = np.diff(middle)
        i = int(np.argmax(gaps))
        out.append(float((middle[i] + middle[i + 1]) / 2))
    return tuple(out)


@pytest.mark.parametrize("name", ["onnxruntime-fp32", "onnxruntime-int8", "torch-fp32"])
def test_engines_through_a_whole_run_agree_with_pytorch(cache, bundle, exam, tmp_path, name):
    precision = name.split("-")[1]
    tolerance = TOLERANCE.for_precision(precision)
    (tmp_path / "ref").mkdir(), (tmp_path / "eng").mkdir()
    reference_probs, _ = run_and_read(exam, bundle, torch_scorer(bundle, "cpu"), tmp_path / "ref", PostprocessConfig())
    post = PostprocessConfig(thresholds=thresholds_away_from(reference_probs), order="time", segmentation="label")
    reference_probs, reference_events = run_and_read(exam, bundle, torch_scorer(bundle, "cpu"), tmp_path / "ref", post)
    scorer = make_scorer(bundle, engine_dir=cache[name], device="cpu", batch_size=4)
    probs, events = run_and_read(exam, bundle, scorer, tmp_path / "eng", post)

    assert np.abs(probs - reference_probs).max() <= tolerance
    if precision == "fp32":
        distance = np.abs(reference_probs - np.array(post.thresholds)).min()
        assert distance > tolerance  # the condition under which events must be identical
        assert events == reference_events
        assert any(events["exam_07"])  # the comparison is not between two empty files


def test_run_command_uses_an_engine_and_refuses_one_of_another_bundle(cache, bundle, exam, tmp_path, capsys):
    from vce_stream.scores import load_scores

    def run(*extra: str, out: str) -> int:
        with pytest.raises(SystemExit) as info:
            main(["run", str(exam), "--model", str(bundle.path), "--out", str(tmp_path / out), "--batch-size", "4",
                  "--device", "cpu", "-q", *extra])  # fmt: skip
        return info.value.code

    assert run("--backend", "torch", "--save-scores", str(tmp_path / "probe.npz"), out="probe.json") == 0
    thresholds = thresholds_away_from(load_scores(tmp_path / "probe.npz")[1]["exam_07"][1])
    spec = ",".join(repr(value) for value in thresholds)
    assert run("--backend", "torch", "--thresholds", spec, "--save-scores", str(tmp_path / "ref.npz"), out="ref.json") == 0
    assert run("--engine", str(cache["onnxruntime-fp32"]), "--thresholds", spec, "--save-scores", str(tmp_path / "eng.npz"), out="eng.json") == 0
    reference = load_scores(tmp_path / "ref.npz")[1]["exam_07"][1]
    probs = load_scores(tmp_path / "eng.npz")[1]["exam_07"][1]
    assert np.abs(probs - reference).max() <= TOLERANCE.fp32
    assert np.abs(reference - np.array(thresholds)).min() > TOLERANCE.fp32  # so the events must be identical
    events = read_submission(tmp_path / "eng.json")
    assert events == read_submission(tmp_path / "ref.json") and any(e["label"] for e in events["exam_07"])

    other = create_random_bundle(tmp_path / "other", "tiny", seed=2)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["run", str(exam), "--model", str(other), "--out", str(tmp_path / "x.json"), "--engine", str(cache["onnxruntime-fp32"]), "-q"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and not (tmp_path / "x.json").exists()
    assert err.count("\n") == 1 and "built for another bundle" in err and "rebuild it with: vce-stream build-engine --model" in err


def test_an_onnx_engine_returns_the_image_features_of_the_same_pass_as_pytorch(cache, bundle):
    """Both graph outputs: probabilities and unit features, equal to the PyTorch model's one-pass pair."""
    scorer = make_scorer(bundle, engine_dir=cache["onnxruntime-fp32"], device="cpu", batch_size=4)
    batch = frames(11)  # split into 8 + 3 (padded) by the profile
    probs, features = scorer.score_with_features(batch)
    ref_probs, ref_features = torch_scorer(bundle, "cpu").score_with_features(batch)
    assert features.shape == (11, bundle.arch.feature_dim) and probs.shape == (11, 17)
    assert np.abs(probs - ref_probs).max() <= TOLERANCE.fp32 and np.abs(features - ref_features).max() <= 1e-4
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs, scorer.score(batch))


def test_cuda_without_an_index_resolves_to_the_current_device_mocked_cuda(monkeypatch):
    """Mocked CUDA (this machine has no GPU): "cuda" becomes "cuda:<current>", never an index of None."""
    from vce_stream.engine.select import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(VceError, match=r"has 2 CUDA device\(s\)"):
        resolve_device("cuda:5")


def test_a_device_this_machine_lacks_is_one_line():
    from vce_stream.engine.select import resolve_device

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(VceError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(VceError, match="not a device"):
        resolve_device("gpu7")


def test_backend_auto_on_cuda_never_takes_a_cached_cpu_engine_mocked_cuda(cache, bundle, monkeypatch):
    """Mocked CUDA (no GPU here): a cached ONNX Runtime engine fits the bundle, but a GPU run is served by
    torch on the GPU (or a TensorRT engine), never by a CPU engine unless asked for."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    choice = choose_engine(bundle, "auto", device="cuda", batch_size=4, cache_root=cache["root"])
    assert (choice.backend, choice.engine_dir, choice.device) == ("torch", None, torch.device("cuda", 0))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_torch_autocast_precision_is_real_and_its_agreement_is_measured(bundle, precision):
    """Issue 15 item 6: torch in bf16/fp16 autocast is a backend option (runs on this CPU too); it
    differs from fp32 (the autocast really runs) by less than the engine tolerance of that precision."""
    from vce_stream.engine.backends.pytorch import measure_agreement

    if precision == "fp16" and not torch.cuda.is_available():
        pytest.skip("fp16 autocast runs on CUDA; this machine has none")
    scorer = make_scorer(bundle, "torch", device="cpu", precision=precision)
    diff = measure_agreement(scorer, bundle.preprocess.size)
    assert 0 < diff <= TOLERANCE.for_precision(precision)


def test_torch_precision_auto_is_bf16_on_cuda_and_fp32_on_the_cpu_mocked_cuda(bundle, monkeypatch, tmp_path):
    assert choose_engine(bundle, "auto", device="cpu", cache_root=tmp_path).precision == "fp32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    choice = choose_engine(bundle, "auto", device="cuda", cache_root=tmp_path)
    assert choice.precision == "bf16" and "bf16 autocast" in choice.reason


class OutOfMemoryAbove(torch.nn.Module):
    """Simulated GPU memory (this machine has no GPU): a model that raises torch's OutOfMemoryError for
    batches larger than `limit`, and otherwise returns a fixed probability per frame."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.calls: list[int] = []

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        self.calls.append(frames.shape[0])
        if frames.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return frames.float().mean(dim=(1, 2, 3))[:, None].repeat(1, 2) / 255


def test_a_batch_that_does_not_fit_is_halved_once_then_one_line_simulated_oom():
    from vce_stream.engine.backends.pytorch import TorchScorer

    batch = frames(8)
    fits_half = TorchScorer(OutOfMemoryAbove(4), ("a", "b"))
    probs = fits_half.score(batch)
    assert fits_half.model.calls == [8, 4, 4] and probs.shape == (8, 2)
    np.testing.assert_allclose(probs, TorchScorer(OutOfMemoryAbove(8), ("a", "b")).score(batch))
    with pytest.raises(VceError, match="a batch of 8 frames does not fit .* nor its halves; use --batch-size 2 or less"):
        TorchScorer(OutOfMemoryAbove(2), ("a", "b")).score(batch)

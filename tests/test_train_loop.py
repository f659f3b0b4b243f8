"""Training end to end on a synthetic data set in the Galar layout (CPU, tiny model).

- `vce-stream train` with examples/train_tiny.yaml learns the visually separable labels (validation AP
  far above chance), and its bundle runs through `vce-stream run` and `vce-stream evaluate`, scoring
  exactly what training reported for the same validation video.
- Resume after a real SIGKILL, and after an injected stop, ends with the same weights as an
  uninterrupted run.
- Non-finite gradients skip the step (no weight changes) and are counted in the log.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from vce_stream.cli import cli
from vce_stream.config import from_dict, to_dict
from vce_stream.errors import ConfigError, InputError
from vce_stream.events.jsonio import write_submission
from vce_stream.labels import LABELS
from vce_stream.model.bundle import load_bundle

from train.config import DataConfig, TrainConfig, load_train_config
from train.data import ground_truth_events, read_galar
from train.logs import LOG_COLUMNS
from train.signals import TrainingInterrupted
from train.trainer import Trainer, train

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "examples" / "train_tiny.yaml"


@pytest.fixture(scope="module")
def galar(tmp_path_factory):
    from train.synthetic_galar import write_synthetic_galar

    root = tmp_path_factory.mktemp("galar")
    write_synthetic_galar(root, num_videos=6, frames=120, seed=0)
    return root


def small_config(**changes) -> TrainConfig:
    """The tiny example shrunk further: 2 epochs of 6 steps of 16 frames."""
    base = load_train_config(TINY)
    options = dict(epochs=2, samples_per_epoch=96, batch_size=16, checkpoint_every_steps=1)
    options.update(changes)
    config = dataclasses.replace(base, **options)
    return dataclasses.replace(config, presence=dataclasses.replace(config.presence, enabled=False))


def read_weights(bundle: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(bundle / "weights.safetensors"))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = read_weights(a), read_weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


@pytest.mark.slow
def test_tiny_training_learns_and_its_bundle_runs_and_evaluates(galar, tmp_path):
    out = tmp_path / "bundle"
    result = CliRunner().invoke(cli, ["train", "--config", str(TINY), "--data", str(galar), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    bundle = load_bundle(out)
    validation = bundle.manifest.extra["validation"]
    [val_id] = validation["validation_videos"]

    # Frame AP far above chance (chance AP of a class = its share of positive frames).
    video = read_galar(galar, DataConfig()).videos[val_id]
    present = video.targets.sum(axis=0) > 0
    chance = float(video.targets.mean(axis=0)[present].mean())
    assert validation["macro_ap"] > 0.6 and validation["macro_ap"] > 2.5 * chance, (validation["macro_ap"], chance)
    assert all(0.05 <= t <= 0.95 or t == 0.5 for t in bundle.thresholds)

    # Logs: one row per epoch with every column; per-class metrics in the JSON lines.
    work = tmp_path / "bundle.train"
    rows = list(csv.DictReader(open(work / "log.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6] and tuple(rows[0]) == LOG_COLUMNS
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    jsonl = [json.loads(line) for line in open(work / "log.jsonl")]
    assert [c["label"] for c in jsonl[0]["per_class"]] == list(LABELS)

    # The bundle through the real CLI on the validation video's frame folder, against its ground truth.
    gt_path = tmp_path / "gt.json"
    write_submission(gt_path, {val_id: ground_truth_events(video, LABELS)}, segmentation="tuple", order="time",
                     frame_ranges={val_id: (0, len(video) - 1)}, with_scores=False)
    events_path, scores_path = tmp_path / "events.json", tmp_path / "scores.json"
    vce = [sys.executable, "-m", "vce_stream"]
    run = subprocess.run([*vce, "run", str(galar / val_id), "--model", str(out), "--out", str(events_path),
                          "--video-id", val_id, "--labels-csv", str(galar / "Labels" / f"{val_id}.csv"),
                          "--device", "cpu", "-q"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    evaluate = subprocess.run([*vce, "evaluate", str(events_path), str(gt_path), "--json", str(scores_path)],
                              capture_output=True, text=True, timeout=120)
    assert evaluate.returncode == 0, evaluate.stderr
    overall = json.loads(scores_path.read_text())["overall"]
    # Training validated with the runtime's own frame preparation and event decision: same score.
    assert overall["mAP@0.5"] == pytest.approx(validation["temporal_map50"], abs=1e-6)
    assert overall["mAP@0.95"] == pytest.approx(validation["temporal_map95"], abs=1e-6)


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_weights_as_an_uninterrupted_run(galar, tmp_path):
    config = small_config()
    reference = train(config, galar, tmp_path / "reference", progress=False, log=lambda _: None)
    assert reference.history[-1]["steps"] == 6

    config_path = tmp_path / "small.yaml"
    config_path.write_text(yaml.safe_dump(to_dict(config)))
    out = tmp_path / "killed"
    work = tmp_path / "killed.train"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, "-m", "train", "--config", str(config_path), "--data", str(galar),
                                "--out", str(out), "--no-progress"], env=env, stderr=subprocess.DEVNULL)
    step = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        try:
            step = json.loads((work / "checkpoint.json").read_text())["state"]["global_step"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            step = 0
        if step >= 4:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"
    assert 4 <= step < 12 and not out.exists()

    resumed = train(config, galar, out, resume=True, progress=False, log=lambda _: None)
    assert_same_weights(reference.bundle, resumed.bundle)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in reference.history]
    assert resumed.thresholds == reference.thresholds


@pytest.mark.slow
def test_injected_stop_then_resume_matches_and_refusals_are_clear(galar, tmp_path):
    config = small_config(epochs=1, checkpoint_every_steps=0)
    reference = train(config, galar, tmp_path / "reference", progress=False, log=lambda _: None)
    out = tmp_path / "stopped"
    with pytest.raises(TrainingInterrupted, match="continue with --resume"):
        train(config, galar, out, progress=False, log=lambda _: None, stop_after_steps=3)
    with pytest.raises(InputError, match="holds a checkpoint of an earlier run"):
        train(config, galar, out, progress=False, log=lambda _: None)
    other = dataclasses.replace(config, seed=7)
    with pytest.raises(ConfigError, match=r"different config \(seed\)"):
        train(other, galar, out, resume=True, progress=False, log=lambda _: None)
    resumed = train(config, galar, out, resume=True, progress=False, log=lambda _: None)
    assert_same_weights(reference.bundle, resumed.bundle)
    with pytest.raises(InputError, match="no checkpoint to resume from"):
        train(config, galar, tmp_path / "fresh", resume=True, progress=False, log=lambda _: None)


class InfiniteGradientsFirst(Trainer):
    """Injects a fault: the first `bad` backward passes give one parameter an infinite gradient."""

    bad = 2

    def _build(self) -> None:
        super()._build()
        calls = {"n": 0}

        def poison(grad: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            return grad * float("inf") if calls["n"] <= self.bad else grad

        self.model.heads.classifier.bias.register_hook(poison)
        self.initial = {k: v.clone() for k, v in self.model.state_dict().items()}


def test_non_finite_gradients_skip_the_step_and_are_counted(galar, tmp_path):
    config = small_config(epochs=1, checkpoint_every_steps=0, samples_per_epoch=48)
    trainer = InfiniteGradientsFirst(config, galar, tmp_path / "b", progress=False, log=lambda _: None,
                                      stop_after_steps=2)
    with pytest.raises(TrainingInterrupted):
        trainer.run()
    # Two poisoned steps: nothing moved, nothing averaged, both counted.
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, trainer.initial[key]), key
    assert trainer.ema.updates == 0
    state = json.loads((tmp_path / "b.train" / "checkpoint.json").read_text())["state"]
    assert state["global_step"] == 2 and state["skipped_steps"] == 2
    result = InfiniteGradientsFirst(config, galar, tmp_path / "b", resume=True, progress=False, log=lambda _: None)
    result.bad = 0
    finished = result.run()
    assert finished.history[0]["skipped_steps"] == 2 and finished.history[0]["steps"] == 3
    assert np.isfinite(finished.history[0]["loss"])


def test_example_configs_load_and_the_default_is_the_papers_recipe():
    paper = load_train_config(ROOT / "examples" / "train_biomedclip.yaml")
    default = TrainConfig()
    assert paper.loss == default.loss and paper.optim == default.optim and paper.augment == default.augment
    assert (default.batch_size, default.epochs, default.seed, default.ema.decay) == (128, 5, 42, 0.999)
    assert (default.loss.gamma_pos, default.loss.gamma_neg, default.loss.margin) == (1.0, 4.0, 0.05)
    assert (default.optim.lr_backbone, default.optim.lr_heads, default.mixup.alpha) == (9e-5, 3e-4, 0.3)
    assert paper.arch.width == 768 and paper.preprocess.size == 224
    assert load_train_config(TINY).arch.img_size == 32


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"optim: unknown key\(s\) \['lr_head'\]"):
        from_dict(TrainConfig, {"optim": {"lr_head": 1e-3}})
    with pytest.raises(ConfigError, match="preprocess.size 224 differs from the model's img_size 32"):
        from_dict(TrainConfig, {"model": {"arch": "tiny"}})
    with pytest.raises(ConfigError, match="unknown architecture preset"):
        from_dict(TrainConfig, {"model": {"arch": "vit_huge"}})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_with_mixed_precision(galar, tmp_path):
    config = small_config(epochs=1, device="cuda", amp=True, checkpoint_every_steps=0)
    result = train(config, galar, tmp_path / "cuda", progress=False, log=lambda _: None)
    assert result.history[0]["skipped_steps"] == 0 and np.isfinite(result.history[0]["loss"])
    assert load_bundle(result.bundle).labels == LABELS

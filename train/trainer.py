"""The training run: data -> model -> epochs (checkpointed, resumable) -> thresholds -> model bundle.

Determinism is by construction, so `--resume` after a kill reproduces the uninterrupted run: the
sampler's draw is a function of (seed, epoch), each sample's augmentation of its own seed, and each
step reseeds the global RNG (dropout) and the mixup generator from (seed, global step). A checkpoint
therefore needs only the weights, the EMA, the optimiser, the scheduler and a few counters (epoch and
step: the sampler's whole state). Results are bit-for-bit repeatable for a fixed `threads` setting.

A step whose loss or gradient norm is not finite changes nothing (no optimiser or EMA step, BatchNorm
statistics restored; the schedule advances, so it stays aligned with the step count) and is counted.
SIGINT/SIGTERM stop the run at the next step boundary with a checkpoint (exit status 130; `signals`).

The pieces live beside it, one job each: `model` and `optim` (what trains), `inference` (validation
probabilities), `validate` (metrics, thresholds, the presence rule), `logs` (what the run reports),
`checkpoint` (what a resume reads).
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from vce_stream.atomic import atomic_write_bytes, atomic_write_text
from vce_stream.config import to_dict
from vce_stream.engine.select import resolve_device
from vce_stream.errors import ConfigError, InputError
from vce_stream.scores import load_scores, save_scores

from train import checkpoint as ckpt
from train import validate as val
from train.config import TrainConfig, config_differences
from train.data import FrameDataset, build_augment, concat_videos, read_galar, split_videos
from train.ema import ModelEma
from train.inference import Normalizer, predict_videos
from train.logs import epoch_line, metric_value, progress_bar, write_logs
from train.losses import TrainingLoss, positive_weights
from train.mixup import apply_mixup, draw_mixup
from train.model import build_model
from train.optim import build_optimizer, build_scheduler
from train.sampler import SqrtFrequencySampler, sqrt_frequency_weights
from train.signals import TrainingInterrupted, stop_on_signals

# Config keys a resumed run may change: they do not change what is computed (samples carry their seeds).
RESULT_NEUTRAL_KEYS = ("data.num_workers",)
BEST_WEIGHTS = "best-ema.safetensors"
BEST_SCORES = "best-val-scores.npz"
CONFIG_COPY = "config.yaml"
SPLIT_FILE = "split.json"


@dataclass(frozen=True)
class TrainResult:
    bundle: Path
    work_dir: Path
    best_epoch: int
    best_value: float
    thresholds: tuple[float, ...]
    presence: dict[str, float]
    history: list[dict[str, Any]]
    final_metrics: dict[str, Any]


def step_seed(seed: int, global_step: int) -> int:
    """Seed of one step's global RNG (dropout) and mixup draw."""
    return int(np.random.SeedSequence([seed, 1, global_step]).generate_state(1, dtype=np.uint64)[0] >> 1)


def default_work_dir(out: Path) -> Path:
    """Checkpoints and logs live beside the bundle (BUNDLE.train/), so the bundle stays small to copy."""
    return out.parent / f"{out.name}.train"


class Trainer:
    """One training run (see the module docstring). `run()` returns the TrainResult."""

    def __init__(
        self,
        config: TrainConfig,
        data_dir: str | Path,
        out: str | Path,
        work_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
        stop_after_steps: int | None = None,
    ) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self.out = Path(out)
        self.work_dir = Path(work_dir) if work_dir else default_work_dir(self.out)
        self.resume = resume
        self.progress = progress
        self.log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self.stop_after_steps = stop_after_steps  # for tests: checkpoint and stop as if killed

    # -- set-up ----------------------------------------------------------------------------------------

    def _check_outputs(self) -> None:
        """Refuse early (not after hours of training) what would fail at the end or mix two runs."""
        from vce_stream.model.bundle import MANIFEST_NAME

        config_dict = to_dict(self.config)
        if self.out.exists() and (not self.out.is_dir() or (any(self.out.iterdir()) and not (self.out / MANIFEST_NAME).is_file())):
            raise InputError(f"{self.out}: exists and is not a model bundle; refusing to overwrite it")
        if self.resume:
            if not ckpt.has_checkpoint(self.work_dir):
                raise InputError(f"{self.work_dir}: no checkpoint to resume from (--resume needs {ckpt.JSON_NAME})")
            saved = ckpt.read_checkpoint_meta(self.work_dir)["config"]
            differ = [key for key in config_differences(saved, config_dict) if key not in RESULT_NEUTRAL_KEYS]
            if differ:
                raise ConfigError(f"{self.work_dir / ckpt.JSON_NAME}: the checkpoint was made with a different config ({', '.join(differ[:6])}); resume needs the same one")
        elif ckpt.has_checkpoint(self.work_dir):
            raise InputError(f"{self.work_dir}: holds a checkpoint of an earlier run; pass --resume to continue it or remove the folder")

    def _write_run_files(self) -> None:
        """The resolved config and the split, beside the checkpoints (for people; resume reads the JSON)."""
        import yaml

        self.work_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.work_dir / CONFIG_COPY, yaml.safe_dump(to_dict(self.config), sort_keys=False))
        atomic_write_text(self.work_dir / SPLIT_FILE, json.dumps(self.split, indent=1) + "\n")

    def _load_data(self) -> None:
        cfg = self.config
        data = read_galar(self.data_dir, cfg.data)
        for warning in data.report.warnings():
            self.log(f"warning: {self.data_dir}: {warning}")
        train_ids, val_ids = split_videos(list(data.videos), cfg.data.val_fraction, cfg.data.split_seed, cfg.data.val_videos)
        self.train_videos = [data.videos[v].every_kth(cfg.data.every_k) for v in train_ids]
        self.val_full = {v: data.videos[v] for v in val_ids}
        self.val_sampled = {v: data.videos[v].every_kth(cfg.data.val_every_k) for v in val_ids}
        files, self.train_targets = concat_videos(self.train_videos)
        augment = build_augment(cfg.augment, cfg.preprocess.size) if cfg.augment.enabled else None
        self.train_set = FrameDataset(files, self.train_targets, cfg.preprocess, augment)
        self.samples_per_epoch = cfg.samples_per_epoch or len(self.train_set)
        self.steps_per_epoch = self.samples_per_epoch // cfg.batch_size
        if self.steps_per_epoch < 1:
            raise ConfigError(f"batch_size {cfg.batch_size} exceeds the {self.samples_per_epoch} samples of an epoch")
        self.gt = val.ground_truth_submission(self.val_full, cfg.labels)
        split = {"train": train_ids, "validation": val_ids, "train_frames": len(self.train_set),
                 "validation_frames": sum(len(v) for v in self.val_sampled.values())}
        self.split = split
        self.log(f"data: {len(train_ids)} training videos ({len(self.train_set)} frames, every {cfg.data.every_k}), "
                 f"{len(val_ids)} validation videos ({split['validation_frames']} frames, every {cfg.data.val_every_k})")

    def _build(self) -> None:
        cfg = self.config
        self.device = resolve_device(cfg.device)
        self.amp_dtype = None
        if cfg.amp and self.device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.model = build_model(cfg).to(self.device)
        self.optimizer, self.roles = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, cfg.epochs * self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype is torch.float16)
        self.ema = ModelEma(self.model, cfg.ema.decay, cfg.ema.warmup)
        pos_weight = positive_weights(self.train_targets, cfg.loss.pos_weight_min, cfg.loss.pos_weight_max)
        self.loss_fn = TrainingLoss(cfg.loss, pos_weight).to(self.device)
        self.normalizer = Normalizer(cfg.preprocess).to(self.device)
        self.sampler = SqrtFrequencySampler(sqrt_frequency_weights(self.train_targets), self.samples_per_epoch, cfg.seed)

    def _restore(self) -> ckpt.TrainState:
        meta, tensors = ckpt.load_checkpoint(self.work_dir)
        self.model.load_state_dict(ckpt.split_tensors(tensors, "model"))
        state = ckpt.train_state_from(meta)
        self.ema.load_state_dict(ckpt.split_tensors(tensors, "ema"), state.ema_updates)
        optim_state = ckpt.optimizer_from_parts({k: v.to(self.device) for k, v in tensors.items() if k.startswith("optim.")}, meta["optimizer"])
        self.optimizer.load_state_dict(optim_state)
        self.scheduler.load_state_dict(meta["scheduler"])
        if meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        self.log(f"resumed from {self.work_dir / ckpt.JSON_NAME}: epoch {state.epoch + 1}, step {state.step_in_epoch} "
                 f"(global step {state.global_step})")
        return state

    def _checkpoint(self, state: ckpt.TrainState) -> None:
        state.ema_updates = self.ema.updates
        scaler_state = self.scaler.state_dict() if self.scaler.is_enabled() else None
        ckpt.save_checkpoint(self.work_dir, self.model, self.ema.state_dict(), self.optimizer, self.scheduler,
                             scaler_state, state, to_dict(self.config))

    # -- training --------------------------------------------------------------------------------------

    def _train_step(self, frames: torch.Tensor, targets: torch.Tensor, global_step: int) -> dict[str, float] | None:
        """One optimiser step; None when it was skipped for a non-finite loss or gradient."""
        cfg = self.config
        seed = step_seed(cfg.seed, global_step)
        torch.manual_seed(seed)
        images = self.normalizer(frames.to(self.device, non_blocking=True))
        targets = targets.to(self.device, non_blocking=True)
        draw = draw_mixup(images.shape[0], cfg.mixup.alpha, cfg.mixup.prob, np.random.default_rng(seed))
        if draw is not None:
            images, targets = apply_mixup(images, targets, draw)
        self.model.train()
        # The forward pass updates BatchNorm statistics: a skipped step must not keep them either.
        buffers = {name: b.detach().clone() for name, b in self.model.named_buffers()}
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            output = self.model(images)
        parts = self.loss_fn(output.logits.float(), output.contrastive_logits.float(), targets)
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(parts.total):
            self._restore_buffers(buffers)
            return None
        self.scaler.scale(parts.total).backward()
        self.scaler.unscale_(self.optimizer)
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf"))
        if not torch.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.update()
            self._restore_buffers(buffers)
            return None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.ema.update(self.model)
        return {"loss": float(parts.total.detach()), "asl": float(parts.asl), "contrastive": float(parts.contrastive)}

    @torch.no_grad()
    def _restore_buffers(self, saved: dict[str, torch.Tensor]) -> None:
        for name, buffer in self.model.named_buffers():
            buffer.copy_(saved[name])

    def _run_epoch(self, state: ckpt.TrainState, stop: threading.Event) -> dict[str, float]:
        cfg = self.config
        self.sampler.set_epoch(state.epoch, state.step_in_epoch * cfg.batch_size)
        loader = DataLoader(
            self.train_set, batch_size=cfg.batch_size, sampler=self.sampler, drop_last=True,
            num_workers=cfg.data.num_workers, pin_memory=self.device.type == "cuda",
        )
        if state.step_in_epoch == 0 or not state.epoch_totals:
            state.epoch_totals = {"loss": 0.0, "asl": 0.0, "contrastive": 0.0, "done": 0, "skipped": 0}
        totals = state.epoch_totals
        bar = progress_bar(self.progress, self.steps_per_epoch - state.step_in_epoch, f"epoch {state.epoch + 1}/{cfg.epochs}")
        batches = iter(loader)
        with bar:
            while True:
                try:
                    frames, targets = next(batches)
                except StopIteration:
                    break
                except Exception:
                    # Ctrl-C also reaches DataLoader workers, which die; stop cleanly between steps.
                    if not stop.is_set():
                        raise
                    self._checkpoint(state)
                    raise self._interrupted(state) from None
                result = self._train_step(frames, targets, state.global_step)
                with warnings.catch_warnings():
                    # A skipped first step makes torch warn that the schedule stepped before the optimiser.
                    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)`")
                    self.scheduler.step()
                state.global_step += 1
                state.step_in_epoch += 1
                if result is None:
                    totals["skipped"] += 1
                    state.skipped_steps += 1
                else:
                    totals["done"] += 1
                    for k, v in result.items():
                        totals[k] += v
                bar.update(1)
                if state.step_in_epoch >= self.steps_per_epoch:
                    break
                limit_hit = self.stop_after_steps is not None and state.global_step >= self.stop_after_steps
                periodic = cfg.checkpoint_every_steps and state.global_step % cfg.checkpoint_every_steps == 0
                if periodic or limit_hit or stop.is_set():
                    self._checkpoint(state)
                if limit_hit or stop.is_set():
                    raise self._interrupted(state)
        done = totals["done"]
        means = {k: (totals[k] / done if done else float("nan")) for k in ("loss", "asl", "contrastive")}
        return {**means, "steps": state.step_in_epoch, "skipped_steps": int(totals["skipped"])}

    def _interrupted(self, state: ckpt.TrainState) -> TrainingInterrupted:
        return TrainingInterrupted(
            f"training stopped at epoch {state.epoch + 1}, step {state.step_in_epoch}; "
            f"checkpoint in {self.work_dir} (continue with --resume)"
        )

    def _validate(self, state: ckpt.TrainState, train_stats: dict[str, float], seconds: float) -> dict[str, Any]:
        cfg = self.config
        predictions = predict_videos(self.ema.module, self.val_sampled, cfg, self.device, self.normalizer, self.amp_dtype)
        metrics = val.epoch_metrics(predictions, self.val_sampled, self.val_full, self.gt, cfg)
        lrs = {role: group["lr"] for role, group in zip(self.roles, self.optimizer.param_groups)}
        row = {"epoch": state.epoch + 1, **train_stats, "lr_backbone": lrs.get("backbone"), "lr_heads": lrs.get("heads"),
               **metrics, "seconds": seconds}
        value = metric_value(row, cfg.select_metric)
        if not state.best or value > state.best["value"]:
            from safetensors.torch import save as save_safetensors

            weights = {k: v.detach().cpu().contiguous().clone() for k, v in self.ema.state_dict().items()}
            atomic_write_bytes(self.work_dir / BEST_WEIGHTS, save_safetensors(weights))
            save_scores(self.work_dir / BEST_SCORES, predictions, cfg.labels)
            state.best = {"epoch": state.epoch + 1, "metric": cfg.select_metric, "value": value}
        return row

    def run(self) -> TrainResult:
        threads = torch.get_num_threads()
        if self.config.threads is not None:
            torch.set_num_threads(self.config.threads)
        try:
            return self._run()
        finally:
            torch.set_num_threads(threads)

    def _run(self) -> TrainResult:
        cfg = self.config
        self._check_outputs()
        self._load_data()
        self._build()
        state = ckpt.TrainState()
        if self.resume:
            state = self._restore()
        else:
            self._write_run_files()
        with stop_on_signals() as stop:
            while state.epoch < cfg.epochs:
                started = time.perf_counter()
                train_stats = self._run_epoch(state, stop)
                row = self._validate(state, train_stats, time.perf_counter() - started)
                state.history.append(_plain(row))
                state.epoch += 1
                state.step_in_epoch = 0
                self._checkpoint(state)
                write_logs(self.work_dir, state.history)
                self.log(epoch_line(row, cfg.select_metric))
        return self._finish(state)

    # -- the bundle ------------------------------------------------------------------------------------

    def _finish(self, state: ckpt.TrainState) -> TrainResult:
        """Best epoch's EMA weights, thresholds and presence rule from its validation predictions -> bundle."""
        from safetensors.torch import load_file

        from vce_stream.model.bundle import save_bundle

        cfg = self.config
        self.model.load_state_dict(load_file(str(self.work_dir / BEST_WEIGHTS)))
        labels, predictions = load_scores(self.work_dir / BEST_SCORES)
        targets = np.concatenate([self.val_sampled[v].targets for v in predictions])
        scores = np.concatenate([p for _, p in predictions.values()])
        thresholds = val.search_thresholds(targets, scores, cfg.thresholds)
        post = val.with_thresholds(cfg.postprocess, thresholds)
        without = val.temporal_map(predictions, self.val_full, cfg.labels, post, gt=self.gt)
        final, presence = without, {}
        presence_note: dict[str, Any] = {"searched": cfg.presence.enabled}
        if cfg.presence.enabled:
            found = val.search_presence(predictions, self.val_full, cfg.labels, post, cfg.presence.rounds)
            presence_note.update(map50_without=found.map50_without, map50_with=found.map50_with, used=found.improves)
            if found.improves:
                post, presence = found.post, found.gates
                final = val.temporal_map(predictions, self.val_full, cfg.labels, post, gt=self.gt)
        per_class = val.frame_metrics(targets, scores, thresholds, cfg.labels)
        final_metrics = {
            "best_epoch": state.best["epoch"],
            "select_metric": cfg.select_metric,
            "macro_ap": val.macro(per_class, "ap"),
            "macro_auc": val.macro(per_class, "auc"),
            "temporal_map50": final.map50,
            "temporal_map95": final.map95,
            "temporal_map50_without_presence": without.map50,
            "temporal_map95_without_presence": without.map95,
            "validation_videos": list(self.val_full),
        }
        extra = {"validation": final_metrics, "presence_gates": presence, "presence_search": presence_note}
        source = {"kind": "trained", "data": str(self.data_dir), "work_dir": str(self.work_dir),
                  "pretrained": cfg.model.pretrained, "seed": cfg.seed, "steps": state.global_step,
                  "skipped_steps": state.skipped_steps}
        save_bundle(self.out, self.model.cpu().eval(), cfg.arch, cfg.labels, thresholds=thresholds, postprocess=post,
                    preprocess=cfg.preprocess, source=source, extra=_plain(extra))
        self.log(f"wrote {self.out}: best epoch {state.best['epoch']} ({cfg.select_metric} {state.best['value']:.4f}); "
                 f"validation temporal mAP@0.5 {final.map50:.4f}, @0.95 {final.map95:.4f}; "
                 f"presence rule on {len(presence)} label(s)")
        return TrainResult(self.out, self.work_dir, state.best["epoch"], state.best["value"],
                           tuple(float(t) for t in thresholds), presence, state.history, final_metrics)


def _plain(value: Any) -> Any:
    """Floats as Python floats (NaN as None) so the manifest stays plain YAML."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def train(config: TrainConfig, data_dir: str | Path, out: str | Path, **options: Any) -> TrainResult:
    """Train on a Galar-layout folder and write the model bundle `out` (see `Trainer` for options)."""
    return Trainer(config, data_dir, out, **options).run()

"""Checkpoints hold no pickle and restore the optimiser exactly; trainable modes freeze what they say."""

from __future__ import annotations

import json

import pytest
import torch

from vce_stream.config import from_dict
from vce_stream.errors import InputError
from vce_stream.model.classifier import build_classifier
from vce_stream.model.config import arch_preset

from train import checkpoint as ckpt
from train.config import TrainConfig
from train.optim import build_optimizer, build_scheduler


def tiny_config(**optim) -> TrainConfig:
    return from_dict(TrainConfig, {"model": {"arch": "tiny"}, "preprocess": {"size": 32}, "optim": optim})


def one_step(model, optimizer, scheduler):
    out = model(torch.randn(4, 3, 32, 32))
    (out.logits.square().mean() + out.contrastive_logits.mean()).backward()
    optimizer.step()
    optimizer.zero_grad()
    scheduler.step()


def test_checkpoint_round_trip_restores_model_optimiser_and_schedule(tmp_path):
    torch.manual_seed(0)
    config = tiny_config()
    model = build_classifier(arch_preset("tiny"), seed=0)
    optimizer, _ = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, total_steps=10)
    for _ in range(3):
        one_step(model, optimizer, scheduler)
    state = ckpt.TrainState(epoch=1, step_in_epoch=2, global_step=3, ema_updates=3, history=[{"epoch": 1, "loss": 0.5}])
    ckpt.save_checkpoint(tmp_path, model, model.state_dict(), optimizer, scheduler, None, state, {"seed": 1})
    ckpt.save_checkpoint(tmp_path, model, model.state_dict(), optimizer, scheduler, None, state, {"seed": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-000000003.safetensors", "checkpoint.json"]

    meta, tensors = ckpt.load_checkpoint(tmp_path)
    clone = build_classifier(arch_preset("tiny"), seed=5)
    clone.load_state_dict(ckpt.split_tensors(tensors, "model"))
    clone_opt, _ = build_optimizer(clone, config)
    clone_sched = build_scheduler(clone_opt, config, total_steps=10)
    clone_opt.load_state_dict(ckpt.optimizer_from_parts(tensors, meta["optimizer"]))
    clone_sched.load_state_dict(meta["scheduler"])
    assert ckpt.train_state_from(meta) == state
    # One more identical step from both: identical weights means the whole optimiser state came back.
    torch.manual_seed(1)
    one_step(model, optimizer, scheduler)
    torch.manual_seed(1)
    one_step(clone, clone_opt, clone_sched)
    for (name, a), b in zip(model.state_dict().items(), clone.state_dict().values()):
        assert torch.equal(a, b), name
    assert scheduler.get_last_lr() == clone_sched.get_last_lr()


def test_a_broken_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint.json").write_text("{not json")
    with pytest.raises(InputError, match="checkpoint.json: not a readable checkpoint"):
        ckpt.load_checkpoint(tmp_path)
    (tmp_path / "checkpoint.json").write_text(json.dumps({"format": ckpt.FORMAT, "tensors": "../evil.safetensors"}))
    with pytest.raises(InputError, match="inside"):
        ckpt.load_checkpoint(tmp_path)
    (tmp_path / "checkpoint.json").write_text(json.dumps({"format": ckpt.FORMAT, "tensors": "gone.safetensors"}))
    with pytest.raises(InputError, match="gone.safetensors: file not found"):
        ckpt.load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    "mode, trained",
    [("all", {"backbone", "differential", "heads"}), ("differential", {"differential", "heads"}), ("heads", {"heads"})],
)
def test_trainable_modes_freeze_the_other_groups_and_use_their_learning_rates(mode, trained):
    config = tiny_config(trainable=mode, lr_backbone=1e-5, lr_heads=1e-3)
    model = build_classifier(arch_preset("tiny"), seed=0)
    optimizer, roles = build_optimizer(model, config)
    assert set(roles) == trained
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for group, params in model.param_groups().items():
        for p in params:
            assert p.requires_grad == (group in trained) and (id(p) in in_optimizer) == (group in trained)
    for role, group in zip(roles, optimizer.param_groups):
        assert group["lr"] == (1e-5 if role == "backbone" else 1e-3)
        assert group["weight_decay"] in (0.0, 5e-4)
        assert group["weight_decay"] == 0.0 or all(p.ndim >= 2 for p in group["params"])

"""What trains and how fast: parameter groups, AdamW with per-group learning rates, the one-cycle schedule."""

from __future__ import annotations

import torch

from train.config import TrainConfig


def trainable_groups(model: torch.nn.Module, mode: str) -> dict[str, list[torch.nn.Parameter]]:
    """The parameter groups that train under optim.trainable; the others get requires_grad False."""
    groups = model.param_groups()
    keep = {"all": ("backbone", "differential", "heads"), "differential": ("differential", "heads"), "heads": ("heads",)}[mode]
    for name, params in groups.items():
        for p in params:
            p.requires_grad_(name in keep)
    return {name: params for name, params in groups.items() if name in keep and params}


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> tuple[torch.optim.AdamW, list[str]]:
    """AdamW over the trainable groups; weight decay on matrices only (not biases, norms, scalars).

    Returns the optimiser and each param group's role name (for per-group LRs and the log).
    """
    opt = config.optim
    lrs = {"backbone": opt.lr_backbone, "differential": opt.lr_differential or opt.lr_heads, "heads": opt.lr_heads}
    param_groups, roles = [], []
    for role, params in trainable_groups(model, opt.trainable).items():
        for decay in (True, False):
            chosen = [p for p in params if (p.ndim >= 2) == decay]
            if chosen:
                param_groups.append({"params": chosen, "lr": lrs[role], "weight_decay": opt.weight_decay if decay else 0.0})
                roles.append(role)
    return torch.optim.AdamW(param_groups, betas=opt.betas), roles


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    opt = config.optim
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=[group["lr"] for group in optimizer.param_groups],
        total_steps=total_steps,
        pct_start=opt.pct_start,
        div_factor=opt.div_factor,
        final_div_factor=opt.final_div_factor,
        cycle_momentum=opt.cycle_momentum,
    )

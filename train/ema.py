"""Exponential moving average of model weights (used for validation and the final bundle).

After each optimiser step: ema = d * ema + (1 - d) * weights, for every floating-point tensor of the
state dict (parameters and buffers such as BatchNorm statistics); integer buffers are copied. With
warm-up, d = min(decay, (1 + n) / (10 + n)) at update n (0-based), so a short run is not dominated by
the random initial weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(decay: float, updates: int, warmup: bool) -> float:
    """The decay used at update number `updates` (0-based)."""
    return min(decay, (1.0 + updates) / (10.0 + updates)) if warmup else decay


class ModelEma:
    """A frozen copy of `model` that follows its weights.

    `module` is the averaged model (eval mode, no gradients); `updates` counts updates (part of a
    checkpoint, as it sets the warm-up decay).
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True) -> None:
        self.module = copy.deepcopy(model).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        self.decay = decay
        self.warmup = warmup
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = ema_decay(self.decay, self.updates, self.warmup)
        current = model.state_dict()
        for name, average in self.module.state_dict().items():
            value = current[name].detach()
            if average.is_floating_point():
                average.mul_(d).add_(value.to(average.dtype), alpha=1.0 - d)
            else:
                average.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        self.module.load_state_dict(state)
        self.updates = int(updates)

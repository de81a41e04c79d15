"""Exponential moving average of a model's weights, used for sampling."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``shadow``, a frozen copy of ``model`` whose floats track an EMA.

    The effective decay warms up as ``min(decay, (1 + n) / (10 + n))`` over the
    ``n`` updates so far, so early samples are not dominated by the random init.
    Floating-point buffers (e.g. BatchNorm running statistics) are averaged
    the same way, so EMA weights are paired with matching statistics (as in
    timm's ModelEmaV2); integer buffers are copied.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_p = [p for p in self.shadow.parameters()]
        cur_p = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_p, cur_p, 1.0 - d)
        for b_ema, b in zip(self.shadow.buffers(), model.buffers()):
            if b.is_floating_point():
                b_ema.lerp_(b, 1.0 - d)
            else:
                b_ema.copy_(b)

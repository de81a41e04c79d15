"""``train.optimizer: muon``: PyTorch's Muon for the hidden matrices and AdamW for the rest, stepped as one.

As in the modded-nanoGPT speedrun (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural
networks"), Muon orthogonalises the momentum of each hidden weight matrix with a few Newton-Schulz
iterations (``torch.optim.Muon``, with the iterations in float32 on CPUs without bfloat16 instructions:
:func:`ns_dtype`); the parameters that are not maps between hidden features train with
AdamW. Which is which is decided from the module tree alone, for any family (:func:`split_hidden`):

- a **hidden matrix** is a 2-D parameter with both sides > 1 that is not the weight of an ``nn.Embedding``
  (a head tied to an embedding, like GPT's ``lm_head``, is the same ``Parameter`` and stays with it);
- everything else goes to AdamW: embeddings, biases, norm gains, conv kernels (ndim 4) and other
  ``ndim != 2`` tensors, and matrices with a side of 1 (a scalar head such as a discriminator's
  ``Linear(F, 1)``, for which orthogonalising only normalises a vector). An *untied* output head over a
  vocabulary would count as hidden; genforge's GPT ties its head.

Learning rates. ``train.lr`` is AdamW's peak and ``train.muon_lr`` (default 0.02, the default of Keller Jordan's
reference Muon, with PyTorch's ``adjust_lr_fn="original"``, which scales it by
``sqrt(max(1, rows / cols))``) is Muon's. Each Muon param group carries ``lr_scale = muon_lr / lr``,
and :func:`genforge.training.optim.set_lr` multiplies it in, so warmup and decay scale both peaks by
the same factor; a ``train.group_lr`` override moves both in proportion. ``--find-lr`` sweeps both in
proportion too but suggests only ``train.lr``: scale ``train.muon_lr`` by the same factor to apply it.
Muon's decoupled weight decay shrinks by ``lr × weight_decay`` per step with *its* lr, so it gets
``weight_decay × lr / muon_lr``: a hidden matrix shrinks by the same fraction per step as under AdamW.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim._muon import _adjust_lr

from genforge.training.precision import auto_precision

EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)


def split_hidden(params: list[nn.Parameter], model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``params`` split into (hidden matrices for Muon, the rest for AdamW), each in ``params``' order.

    Args:
        params: one parameter group of ``model`` (the trainer's lists; a GAN has two).
        model: the module they belong to, searched for embeddings (and so for heads tied to them).
    """
    embedded = {id(m.weight) for m in model.modules() if isinstance(m, EMBEDDINGS)}
    hidden = [p for p in params if p.ndim == 2 and min(p.shape) > 1 and id(p) not in embedded]
    chosen = {id(p) for p in hidden}
    return hidden, [p for p in params if id(p) not in chosen]


def newton_schulz(grad: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float,
                  dtype: torch.dtype) -> torch.Tensor:
    """PyTorch's quintic Newton-Schulz orthogonalisation (``torch.optim._muon``) computed in ``dtype``:
    grad [m, n] → an approximately semi-orthogonal [m, n] (singular values in about [0.5, 1.5])."""
    a, b, c = coefficients
    x = grad.to(dtype)
    if grad.size(0) > grad.size(1):
        x = x.T
    x = x / x.norm().clamp(min=eps)  # spectral norm at most 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if grad.size(0) > grad.size(1) else x


def ns_dtype(device: torch.device) -> torch.dtype:
    """The dtype of the orthogonalisation: bfloat16 (PyTorch's choice) where it runs in hardware (CUDA with
    bf16, CPUs with AVX-512 BF16 or AMX), float32 elsewhere. On an AMD EPYC without bf16 instructions a bf16
    32 x 32 matmul ran 17x slower than fp32 and one tiny-gpt training step 4.7x slower under Muon than AdamW."""
    return torch.bfloat16 if auto_precision(device) == "bf16-mixed" else torch.float32


class Muon(torch.optim.Muon):
    """``torch.optim.Muon`` (same state, same update) whose Newton-Schulz runs in :func:`ns_dtype`."""

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        if closure is not None:
            raise ValueError("Muon.step takes no closure")
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad, memory_format=torch.preserve_format)
                buf = state["momentum_buffer"]
                buf.lerp_(p.grad, 1 - momentum)
                update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                update = newton_schulz(update, group["ns_coefficients"], group["ns_steps"], group["eps"],
                                       ns_dtype(p.device))
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update, alpha=-_adjust_lr(lr, group["adjust_lr_fn"], p.shape))


class MuonAdamW:
    """A ``torch.optim.Muon`` and a ``torch.optim.AdamW`` that step, zero and checkpoint as one optimizer.

    ``param_groups`` lists both optimizers' groups (Muon's first), so :func:`set_lr`, a ``GradScaler``'s
    ``unscale_``/``step`` and gradient clipping see every parameter. Either part may be absent (a group
    with no hidden matrix, e.g. a discriminator of conv kernels, has no Muon).

    Args:
        muon: over the hidden matrices, its groups carrying ``lr_scale`` (see the module docstring); or None.
        adamw: over everything else; or None.
    """

    def __init__(self, muon: torch.optim.Muon | None, adamw: torch.optim.AdamW | None) -> None:
        self.optimizers: dict[str, torch.optim.Optimizer] = {
            name: opt for name, opt in (("muon", muon), ("adamw", adamw)) if opt is not None}
        if not self.optimizers:
            raise ValueError("MuonAdamW needs at least one of muon and adamw")
        self._scales = [g.get("lr_scale") for g in self.param_groups]

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [g for opt in self.optimizers.values() for g in opt.param_groups]

    def step(self, closure: None = None) -> None:
        if closure is not None:
            raise ValueError("MuonAdamW.step takes no closure")
        for opt in self.optimizers.values():
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, dict[str, Any]]:
        """``{"muon": ..., "adamw": ...}`` (the parts present): tensors and plain values, for ``weights_only``."""
        return {name: opt.state_dict() for name, opt in self.optimizers.items()}

    def load_state_dict(self, state: dict[str, dict[str, Any]]) -> None:
        """Restore both parts; the configured ``lr_scale`` wins over the saved one (as ``train.lr`` does)."""
        if not isinstance(state, dict) or set(state) != set(self.optimizers):
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"the optimizer state holds {keys}, this Muon+AdamW optimizer has "
                             f"{sorted(self.optimizers)} (was the run trained with another train.optimizer?)")
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state[name])
        for group, scale in zip(self.param_groups, self._scales):
            if scale is not None:
                group["lr_scale"] = scale

"""Muon (K. Jordan 2024): momentum, then Newton-Schulz orthogonalisation, for weight matrices (NL Eq. 42).

In the memory view (NL Sec. 4.2) the momentum is a linear memory of gradients and Newton-Schulz is
an inner optimiser of the output (NL Eqs. 43-44, 52): ``W <- W - lr * s * NS5(nesterov(B))``.
Matrices get that update; other parameters get AdamW in the same optimizer (``hope.optim.hybrid``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from hope.ops.newton_schulz import QUINTIC
from hope.optim.hybrid import HybridOptimizer, orthogonalise

ADJUST_LR = ("original", "match_rms_adamw", "none")


def shape_scale(shape: torch.Size, adjust_lr: str) -> float:
    """Factor on the lr of a ``[rows, cols]`` update: ``sqrt(max(1, rows/cols))`` (``original``, K. Jordan),
    ``0.2 sqrt(max(rows, cols))`` (``match_rms_adamw``, Moonshot: the update's RMS is AdamW's ~0.2, so
    AdamW's lr and weight decay carry over) or 1 (``none``)."""
    rows, cols = shape[0], math.prod(shape[1:])
    if adjust_lr == "original":
        return math.sqrt(max(1.0, rows / cols))
    if adjust_lr == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return 1.0


class Muon(HybridOptimizer):
    """Muon for matrices, AdamW for the rest (see ``hope.optim.hybrid`` for the param groups).

    Per matrix, with gradient ``G``: ``B <- momentum B + (1 - momentum) G`` (``B.lerp_(G, 1 - momentum)``);
    ``U = (1 - momentum) G + momentum B`` with ``nesterov`` (else ``B``); ``O = NS(U)`` (``ns_steps``
    quintic steps in ``ns_dtype``); ``W <- (1 - lr wd) W - lr * shape_scale * O``.
    With ``adjust_lr="original"`` this is ``torch.optim.Muon`` (same arithmetic, bit for bit in bf16).

    Args:
        lr: learning rate of the orthogonal groups (Muon's usual 0.02 with ``adjust_lr="original"``).
        momentum: ``beta`` of the momentum EMA. nesterov: use the Nesterov look-ahead.
        weight_decay: decoupled weight decay (``W <- (1 - lr wd) W``), in every group.
        ns_steps, ns_coefficients, ns_eps, ns_dtype: the Newton-Schulz iteration (``hope.ops.newton_schulz``).
        adjust_lr: ``original``, ``match_rms_adamw`` or ``none`` (see ``shape_scale``).
        adamw_lr: lr of the AdamW groups that a plain parameter list is split into (``None``: ``lr``).
        adamw_betas, adamw_eps: AdamW's hyperparameters. foreach: batch same-shape matrices in one NS call.
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.0, ns_steps: int = 5, ns_coefficients: tuple[float, float, float] = QUINTIC,
                 ns_eps: float = 1e-7, ns_dtype: str | None = "bfloat16", adjust_lr: str = "original",
                 adamw_lr: float | None = None, adamw_betas: tuple[float, float] = (0.9, 0.95),
                 adamw_eps: float = 1e-8, foreach: bool = True) -> None:
        if lr < 0 or weight_decay < 0 or not 0 <= momentum < 1:
            raise ValueError(f"need lr >= 0, weight_decay >= 0 and 0 <= momentum < 1, got {lr}, {weight_decay}, {momentum}")
        if adjust_lr not in ADJUST_LR:
            raise ValueError(f"adjust_lr must be one of {ADJUST_LR}, got {adjust_lr!r}")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, ns_steps=ns_steps,
                        ns_coefficients=tuple(ns_coefficients), ns_eps=ns_eps, ns_dtype=ns_dtype, adjust_lr=adjust_lr,
                        adamw_betas=tuple(adamw_betas), adamw_eps=adamw_eps, foreach=foreach)
        super().__init__(params, defaults, adamw_lr)

    def _orthogonal_step(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        momentum, lr, weight_decay = group["momentum"], group["lr"], group["weight_decay"]
        buffers = []
        for p in params:
            state = self.state[p]
            if not state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buffers.append(state["momentum_buffer"])
        torch._foreach_lerp_(buffers, grads, 1 - momentum)
        updates = [g.lerp(b, momentum) for g, b in zip(grads, buffers)] if group["nesterov"] else buffers
        orthogonal = orthogonalise(updates, group)
        if weight_decay:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        for p, o in zip(params, orthogonal):
            p.add_(o, alpha=-lr * shape_scale(p.shape, group["adjust_lr"]))

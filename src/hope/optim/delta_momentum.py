"""Delta momentum (NL Sec. 4.4, Eq. 49): momentum whose memory of gradients is a delta rule.

Plain momentum is one GD step on the dot-product objective ``<m, g>`` (NL Eqs. 13, 33), so it only
ever adds gradients. Regressing instead (NL Eq. 48, ``min_m ||m g^T - P||^2``) gives the update

    m <- m (alpha I - delta' g^T g) - lr g,        W <- W + m              (NL Eq. 49, P = I)

with ``g`` the gradient viewed as a matrix ``[shape[0], rest]`` (a vector as one row). The
gradient-dependent decay ``g^T g`` makes the memory forget what it stored along the directions of
the current gradient before writing it: a delta rule whose keys are gradients.
``delta' = delta / (1 + delta ||g||_F^2)`` (the proximal step size, as in DGD) keeps the decay a
contraction whatever the gradient's scale; ``delta = 0`` is SGD with momentum ``alpha``
(``torch.optim.SGD(momentum=alpha, dampening=0)`` for a constant lr). The preconditioner ``P`` of
Eq. 49 is the identity here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from hope.optim.params import as_matrix, reject_dtensor


def gradient_decay(memory: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``memory @ (grad^T grad)`` for matrices ``[rows, cols]``, multiplied in the cheaper order."""
    if grad.shape[1] <= grad.shape[0]:
        return memory @ (grad.T @ grad)
    return (memory @ grad.T) @ grad


class DeltaMomentum(torch.optim.Optimizer):
    """Delta momentum (NL Eq. 49) for every parameter.

    Args:
        lr: step size of the gradient written into the memory.
        momentum: retention ``alpha`` of the memory.
        delta: strength of the gradient-dependent decay (0: plain momentum).
        weight_decay: decoupled weight decay ``W <- (1 - lr wd) W``.
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.01, momentum: float = 0.9, delta: float = 1.0,
                 weight_decay: float = 0.0) -> None:
        if lr < 0 or weight_decay < 0 or delta < 0 or not 0 <= momentum <= 1:
            raise ValueError(f"need lr, weight_decay, delta >= 0 and momentum in [0, 1], got {lr}, {weight_decay}, "
                             f"{delta}, {momentum}")
        super().__init__(params, dict(lr=lr, momentum=momentum, delta=delta, weight_decay=weight_decay))
        reject_dtensor((p for g in self.param_groups for p in g["params"]), "DeltaMomentum")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, alpha, delta, weight_decay = group["lr"], group["momentum"], group["delta"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                memory = state["momentum_buffer"]
                grad = as_matrix(p.grad)
                decayed = memory.mul(alpha)
                if delta:
                    step = delta / (1 + delta * grad.pow(2).sum())
                    decayed.sub_(gradient_decay(as_matrix(memory), grad).mul_(step).reshape(p.shape))
                memory.copy_(decayed.add_(p.grad, alpha=-lr))
                if weight_decay:
                    p.mul_(1 - lr * weight_decay)
                p.add_(memory)
        return loss

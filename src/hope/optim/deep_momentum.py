"""Deep momentum gradient descent (DMGD, NL Sec. 4.4, Eq. 50): the momentum is a small MLP.

NL Eq. 50 reads ``W_{i+1} = W_i + m_{i+1}(u_i)``, ``m_{i+1} = alpha m_i - eta grad L2(m_i; u_i)``
with ``u_i`` the gradient: the momentum is a memory with its own parameters, trained by one GD step
(with retention ``alpha``) per outer step on its own inner objective ``L2``, and read out at the
current gradient. The paper leaves ``L2`` and the memory's shape open; the choices here
[IMPL-CHOICE, docs/optimizers.md] are:

- The gradient ``u`` is viewed as rows ``u_r`` of a matrix ``[shape[0], d]`` (a vector is one row).
  The memory is a linear part ``B`` (shaped like the parameter) plus a row-wise MLP shared by all
  rows of that parameter, ``f(u)_r = s_r W1 silu(W2 u_r / s_r)``, ``W1: [d, hidden]`` starting at
  zero, ``W2: [hidden, d]`` random (seeded by ``seed``). Readout: ``m(u) = B + f(u)``.
  ``s_r^2`` is a running (EMA, rate ``inner_lr``, bias-corrected) mean square of row ``r``'s
  gradients, so the MLP works in stationary units: with ``B`` an EMA of the same rate, Jensen gives
  ``rms(B_r) <= s_r``, and the MLP's targets stay bounded.
- ``L2`` is the regression of the descent direction, ``1/2 ||m(u) + u||^2``. ``B`` takes its GD step
  on it with step ``inner_lr``; the MLP on the same objective with each row in units of ``s_r``,
  averaged over the rows whose gradient is not zero (e.g. embedding rows of tokens in the batch).
  The MLP's GD steps are proximal, as DGD's (``eta' = eta / (1 + eta L)``), with ``L`` a bound on
  each layer's curvature: ``mean_r ||h_r||^2`` for ``W1`` (``h_r = silu(W2 k_r)``; DGD's
  ``||x||^2``) and ``1.21 mean_r ||k_r||^2 ||W1||_F^2`` for ``W2`` (``|silu'| <= 1.1``).
- ``W <- (1 - lr wd) W + lr * m_{i+1}(u)``.

Without the MLP (``hidden=0``) and ``alpha = 1`` this is exactly EMA momentum,
``B <- (1 - inner_lr) B - inner_lr u``: the key-free linear memory. The MLP lets the memory's output
depend on the current gradient; the better it fits, the closer the step comes to plain SGD, so
``inner_lr`` and ``mlp_lr`` set how much gradient history the update carries.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

from hope.optim.params import as_matrix, reject_dtensor


def mlp_readout(keys: torch.Tensor, scale: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """``f(u)_r = s_r W1 silu(W2 k_r)`` for row-normalised keys ``k_r = u_r / s_r`` (``keys [rows, d]``, ``scale [rows, 1]``)."""
    return scale * (F.silu(keys @ w2.T) @ w1.T)


class DeepMomentum(torch.optim.Optimizer):
    """DMGD (NL Eq. 50) with an MLP momentum memory per parameter (see the module docstring).

    Args:
        lr: outer step size (the update is ``lr * m(u)``, ``m(u)`` in gradient units).
        inner_lr: GD step of the linear part ``B`` (``hidden=0``: EMA momentum with beta = 1 - inner_lr).
        mlp_lr: GD step of the MLP weights on the normalised inner objective (before the proximal scaling).
        retention: ``alpha``, multiplies the memory's weights before each inner step.
        hidden: width of the MLP (0: no MLP).
        weight_decay: decoupled weight decay. seed: seed of the MLPs' random first layers.
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.01, inner_lr: float = 0.1, mlp_lr: float = 1.0,
                 retention: float = 1.0, hidden: int = 8, weight_decay: float = 0.0, seed: int = 0) -> None:
        if lr < 0 or weight_decay < 0 or not 0 < inner_lr <= 1 or mlp_lr < 0 or not 0 <= retention <= 1 or hidden < 0:
            raise ValueError("need lr, mlp_lr, weight_decay >= 0, 0 < inner_lr <= 1, 0 <= retention <= 1, hidden >= 0; "
                             f"got {lr}, {mlp_lr}, {weight_decay}, {inner_lr}, {retention}, {hidden}")
        super().__init__(params, dict(lr=lr, inner_lr=inner_lr, mlp_lr=mlp_lr, retention=retention, hidden=hidden,
                                      weight_decay=weight_decay, seed=seed))
        reject_dtensor((p for g in self.param_groups for p in g["params"]), "DeepMomentum")

    def _init_state(self, p: torch.Tensor, group: dict[str, Any], index: int) -> dict[str, Any]:
        state = self.state[p]
        state["step"] = 0
        state["linear"] = torch.zeros_like(p)
        if group["hidden"]:
            rows, d = as_matrix(p).shape
            generator = torch.Generator().manual_seed(group["seed"] * 1_000_003 + index)
            w2 = torch.randn(group["hidden"], d, generator=generator, dtype=torch.float64) / d**0.5
            state["mlp_out"] = p.new_zeros(d, group["hidden"])
            state["mlp_in"] = w2.to(device=p.device, dtype=p.dtype)
            state["row_mean_square"] = p.new_zeros(rows, 1)
        return state

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        index = 0
        for group in self.param_groups:
            for p in group["params"]:
                index += 1
                if p.grad is None:
                    continue
                state = self.state[p] or self._init_state(p, group, index)
                memory_out = self._memory_step(state, as_matrix(p.grad), group).reshape(p.shape)
                if group["weight_decay"]:
                    p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(memory_out, alpha=group["lr"])
        return loss

    @staticmethod
    def _memory_step(state: dict[str, Any], grad: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        """One inner GD step of the memory on ``1/2 ||m(u) + u||^2``; returns ``m_{i+1}(u)`` as ``[rows, d]``."""
        retention, inner_lr = group["retention"], group["inner_lr"]
        state["step"] += 1
        linear = as_matrix(state["linear"])
        if not group["hidden"]:
            linear.mul_(retention).sub_((linear + grad).mul_(inner_lr))
            return linear.clone()
        w1, w2, mean_square = state["mlp_out"], state["mlp_in"], state["row_mean_square"]
        mean_square.lerp_(grad.pow(2).mean(dim=1, keepdim=True), inner_lr)
        scale = (mean_square / (1 - (1 - inner_lr) ** state["step"])).sqrt()
        scale = torch.where(scale > 0, scale, 1.0)
        active = (grad != 0).any(dim=1, keepdim=True)
        rows = active.sum().clamp(min=1)
        keys = grad / scale
        with torch.enable_grad():
            w1_, w2_ = w1.detach().requires_grad_(True), w2.detach().requires_grad_(True)
            readout = mlp_readout(keys, scale, w1_, w2_)
            residual = linear + readout + grad
            normalised = 0.5 * (residual / scale * active).pow(2).sum() / rows
            grad_w1, grad_w2 = torch.autograd.grad(normalised, [w1_, w2_])
        lr = group["mlp_lr"]
        hidden_norm = F.silu(keys @ w2.T).pow(2).sum() / rows
        key_norm = keys.pow(2).sum() / rows
        w1_step = lr / (1 + lr * hidden_norm)
        w2_step = lr / (1 + lr * 1.21 * key_norm * w1.pow(2).sum())
        linear.mul_(retention).sub_(residual.detach().mul_(inner_lr))
        w1.mul_(retention).sub_(grad_w1 * w1_step)
        w2.mul_(retention).sub_(grad_w2 * w2_step)
        return linear + mlp_readout(keys, scale, w1, w2)

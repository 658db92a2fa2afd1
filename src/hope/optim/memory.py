"""Optimizers and sequence mixers as associative memories: each update computed two ways.

Every pair below is one claim of the paper, written so that a test can check it to float64 precision:
the left-hand function solves the memory's own objective generically (autograd gradient, or the exact
minimiser of a quadratic by one Newton step); the right-hand function is the familiar closed form.

=========================================  ==============================================
memory view (generic solver)               closed form
=========================================  ==============================================
proximal argmin of NL Eq. 13               ``momentum_buffer`` (NL Eqs. 10-11, 33)
argmin of the element-wise NL Eq. 101      ``optimal_elementwise_memory`` (NL Eq. 102):
                                           Adam with P = sqrt(V) (Eq. 105), momentum with P = H (Eq. 104)
one GD step per token on ``-<M k, v>``     ``linear_attention`` (NL Eq. 64)
one GD step per token on ``||M k - v||^2`` ``delta_rule`` (NL Eq. 65)
one GD step (size 1/4) on NL Eqs. 43-44    cubic Newton-Schulz step (``hope.ops.newton_schulz``)
=========================================  ==============================================

The generic solvers build full Hessians: they are for the small problems of the tests and docs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Objective = Callable[[torch.Tensor], torch.Tensor]


def gd_step(state: torch.Tensor, objective: Objective, lr: float) -> torch.Tensor:
    """One gradient-descent step ``state - lr * d objective / d state`` (gradient by autograd)."""
    state = state.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(objective(state), state)
    return (state - lr * grad).detach()


def quadratic_argmin(objective: Objective, start: torch.Tensor) -> torch.Tensor:
    """The minimiser of a strictly convex quadratic ``objective``: one Newton step from ``start``.

    Exact for quadratics (gradient and Hessian by autograd); the Hessian is dense, so keep ``start`` small.
    """
    flat = start.detach().reshape(-1)

    def flat_objective(x: torch.Tensor) -> torch.Tensor:
        return objective(x.reshape(start.shape))

    with torch.enable_grad():
        x = flat.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(flat_objective(x), x)
        hessian = torch.autograd.functional.hessian(flat_objective, flat)
    return (flat - torch.linalg.solve(hessian, grad)).reshape(start.shape)


# --- Momentum (NL Eqs. 10-13 and 33) ---------------------------------------------------------------

def momentum_objective(m: torch.Tensor, previous: torch.Tensor, grad: torch.Tensor, lr: float,
                       l2: float = 0.0) -> torch.Tensor:
    """NL Eq. 13 (with the l2 penalty that Eq. 33's decay adds): ``-<m, grad> + ||m - m_t||^2 / (2 lr) + l2/2 ||m||^2``."""
    return -(m * grad).sum() + (m - previous).pow(2).sum() / (2 * lr) + 0.5 * l2 * m.pow(2).sum()


def momentum_buffer(previous: torch.Tensor, grad: torch.Tensor, lr: float, decay: float = 1.0) -> torch.Tensor:
    """The momentum buffer ``m_{t+1} = decay * m_t + lr * grad`` (NL Eqs. 11, 33); the weights move by ``-m_{t+1}``.

    The argmin of ``momentum_objective`` is this buffer with ``decay = 1 / (1 + lr l2)`` and step ``lr * decay``.
    """
    return decay * previous + lr * grad


# --- Adam as the optimal element-wise memory (NL Eqs. 100-105) ------------------------------------

def elementwise_memory_objective(m: torch.Tensor, grads: torch.Tensor, target: torch.Tensor,
                                 first_weights: torch.Tensor, second_weights: torch.Tensor,
                                 l2: torch.Tensor | float = 0.0) -> torch.Tensor:
    """NL Eq. 101, ``sum_i ||m * g_i - P||^2 + lambda ||m||^2``, expanded with separate weights.

    ``grads``: ``[steps, *shape]``. Expanding the square gives a quadratic term ``sum_i s_i (m g_i)^2``
    and a cross term ``-2 sum_i f_i <m g_i, P>``; the paper's accumulators weight them by ``beta2`` and
    ``beta1`` (Eq. 102), so they carry their own weights ``second_weights = s`` and ``first_weights = f``
    (Adam's EMA weights, for instance). ``l2`` may be element-wise.
    """
    shape = (-1,) + (1,) * (grads.ndim - 1)
    quadratic = (second_weights.reshape(shape) * (m * grads).pow(2)).sum()
    cross = (first_weights.reshape(shape) * m * grads * target).sum()
    return quadratic - 2 * cross + (l2 * m.pow(2)).sum()


def optimal_elementwise_memory(first_moment: torch.Tensor, second_moment: torch.Tensor, target: torch.Tensor,
                               l2: torch.Tensor | float = 0.0) -> torch.Tensor:
    """NL Eq. 102: the minimiser ``m* = P * M / (H + lambda)`` of ``elementwise_memory_objective``,
    with ``M = sum_i f_i g_i`` and ``H = sum_i s_i g_i^2``.

    - ``P = sqrt(H)``, ``lambda = eps sqrt(H)``: ``m* = M / (sqrt(H) + eps)``, Adam's step direction (Eq. 105).
    - ``P = H``, ``lambda = 0``: ``m* = M``, the momentum buffer (Eq. 104).
    """
    return target * first_moment / (second_moment + l2)


def adam_moment_weights(steps: int, beta: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The weight of gradient ``i = 1..steps`` in Adam's bias-corrected EMA at step ``steps``."""
    ages = torch.arange(steps - 1, -1, -1, dtype=dtype)
    return (1 - beta) * beta**ages / (1 - beta**steps)


# --- Sequence mixers as memories of tokens (NL Eqs. 64-65) ----------------------------------------

def dot_objective(memory: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The Hebbian inner objective ``-<M k, v>`` of linear attention."""
    return -(memory @ key * value).sum()


def l2_objective(memory: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The regression inner objective ``1/2 ||M k - v||^2`` of the delta rule."""
    return 0.5 * (memory @ key - value).pow(2).sum()


def memory_scan(objective: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, lr: float) -> torch.Tensor:
    """Per token ``t``: ``M_t = M_{t-1} - lr grad objective(M_{t-1}; k_t, v_t)`` from ``M_0 = 0``, then read ``o_t = M_t q_t``.

    ``queries``, ``keys``: ``[T, d_k]``; ``values``: ``[T, d_v]``; returns ``[T, d_v]``.
    """
    memory = keys.new_zeros(values.shape[1], keys.shape[1])
    outputs = []
    for q, k, v in zip(queries, keys, values):
        memory = gd_step(memory, lambda m, k=k, v=v: objective(m, k, v), lr)
        outputs.append(memory @ q)
    return torch.stack(outputs)


def linear_attention(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Causal linear attention in its parallel form, ``o_t = sum_{i <= t} (q_t . k_i) v_i`` (NL Eq. 64, alpha = eta = 1)."""
    scores = (queries @ keys.T).tril()
    return scores @ values


def delta_rule(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, beta: float) -> torch.Tensor:
    """The delta rule ``S_t = S_{t-1} (I - beta k_t k_t^T) + beta v_t k_t^T``, ``o_t = S_t q_t`` (NL Eq. 65)."""
    state = keys.new_zeros(values.shape[1], keys.shape[1])
    eye = torch.eye(keys.shape[1], dtype=keys.dtype)
    outputs = []
    for q, k, v in zip(queries, keys, values):
        state = state @ (eye - beta * torch.outer(k, k)) + beta * torch.outer(v, k)
        outputs.append(state @ q)
    return torch.stack(outputs)


# --- Newton-Schulz as a memory (NL Eqs. 43-44) ----------------------------------------------------

def orthogonality_objective(o: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """NL Eq. 44's objective: ``1/2 ||O - g||^2 + 1/2 ||O^T O - I||_F^2`` (proximity to ``g`` plus Eq. 43)."""
    eye = torch.eye(o.shape[1], dtype=o.dtype)
    return 0.5 * (o - grad).pow(2).sum() + 0.5 * (o.T @ o - eye).pow(2).sum()


def orthogonality_gd_step(grad: torch.Tensor, step_size: float = 0.25) -> torch.Tensor:
    """One GD step on ``orthogonality_objective`` from ``O_0 = g`` (NL Eq. 44):
    ``O_1 = g - zeta * 2 g (g^T g - I)``, i.e. ``3/2 g - 1/2 g g^T g`` for ``zeta = 1/4``."""
    return gd_step(grad, lambda o: orthogonality_objective(o, grad), step_size)

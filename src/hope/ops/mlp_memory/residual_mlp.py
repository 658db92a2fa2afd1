"""The residual MLP memory ``M(x) = x + W1 silu(W2 x)`` (NL Eq. 89) and the per-layer view of one
gradient step on it (NL Eqs. 29-31): the input ``u`` and back-propagated error ``delta`` of each layer.

For a key ``k`` and a target ``v_hat`` (all per batch element and head; ``W2: [E, D]``, ``W1: [D, E]``):

    z = W2 k,   h = silu(z),   y = M(k) = k + W1 h,
    g = dL/dy = -v_hat            (objective "dot": L = -<M(k), v_hat>)
              = y - v_hat         (objective "l2":  L = 0.5 ||M(k) - v_hat||^2)

    layer W1:  u1 = h,  delta1 = g                              (dL/dW1 = delta1 u1^T)
    layer W2:  u2 = k,  delta2 = silu'(z) * (W1^T g)            (dL/dW2 = delta2 u2^T)

with ``silu'(z) = s (1 + z (1 - s)) = s (1 + z - h)``, ``s = sigmoid(z)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

OBJECTIVES = ("dot", "l2")


def residual_mlp(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """The read ``M(x) = x + W1 silu(W2 x)`` (NL Eq. 89) of row vectors ``x: [..., N, D]`` with
    ``w1: [..., D, E]``, ``w2: [..., E, D]`` (leading axes broadcast). Every memory built on this MLP reads
    through it; the per-token references (``naive``) write it out on purpose."""
    return x + F.silu(x @ w2.mT) @ w1.mT


def read_and_errors(
    w1: torch.Tensor, w2: torch.Tensor, x: torch.Tensor, n_reads: int, v_hat: torch.Tensor, objective: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pass of the memory over queries and keys stacked on the token axis.

    ``w1: [..., D, E]``, ``w2: [..., E, D]``, ``x: [..., n_reads + N, D]`` (the first ``n_reads`` rows
    are queries, the other ``N`` rows keys), ``v_hat: [..., N, D]``. Returns the reads
    ``M(q): [..., n_reads, D]``, the hidden pre-activations of every row ``z = x W2^T: [..., n_reads + N, E]``,
    the W1 inputs ``h: [..., N, E]``, their images ``W1 h: [..., N, D]``,
    the W1 errors ``g: [..., N, D]`` and the W2 errors ``delta2: [..., N, E]`` (the W2 inputs are the
    keys themselves).
    """
    z = x @ w2.mT
    hidden = F.silu(z)
    residual = hidden @ w1.mT
    z_k, h, w1_h = z[..., n_reads:, :], hidden[..., n_reads:, :], residual[..., n_reads:, :]
    g = x[..., n_reads:, :] + w1_h - v_hat if objective == "l2" else -v_hat
    delta2 = (g @ w1) * (torch.sigmoid(z_k) * (1.0 + z_k - h))
    return x[..., :n_reads, :] + residual[..., :n_reads, :], z, h, w1_h, g, delta2


SILU_MAX_SLOPE = 1.0998393201285286
"""``max_z silu'(z)`` (at ``z ~ 2.3994``): bounds the gain of the hidden non-linearity."""


def proximal_eta(eta: torch.Tensor, u: torch.Tensor, gain: torch.Tensor | float = 0.0) -> torch.Tensor:
    """``eta' = eta / (1 + eta (1 + gain) ||u||^2)``; with ``gain = 0`` the exact solution of the proximal
    step NL Eq. 56.

    ``eta: [...]``, ``u: [..., Du]``, ``gain``: a float or a tensor broadcastable to ``eta``. With it
    ``I - eta' (1 + gain) u u^T`` has eigenvalues in ``(0, 1]``.
    """
    return eta / (1.0 + eta * (1.0 + gain) * u.square().sum(-1))


def curvature_gains(w1: torch.Tensor, objective: str) -> tuple[torch.Tensor | float, torch.Tensor | float]:
    """Bounds on the curvature that the inner objective adds along each layer's output, per unit input norm:
    ``(gain1, gain2)`` for ``W1`` and ``W2`` at the weights ``w1: [..., D, E]`` that compute the errors.

    ``"l2"``: the error of ``W1`` is its output's residual (gain 1); the error of ``W2`` reaches the output
    through ``J = W1 diag(silu'(z))``, ``||J||^2 <= SILU_MAX_SLOPE^2 ||W1||_F^2`` (returned as ``[...]``).
    ``"dot"``: the loss is linear in the output (gains 0).
    """
    if objective != "l2":
        return 0.0, 0.0
    return 1.0, SILU_MAX_SLOPE ** 2 * w1.square().sum((-2, -1))

"""The Titans rule on the residual MLP memory (Titans, arXiv 2501.00663: section 3.1, "forgetting
mechanism", and section 3.2, parallel training): gradient descent with momentum and decay, chunk-wise.

Per batch element and head, with ``W(c)`` the weights at the start of the chunk that holds token
``t`` (every gradient and every read in a chunk uses them), for each layer ``l`` of
``M(x) = x + W1 silu(W2 x)``:

    o_t   = M(q_t; W(c))
    S_l  <- beta_t S_l - theta_t grad_l(W(c); k_t, v_t)          (momentum, "surprise")
    W_l  <- (1 - forget_t) W_l + S_l                             (decay)

with ``grad_l = delta_l u_l^T`` the gradient of ``0.5 ||M(k_t) - v_t||^2`` (the Titans loss
``||M(k) - v||^2`` with its factor 2 folded into ``theta``); ``(u, delta)`` per layer are listed in
:mod:`hope.ops.mlp_memory.residual_mlp`. ``chunk_size = 1`` is the exact per-token rule.

``read="running"`` reads token ``t`` at the weights after its own update, ``o_t = M(q_t; W_t)`` (the Titans
paper's ``y_t = M*_t(q_t)``; the gradients still come from the chunk start, as in its parallel training);
``read="start"`` reads it at ``W(c)``. With ``chunk_size = 1`` the running read is the per-token rule as
printed.

``max_grad_norm`` (``None``: off) clips each token's gradient of each layer to that Frobenius norm,
``grad_l <- grad_l * min(1, max_grad_norm / (||delta_l|| ||u_l||))`` (a rank-one gradient's norm is the
product of its factors' norms), as titans-pytorch's ``max_grad_norm`` does. The Titans rule has no
step that adapts to the memory's curvature; the curvature of the W2 step grows with ``||W1||^2`` and
that of W1 with ``||silu(W2 k)||^2``, so a fixed ``theta`` that is stable at initialisation overshoots
once the weights grow and the memory overflows within a few hundred tokens (docs/results.md). Clipped
gradients bound every step, so the decay keeps the weights bounded.

Chunk form. Both recurrences are first-order and linear with scalar gates, and the gradients of a
chunk are all known once the chunk starts, so the scan over a chunk has a closed form. With
``F[i, j] = (1 - forget_{j+1}) ... (1 - forget_i)`` and ``Bm[i, j] = beta_{j+1} ... beta_i``
(decay products, index 0 = chunk start) and ``L`` the chunk's length:

    S_end = Bm[L, 0] S_start - sum_j Bm[L, j] theta_j delta_j u_j^T
    W_end = F[L, 0] W_start + c_0 S_start - sum_j c_j theta_j delta_j u_j^T,   c = F[L, 1:] Bm[1:, :]

(``c_j = sum_{t >= j} F[L, t] Bm[t, j]``: the momentum written at ``j`` reaches the weights at every
later token of the chunk). The coefficients of all chunks are computed at once; each chunk then
costs one batched MLP pass and two matmuls per layer.

The running read is the same sum stopped at ``t``: ``W_t = F[t, 0] W_start + c_{t,0} S_start -
sum_{j <= t} c_{t,j} theta_j delta_j u_j^T`` with ``c_{t,j} = sum_{j <= r <= t} F[t, r] Bm[r, j]``, so each
layer's image of a query is a masked linear attention over the chunk (the dual form of TTT / Titans):

    W2_t q_t = F[t, 0] W2 q_t + c_{t,0} S2 q_t - sum_{j <= t} c_{t,j} theta_j (k_j . q_t) delta2_j
    W1_t a_t = F[t, 0] W1 a_t + c_{t,0} S1 a_t - sum_{j <= t} c_{t,j} theta_j (h_j . a_t) g_j,   a_t = silu(W2_t q_t)
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from hope.ops.dgd.chunk import decay_products
from hope.ops.mlp_memory.chunk import from_chunks, to_chunks
from hope.ops.mlp_memory.residual_mlp import read_and_errors, residual_mlp

Tensor = torch.Tensor
Pair = tuple[torch.Tensor, torch.Tensor]

def clip_factor(delta: Tensor, u: Tensor, max_grad_norm: float | None) -> Tensor | float:
    """``min(1, max_grad_norm / (||delta|| ||u||))`` over the last axis, kept as a trailing axis of size 1
    (``1.0`` if ``max_grad_norm`` is ``None``).

    Computed as ``max_grad_norm / max(norm, max_grad_norm)``: the divisor never falls below
    ``max_grad_norm``, so the derivative of the division stays finite. Dividing by a norm floored at a tiny
    constant instead made that derivative ``-1 / norm^2`` overflow float32 (to ``inf``, times the zero
    derivative of the saturated ``min``: NaN) once a token's gradient fell below about ``5e-20``, which a
    saturated memory (``silu'(W2 k) ~ 0``) reaches on recall data (docs/results.md, "Titans on recall data:
    where the memory overflowed")."""
    if max_grad_norm is None:
        return 1.0
    norm = delta.norm(dim=-1, keepdim=True) * u.norm(dim=-1, keepdim=True)
    return max_grad_norm / norm.clamp_min(max_grad_norm)


class TitansMemoryState(NamedTuple):
    """Everything a Titans memory carries between tokens: running ``weights (W1, W2)``, ``momentum
    (S1, S2)`` (same shapes), the weights at the start of the current chunk and the position in it."""

    weights: Pair
    momentum: Pair
    chunk_start: Pair
    position: int

    @classmethod
    def start(cls, w1: Tensor, w2: Tensor, momentum: Pair | None = None) -> TitansMemoryState:
        """The state at a chunk boundary (zero momentum unless given)."""
        if momentum is None:
            momentum = (torch.zeros_like(w1), torch.zeros_like(w2))
        return cls((w1, w2), momentum, (w1, w2), 0)


def titans_naive(
    q: Tensor, k: Tensor, v: Tensor, theta: Tensor, beta: Tensor, forget: Tensor,
    state: TitansMemoryState, chunk_size: int, max_grad_norm: float | None = None, read: str = "start",
) -> tuple[Tensor, tuple[Pair, Pair]]:
    """Per-token reference written from the formulas (no shared helper). ``q, k, v: [B, T, H, D]``,
    gates ``[B, T, H]``, ``state`` at a chunk boundary. Returns ``o: [B, T, H, D]`` and the final
    ``((W1, W2), (S1, S2))``."""
    (w1, w2), (s1, s2) = state.weights, state.momentum
    outputs = []
    for t in range(q.shape[1]):
        if t % chunk_size == 0:
            w1_c, w2_c = w1, w2
        q_t, k_t, v_t = q[:, t, :, :, None], k[:, t, :, :, None], v[:, t, :, :, None]
        if read == "start":
            outputs.append((q_t + w1_c @ F.silu(w2_c @ q_t)).squeeze(-1))
        z = w2_c @ k_t
        h = F.silu(z)
        g = k_t + w1_c @ h - v_t
        s = torch.sigmoid(z)
        delta2 = s * (1.0 + z * (1.0 - s)) * (w1_c.mT @ g)
        b_t, th_t = beta[:, t, :, None, None], theta[:, t, :, None, None]
        keep_t = 1.0 - forget[:, t, :, None, None]
        grad1, grad2 = g @ h.mT, delta2 @ k_t.mT
        if max_grad_norm is not None:
            norms = [grad.square().sum((-2, -1), keepdim=True).sqrt() for grad in (grad1, grad2)]
            grad1, grad2 = (grad * (max_grad_norm / n.clamp_min(max_grad_norm))
                            for grad, n in zip((grad1, grad2), norms))
        s1 = b_t * s1 - th_t * grad1
        s2 = b_t * s2 - th_t * grad2
        w1, w2 = keep_t * w1 + s1, keep_t * w2 + s2
        if read == "running":
            outputs.append((q_t + w1 @ F.silu(w2 @ q_t)).squeeze(-1))
    return torch.stack(outputs, dim=1), ((w1, w2), (s1, s2))


def titans_step(
    state: TitansMemoryState, q: Tensor, k: Tensor, v: Tensor, theta: Tensor, beta: Tensor, forget: Tensor,
    chunk_size: int, max_grad_norm: float | None = None, read: str = "start",
) -> tuple[Tensor, TitansMemoryState]:
    """One token, no checks: ``q, k, v: [B, H, D]``, gates ``[B, H]``. Returns ``o: [B, H, D]`` and
    the next state."""
    (w1, w2), (s1, s2), chunk_start, position = state
    if position == 0:
        chunk_start = (w1, w2)
    x = torch.stack([q, k], dim=-2) if read == "start" else k.unsqueeze(-2)
    o, _, h, _, g, delta2 = read_and_errors(*chunk_start, x, x.shape[-2] - 1, v.unsqueeze(-2), "l2")
    g, delta2 = g * clip_factor(g, h, max_grad_norm), delta2 * clip_factor(delta2, k.unsqueeze(-2), max_grad_norm)
    b_t, th_t, keep_t = beta[..., None, None], theta[..., None, None], 1.0 - forget[..., None, None]
    s1 = b_t * s1 - th_t * (g.mT @ h)
    s2 = b_t * s2 - th_t * (delta2.mT @ k.unsqueeze(-2))
    weights = (keep_t * w1 + s1, keep_t * w2 + s2)
    if read == "running":
        o = residual_mlp(q.unsqueeze(-2), *weights)
    return o.squeeze(-2), TitansMemoryState(weights, (s1, s2), chunk_start, (position + 1) % chunk_size)


def titans_recurrent(
    q: Tensor, k: Tensor, v: Tensor, theta: Tensor, beta: Tensor, forget: Tensor,
    state: TitansMemoryState, chunk_size: int, max_grad_norm: float | None = None, read: str = "start",
) -> tuple[Tensor, TitansMemoryState]:
    """Apply :func:`titans_step` to each token (``state`` at any position). Returns
    ``o: [B, T, H, D]`` and the state after the last token."""
    outputs = []
    for t in range(q.shape[1]):
        o_t, state = titans_step(state, q[:, t], k[:, t], v[:, t], theta[:, t], beta[:, t], forget[:, t], chunk_size,
                                 max_grad_norm, read)
        outputs.append(o_t)
    return torch.stack(outputs, dim=1), state


def titans_chunk(
    q: Tensor, k: Tensor, v: Tensor, theta: Tensor, beta: Tensor, forget: Tensor,
    state: TitansMemoryState, chunk_size: int, max_grad_norm: float | None = None, read: str = "start",
) -> tuple[Tensor, tuple[Pair, Pair]]:
    """Chunk form (closed-form scan per chunk); same arguments as :func:`titans_naive`. Returns ``o``
    and the final weights and momentum as ``((W1, W2), (S1, S2))``."""
    length = q.shape[1]
    c = min(chunk_size, length)
    q, k, v = (to_chunks(x, c, 0.0) for x in (q, k, v))
    theta, beta, forget = to_chunks(theta, c, 0.0), to_chunks(beta, c, 1.0), to_chunks(forget, c, 0.0)
    keep, carry = decay_products(1.0 - forget), decay_products(beta)
    last = length - (q.shape[2] - 1) * c
    keep_end = torch.cat([keep[:, :, :-1, c], keep[:, :, -1:, last]], dim=2)
    carry_end = torch.cat([carry[:, :, :-1, c], carry[:, :, -1:, last]], dim=2)
    through = (keep_end[..., None, 1:] @ carry[..., 1:, :]).squeeze(-2)
    coefficients = zip(
        keep_end[..., 0, None, None].unbind(2), through[..., 0, None, None].unbind(2),
        carry_end[..., 0, None, None].unbind(2), (through[..., 1:] * theta)[..., None].unbind(2),
        (carry_end[..., 1:] * theta)[..., None].unbind(2), strict=True,
    )
    running = _running_coefficients(keep, carry, theta) if read == "running" else [None] * q.shape[2]
    (w1, w2), (s1, s2) = state.weights, state.momentum
    reads = []
    inputs = torch.cat([q, k], dim=-2) if read == "start" else k
    for x_n, q_n, k_n, v_n, (keep_w, s_to_w, keep_s, to_w, to_s), running_n in zip(
        inputs.unbind(2), q.unbind(2), k.unbind(2), v.unbind(2), coefficients, running, strict=True
    ):
        o_n, _, h, _, g, delta2 = read_and_errors(w1, w2, x_n, x_n.shape[-2] - c, v_n, "l2")
        g, delta2 = g * clip_factor(g, h, max_grad_norm), delta2 * clip_factor(delta2, k_n, max_grad_norm)
        if read == "running":
            o_n = _running_read(q_n, k_n, h, g, delta2, (w1, w2), (s1, s2), *running_n)
        reads.append(o_n)
        w1, s1 = keep_w * w1 + s_to_w * s1 - (to_w * g).mT @ h, keep_s * s1 - (to_s * g).mT @ h
        w2, s2 = keep_w * w2 + s_to_w * s2 - (to_w * delta2).mT @ k_n, keep_s * s2 - (to_s * delta2).mT @ k_n
    return from_chunks(reads, length), ((w1, w2), (s1, s2))


def _running_coefficients(keep: Tensor, carry: Tensor, theta: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per chunk, the coefficients of the running read (module docstring): ``F[t, 0]`` and ``c_{t,0}`` as
    ``[B, H, C, 1]`` and ``c_{t,j} theta_j`` as ``[B, H, C, C]`` (zero for ``j > t``)."""
    through = keep[..., 1:, 1:] @ carry[..., 1:, :]
    return list(zip(keep[..., 1:, 0, None].unbind(2), through[..., 0, None].unbind(2),
                    (through[..., 1:] * theta[..., None, :]).unbind(2), strict=True))


def _running_read(q: Tensor, k: Tensor, h: Tensor, g: Tensor, delta2: Tensor, weights: Pair, momentum: Pair,
                  keep: Tensor, through: Tensor, written: Tensor) -> Tensor:
    """``M(q_t; W_t)`` for every token of a chunk: ``q, k: [B, H, C, D]``, the chunk's W1 inputs ``h`` and
    (clipped) errors ``g, delta2`` at the chunk-start ``weights`` and ``momentum``."""
    (w1, w2), (s1, s2) = weights, momentum
    z = keep * (q @ w2.mT) + through * (q @ s2.mT) - (written * (q @ k.mT)) @ delta2
    a = F.silu(z)
    return q + keep * (a @ w1.mT) + through * (a @ s1.mT) - (written * (a @ h.mT)) @ g

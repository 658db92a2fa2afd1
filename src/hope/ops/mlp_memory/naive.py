"""Per-token reference for the deep (MLP) DGD memory: the ground truth for the chunk and recurrent forms.

Written from the formulas alone (it uses neither ``hope.ops.dgd`` nor the shared helpers of this
package, ``residual_mlp`` included: a reference shares no code with what it checks). Per batch element and head, for ``t = 0 .. T-1``, with ``c(t) = C * floor(t / C)``
the start of the chunk that holds token ``t`` and ``W(c)`` the weights before that chunk:

    o_t = q_t + W1(c) silu(W2(c) q_t)                                   (read, NL Eq. 90)
    z = W2(c) k_t,  h = silu(z),  g = -v_hat_t ("dot") or k_t + W1(c) h - v_hat_t ("l2")
    (u1, delta1) = (h, g),   (u2, delta2) = (k_t, silu'(z) * (W1(c)^T g))
    W_l <- W_l (alpha_t I - eta'_l u_l u_l^T) - eta'_l delta_l u_l^T      (DGD, NL Eqs. 57, 88)
    W_l <- alpha_t W_l - eta'_l delta_l u_l^T                             (dgd=False: GD + retention)

with ``eta'_l = eta_t / (1 + eta_t ||u_l||^2)`` if ``proximal`` (NL Eq. 56) else ``eta_t``. With
``curvature`` (objective "l2") the proximal steps also count the objective's curvature along each layer's
output: ``eta'_1 = eta_t / (1 + 2 eta_t ||h||^2)`` and
``eta'_2 = eta_t / (1 + eta_t (1 + 1.0998393201285286^2 ||W1(c)||_F^2) ||k_t||^2)``
(``1.0998...`` is the largest slope of silu); with "dot" it changes nothing. With ``read="previous"`` the read
comes before the token's update, from the running weights ``W_{t-1}`` left by the tokens before it (NL Eq. 94,
``o_t = M_{t-1}(q_t)``): ``o_t = q_t + W1_{t-1} silu(W2_{t-1} q_t)``; with ``read="running"`` it comes after the
token's update: ``o_t = q_t + W1_t silu(W2_t q_t)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _dgd_layer(
    w: torch.Tensor, u: torch.Tensor, delta: torch.Tensor, alpha: torch.Tensor, eta: torch.Tensor,
    proximal: bool, dgd: bool, gain: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """One step on one layer: ``w: [B, H, Dout, Din]``, ``u: [B, H, Din]``, ``delta: [B, H, Dout]``,
    ``alpha, eta: [B, H]``; ``gain`` (``[B, H]`` or a float) is the curvature added to the proximal step."""
    if proximal:
        eta = eta / (1.0 + eta * (1.0 + gain) * (u * u).sum(-1))
    alpha, eta = alpha[..., None, None], eta[..., None, None]
    step = eta * delta.unsqueeze(-1) * u.unsqueeze(-2)
    if dgd:
        erase = eta * (w @ u.unsqueeze(-1)) * u.unsqueeze(-2)
        return alpha * w - erase - step
    return alpha * w - step


def mlp_memory_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v_hat: torch.Tensor,
    alpha: torch.Tensor,
    eta: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    objective: str,
    proximal: bool,
    dgd: bool,
    chunk_size: int,
    curvature: bool,
    read: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token-by-token loop. ``q, k, v_hat: [B, T, H, D]``, ``alpha, eta: [B, T, H]``,
    ``w1: [B, H, D, E]``, ``w2: [B, H, E, D]``. Returns ``o: [B, T, H, D]`` and the final W1, W2."""
    outputs = []
    for t in range(q.shape[1]):
        if t % chunk_size == 0:
            w1_c, w2_c = w1, w2
        q_t, k_t, v_t = q[:, t, :, :, None], k[:, t, :, :, None], v_hat[:, t, :, :, None]
        if read == "start":
            outputs.append((q_t + w1_c @ F.silu(w2_c @ q_t)).squeeze(-1))
        elif read == "previous":
            outputs.append((q_t + w1 @ F.silu(w2 @ q_t)).squeeze(-1))
        z = w2_c @ k_t
        h = F.silu(z)
        g = k_t + w1_c @ h - v_t if objective == "l2" else -v_t
        s = torch.sigmoid(z)
        delta2 = s * (1.0 + z * (1.0 - s)) * (w1_c.mT @ g)
        gain1, gain2 = 0.0, 0.0
        if curvature and objective == "l2":
            gain1, gain2 = 1.0, 1.0998393201285286 ** 2 * (w1_c * w1_c).sum((-2, -1))
        w1 = _dgd_layer(w1, h.squeeze(-1), g.squeeze(-1), alpha[:, t], eta[:, t], proximal, dgd, gain1)
        w2 = _dgd_layer(w2, k_t.squeeze(-1), delta2.squeeze(-1), alpha[:, t], eta[:, t], proximal, dgd, gain2)
        if read == "running":
            outputs.append((q_t + w1 @ F.silu(w2 @ q_t)).squeeze(-1))
    return torch.stack(outputs, dim=1), w1, w2

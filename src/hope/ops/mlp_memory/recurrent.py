"""Token-by-token form of the deep (MLP) DGD memory, for decoding (NL Eqs. 57, 88-91).

Chunk-wise training fixes what decoding must do: inside a chunk, reads, layer inputs and errors use
the weights from the chunk start, while each token's DGD step lands on the running weights. So the
decoding state is :class:`MLPMemoryState`: the running weights, the chunk-start weights and the
position inside the chunk. The read is ``M(q)`` at the chunk-start weights (``read="start"``) or at the running
weights before (``"previous"``) or after (``"running"``) the token's own step. Each layer's step is :func:`hope.ops.dgd.dgd_step` with keys ``u`` and
values ``-delta`` (and the proximal ``eta'``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from hope.ops.dgd import dgd_step
from hope.ops.mlp_memory.residual_mlp import curvature_gains, proximal_eta, read_and_errors, residual_mlp


class MLPMemoryState(NamedTuple):
    """Everything a deep memory carries between tokens.

    ``weights``: running ``(W1 [B, H, D, E], W2 [B, H, E, D])``; ``chunk_start``: the weights at the
    start of the current chunk (the ones that read and compute errors); ``position``: tokens folded
    since that start (``0 <= position < chunk_size``; 0 means the next token opens a chunk).
    """

    weights: tuple[torch.Tensor, torch.Tensor]
    chunk_start: tuple[torch.Tensor, torch.Tensor]
    position: int

    @classmethod
    def start(cls, w1: torch.Tensor, w2: torch.Tensor) -> MLPMemoryState:
        """The state at a chunk boundary with weights ``(w1, w2)``."""
        return cls((w1, w2), (w1, w2), 0)


def step(
    state: MLPMemoryState,
    q: torch.Tensor,
    k: torch.Tensor,
    v_hat: torch.Tensor,
    alpha: torch.Tensor,
    eta: torch.Tensor,
    objective: str,
    proximal: bool,
    dgd: bool,
    chunk_size: int,
    curvature: bool,
    read: str,
) -> tuple[torch.Tensor, MLPMemoryState]:
    """One token, no checks: ``q, k, v_hat: [B, H, D]``, ``alpha, eta: [B, H]``, all in the state
    dtype. Returns ``o: [B, H, D]`` and the next state."""
    (w1, w2), chunk_start, position = state
    if position == 0:
        chunk_start = (w1, w2)
    x = torch.stack([q, k], dim=-2)
    o, _, h, _, g, delta2 = read_and_errors(*chunk_start, x, 1, v_hat.unsqueeze(-2), objective)
    h, g, delta2 = h.squeeze(-2), g.squeeze(-2), delta2.squeeze(-2)
    if read == "previous":
        o = residual_mlp(q.unsqueeze(-2), w1, w2)
    rule = "dgd" if dgd else "gd"
    gain1, gain2 = curvature_gains(chunk_start[0], objective) if curvature else (0.0, 0.0)
    eta1 = proximal_eta(eta, h, gain1) if proximal else eta
    eta2 = proximal_eta(eta, k, gain2) if proximal else eta
    _, w1 = dgd_step(w1, h, h, -g, alpha, eta1, rule)
    _, w2 = dgd_step(w2, k, k, -delta2, alpha, eta2, rule)
    if read == "running":
        o = residual_mlp(q.unsqueeze(-2), w1, w2)
    return o.squeeze(-2), MLPMemoryState((w1, w2), chunk_start, (position + 1) % chunk_size)


def mlp_memory_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v_hat: torch.Tensor,
    alpha: torch.Tensor,
    eta: torch.Tensor,
    state: MLPMemoryState,
    objective: str,
    proximal: bool,
    dgd: bool,
    chunk_size: int,
    curvature: bool,
    read: str,
) -> tuple[torch.Tensor, MLPMemoryState]:
    """Apply :func:`step` to each of the ``T`` tokens (``q, k, v_hat: [B, T, H, D]``,
    ``alpha, eta: [B, T, H]``). Returns ``o: [B, T, H, D]`` and the state after the last token."""
    outputs = []
    for t in range(q.shape[1]):
        o_t, state = step(
            state, q[:, t], k[:, t], v_hat[:, t], alpha[:, t], eta[:, t], objective, proximal, dgd, chunk_size,
            curvature, read,
        )
        outputs.append(o_t)
    return torch.stack(outputs, dim=1), state

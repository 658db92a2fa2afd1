"""Gated DeltaNet mixer (Yang, Kautz & Hatamizadeh 2025; NL Eq. 65 with retention): the linear DGD memory.

Per head, with unit-norm keys and queries (paper_spec Sec. 1.9; DESIGN.md Sec. 3, "Linear DGD op")::

    S_t = S_{t-1} (alpha_t I - eta_t k_t k_t^T) + eta_t v_t k_t^T,        o_t = S_t q_t

``q, k, v`` are static projections of the input, each through a causal depthwise convolution of width 4 and
SiLU; ``alpha_t`` (retention) and ``eta_t`` (step) are data-dependent per-head scalars in (0, 1), so every
transition is contractive. The output is normalised per head, gated by ``silu(x W_g)`` and projected.
The sequence runs chunk-parallel through :func:`hope.ops.dgd.dgd` (exact, not an approximation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hope.layers.conv import ShortConv
from hope.ops.dgd import dgd


def l2_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x / ||x||`` over the last axis (``eps`` guards a zero vector)."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def spread_logits(n_heads: int, low: float, high: float) -> torch.Tensor:
    """Per-head gate biases whose sigmoids are spread evenly from ``low`` to ``high`` (one value per head)."""
    values = torch.linspace(low, high, n_heads) if n_heads > 1 else torch.tensor([math.sqrt(low * high)])
    return torch.logit(values)


class GatedOutput(nn.Module):
    """The output stage shared by the recurrent mixers (Titans Sec. 4.4): per-head RMSNorm of the memory reads,
    a SiLU gate computed from the layer input, then the output projection ``out``."""

    def __init__(self, d_model: int, n_heads: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(d_model // n_heads, eps=eps)
        self.gate = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, reads: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``reads: [B, T, H, D]`` (memory outputs), ``x: [B, T, H * D]`` (layer input) -> ``[B, T, H * D]``."""
        y = self.norm(reads.to(x.dtype)).flatten(2)
        return self.out(y * F.silu(self.gate(x)))


class GatedDeltaNet(nn.Module):
    """``module(x [B, T, D], state, position) -> (y, state)``.

    ``state = {"memory": [B, H, Dh, Dh], "conv": [B, W - 1, 3 D]}``: the matrix memory and the convolution tail
    of the ``q, k, v`` projections. A missing state is a fresh sequence (zero memory, zero tail).
    """

    def __init__(self, d_model: int, n_heads: int, *, conv_width: int = 4, chunk_size: int = 64,
                 retention_init: tuple[float, float] = (0.9, 0.999), norm_eps: float = 1e-6) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.n_heads, self.head_dim, self.chunk_size = n_heads, d_model // n_heads, chunk_size
        self.retention_init = retention_init
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.conv = ShortConv(3 * d_model, conv_width)
        self.gates = nn.Linear(d_model, 2 * n_heads)
        self.output = GatedOutput(d_model, n_heads, norm_eps)

    def init_weights(self) -> None:
        """Retention biases spread over ``retention_init`` across heads (short and long memories); step bias 0
        (``eta = 1/2``)."""
        with torch.no_grad():
            self.gates.bias[: self.n_heads].copy_(spread_logits(self.n_heads, *self.retention_init))
            self.gates.bias[self.n_heads:].zero_()

    def forward(self, x: torch.Tensor, state: dict | None = None, position: int = 0) -> tuple[torch.Tensor, dict]:
        if x.ndim != 3:
            raise ValueError(f"x must be [batch, time, d_model], got {list(x.shape)}")
        b, t, _ = x.shape
        state = state or {}
        qkv, conv_tail = self.conv(self.qkv(x), state.get("conv"))
        q, k, v = qkv.view(b, t, 3, self.n_heads, self.head_dim).unbind(2)
        retention, step = torch.sigmoid(self.gates(x)).split(self.n_heads, dim=-1)
        mode = "recurrent" if t == 1 else "chunk"
        reads, memory = dgd(l2_normalize(q), l2_normalize(k), v, retention, step, initial_state=state.get("memory"),
                            output_final_state=True, chunk_size=self.chunk_size, mode=mode)
        return self.output(reads, x), {"memory": memory, "conv": conv_tail}

"""Gated DeltaNet mixer (Yang, Kautz & Hatamizadeh 2025; NL Eq. 65 with retention): the linear DGD memory.

Per head, with unit-norm keys and queries (the linear DGD op, ``hope.ops.dgd``)::

    S_t = S_{t-1} (alpha_t I - eta_t k_t k_t^T) + eta_t v_t k_t^T,        o_t = S_t q_t

``q, k, v`` are static projections of the input, each through a causal depthwise convolution of width 4 and
SiLU; ``alpha_t`` (retention) and ``eta_t`` (step) are data-dependent per-head scalars in (0, 1), so every
transition is contractive. The output is normalised per head, gated by ``silu(x W_g)`` and projected.
The sequence runs chunk-parallel through :func:`hope.ops.dgd.dgd` (exact, not an approximation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from hope.layers.conv import ShortConv
from hope.layers.gating import GatedOutput, l2_normalize, spread_logits
from hope.layers.mlp import SwiGLU
from hope.models.config import ModelConfig, check_memory_fields, register
from hope.ops.dgd import dgd


@register("gated-deltanet")
@dataclass
class GatedDeltaNetConfig(ModelConfig):
    """Gated DeltaNet: the linear DGD memory (gated delta rule) as mixer, a static SwiGLU as channel memory."""

    SIZE_OVERRIDES: ClassVar[dict[str, dict[str, int]]] = {
        "tiny": {"mlp_hidden": 335}, "small": {"mlp_hidden": 888},
        "760m": {"mlp_hidden": 3580}, "1.3b": {"mlp_hidden": 4813},
    }
    """Narrower SwiGLUs that pay for the mixer's extra gate projection: parameters within 1% of Transformer++."""
    conv_width: int = 4
    """Width of the causal depthwise convolution after the q, k, v projections."""
    chunk_size: int = 64
    """Tokens per chunk of the chunk-parallel DGD op (speed only: the result does not depend on it)."""
    retention_init: tuple[float, float] = (0.9, 0.999)
    """Range over the heads of the initial retention ``alpha`` (sigmoid of the gate bias)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_memory_fields(self, ("conv_width", "chunk_size"), ())

    def build_mixer(self, layer: int) -> nn.Module:
        return GatedDeltaNet(self)

    def build_channel(self, layer: int) -> nn.Module:
        return SwiGLU(self.d_model, self.mlp_hidden)


class GatedDeltaNetState(NamedTuple):
    """The matrix memory ``S [B, H, Dh, Dh]`` (the state of :func:`hope.ops.dgd.dgd`) and the convolution tail
    ``[B, W - 1, 3 D]`` of the ``q, k, v`` projections."""

    memory: torch.Tensor
    conv: torch.Tensor

    def to_flat(self) -> dict[str, torch.Tensor]:
        """The tensors under their names in a state file (docs/paper_notes.md, "State")."""
        return {"memory": self.memory, "conv": self.conv}

    @classmethod
    def from_flat(cls, flat: dict[str, torch.Tensor]) -> GatedDeltaNetState:
        return cls(flat["memory"], flat["conv"])


class GatedDeltaNet(nn.Module):
    """``module(x [B, T, D], state: GatedDeltaNetState | None, position) -> (y, state)``; a missing state is a
    fresh sequence (zero memory, zero tail).
    """

    def __init__(self, config: GatedDeltaNetConfig) -> None:
        super().__init__()
        d_model = config.d_model
        self.n_heads, self.head_dim, self.chunk_size = config.n_heads, config.head_dim, config.chunk_size
        self.retention_init = config.retention_init
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.conv = ShortConv(3 * d_model, config.conv_width)
        self.gates = nn.Linear(d_model, 2 * self.n_heads)
        self.output = GatedOutput(d_model, self.n_heads, config.norm_eps)

    def init_weights(self) -> None:
        """Retention biases spread over ``retention_init`` across heads (short and long memories); step bias 0
        (``eta = 1/2``)."""
        with torch.no_grad():
            self.gates.bias[: self.n_heads].copy_(spread_logits(self.n_heads, *self.retention_init))
            self.gates.bias[self.n_heads:].zero_()

    def forward(self, x: torch.Tensor, state: GatedDeltaNetState | None = None,
                position: int = 0) -> tuple[torch.Tensor, GatedDeltaNetState]:
        if x.ndim != 3:
            raise ValueError(f"x must be [batch, time, d_model], got {list(x.shape)}")
        b, t, _ = x.shape
        memory, tail = (None, None) if state is None else state
        qkv, conv_tail = self.conv(self.qkv(x), tail)
        q, k, v = qkv.view(b, t, 3, self.n_heads, self.head_dim).unbind(2)
        retention, step = torch.sigmoid(self.gates(x)).split(self.n_heads, dim=-1)
        mode = "recurrent" if t == 1 else "chunk"
        reads, memory = dgd(l2_normalize(q), l2_normalize(k), v, retention, step, initial_state=memory,
                            output_final_state=True, chunk_size=self.chunk_size, mode=mode)
        return self.output(reads, x), GatedDeltaNetState(memory, conv_tail)

    def initial_state(self, batch: int, like: torch.Tensor) -> GatedDeltaNetState:
        """The state of a fresh sequence: zero memory (in the dtype ``hope.ops.dgd`` keeps it in), zero tail."""
        memory = like.new_zeros(batch, self.n_heads, self.head_dim, self.head_dim,
                                dtype=torch.promote_types(like.dtype, torch.float32))
        return GatedDeltaNetState(memory, like.new_zeros(batch, self.conv.width - 1, self.conv.channels))

    def state_from_flat(self, flat: dict[str, torch.Tensor], position: int) -> GatedDeltaNetState:
        """The state saved under ``GatedDeltaNetState.to_flat``'s names."""
        return GatedDeltaNetState.from_flat(flat)

"""Causal softmax attention with RoPE and a KV cache (the Transformer++ mixer).

Attention is the memory that updates per token non-parametrically (NL Sec. 5): its state is the
whole key/value cache, which is why it is the one mixer whose decoding memory grows with position.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


def rotary(x: torch.Tensor, position: int, theta: float) -> torch.Tensor:
    """Rotate pairs of channels of ``x: [B, H, T, D]`` by angles ``(position + t) * theta^(-2i/D)``."""
    _, _, t, d = x.shape
    inv_freq = theta ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    pos = torch.arange(position, position + t, device=x.device, dtype=torch.float32)
    angles = torch.outer(pos, inv_freq)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class AttentionState(NamedTuple):
    """The key/value cache ``[B, H, S, Dh]`` of the ``S`` tokens seen so far (keys already rotated)."""

    keys: torch.Tensor
    values: torch.Tensor

    def to_flat(self) -> dict[str, torch.Tensor]:
        """The tensors under their names in a state file (docs/paper_notes.md, "State")."""
        return {"k": self.keys, "v": self.values}

    @classmethod
    def from_flat(cls, flat: dict[str, torch.Tensor]) -> AttentionState:
        return cls(flat["k"], flat["v"])


class Attention(nn.Module):
    """Multi-head causal self-attention (``scaled_dot_product_attention``) with RoPE, shaped by a model config's
    ``d_model``, ``n_heads`` and ``rope_theta`` (``hope.models.transformer.TransformerConfig``).

    ``state`` is the :class:`AttentionState` of the tokens seen so far (``None``: a fresh sequence); the new
    tokens sit at positions ``position .. position + T - 1``.
    """

    def __init__(self, config) -> None:
        super().__init__()
        self.n_heads, self.head_dim, self.rope_theta = config.n_heads, config.head_dim, config.rope_theta
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.out = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(self, x: torch.Tensor, state: AttentionState | None = None,
                position: int = 0) -> tuple[torch.Tensor, AttentionState]:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = rotary(q, position, self.rope_theta), rotary(k, position, self.rope_theta)
        if state is not None:
            k = torch.cat([state.keys, k], dim=2)
            v = torch.cat([state.values, v], dim=2)
        past = k.shape[2] - t
        if past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        elif t == 1:
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).reshape(b, t, -1)
        return self.out(y), AttentionState(k, v)

    def initial_state(self, batch: int, like: torch.Tensor) -> None:
        """``None``: attention keeps no state across streamed windows; its cache restarts at every window start
        (``ModelState.restart``; docs/training.md, streaming)."""
        return None

    def state_from_flat(self, flat: dict[str, torch.Tensor], position: int) -> AttentionState:
        """The state saved under ``AttentionState.to_flat``'s names."""
        return AttentionState.from_flat(flat)

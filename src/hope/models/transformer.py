"""Transformer++ (the baseline of NL Sec. 9): RMSNorm, RoPE attention (``hope.layers.attention``), SwiGLU."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from hope.layers.attention import Attention
from hope.layers.mlp import SwiGLU
from hope.models.config import ModelConfig, register


@register("transformer")
@dataclass
class TransformerConfig(ModelConfig):
    """Transformer++: RMSNorm, RoPE attention (SDPA), SwiGLU."""

    rope_theta: float = 10000.0
    """Base of the rotary position angles."""

    def build_mixer(self, layer: int) -> nn.Module:
        return Attention(self)

    def build_channel(self, layer: int) -> nn.Module:
        return SwiGLU(self.d_model, self.mlp_hidden)

"""Normalisation layers."""

from torch import nn


def rms_norm(dim: int, eps: float) -> nn.RMSNorm:
    """RMSNorm with a learnable gain (Transformer++ and every hope block use it)."""
    return nn.RMSNorm(dim, eps=eps)

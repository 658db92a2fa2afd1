"""Parts shared by the recurrent mixers (Gated DeltaNet, Titans, self-modifying Titans): unit-norm features,
per-head gate biases and the gated output stage (Titans Sec. 4.4)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def l2_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x / ||x||`` over the last axis (``eps`` guards a zero vector)."""
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def spread_logits(n_heads: int, low: float, high: float) -> torch.Tensor:
    """Per-head gate biases whose sigmoids are spread evenly from ``low`` to ``high`` (one value per head).

    Built with ``arange``, not ``linspace``: transformers' ``from_pretrained`` swaps ``torch.linspace`` for a
    CPU-only wrapper while it runs, and a ``torch.device`` context first entered then keeps that wrapper, so a
    ``linspace`` under ``with torch.device("meta")`` would later land on the CPU."""
    if n_heads == 1:
        return torch.logit(torch.tensor([math.sqrt(low * high)]))
    values = low + (high - low) * torch.arange(n_heads, dtype=torch.float64) / (n_heads - 1)
    return torch.logit(values.float())


class GatedOutput(nn.Module):
    """The output stage shared by the recurrent mixers (Titans Sec. 4.4): per-head RMSNorm of the memory reads,
    a SiLU gate computed from the layer input, then the output projection ``out``."""

    def __init__(self, d_model: int, n_heads: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(d_model // n_heads, eps=eps)
        self.gate = nn.Linear(d_model, d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, reads: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``reads: [B, T, H, D]`` (memory outputs), ``x: [B, T, H * D]`` (layer input) -> ``[B, T, H * D]``."""
        y = self.norm(reads.to(x.dtype)).flatten(2)
        return self.out(y * F.silu(self.gate(x)))

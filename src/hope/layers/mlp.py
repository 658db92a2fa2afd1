"""Static channel memory: the SwiGLU MLP of Transformer++ (a CMS level of update frequency 0, NL Sec. 7.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SwiGLU(nn.Module):
    """``y = W_down(silu(W_gate x) * W_up x)``; its weights change only in pre-training."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor, state: dict | None = None, position: int = 0) -> tuple[torch.Tensor, dict]:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up), {}

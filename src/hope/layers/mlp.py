"""SwiGLU, the static channel memory of Transformer++ (a CMS level of update frequency 0, NL Sec. 7.1) and the
module of every CMS level (``hope.models.hope.cms``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def swiglu(x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """``down(silu(gate) * up)`` for ``x: [B, T, D]`` with shared ``[2H, D], [D, H]`` or per-sequence
    ``[B, 2H, D], [B, D, H]`` weights."""
    if gate_up.ndim == 2:
        gate, up = F.linear(x, gate_up).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, down)
    gate, up = torch.bmm(x, gate_up.transpose(1, 2)).chunk(2, dim=-1)
    return torch.bmm(F.silu(gate) * up, down.transpose(1, 2))


class SwiGLU(nn.Module):
    """``y = W_down(silu(W_gate x) * W_up x)``; its weights change only in pre-training (a CMS level's
    parameters are its meta-learned initial state)."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor, state: None = None, position: int = 0) -> tuple[torch.Tensor, None]:
        """``(y, None)``: a static memory keeps no state."""
        return swiglu(x, self.gate_up.weight, self.down.weight), None

    def state_from_flat(self, flat: dict[str, torch.Tensor], position: int) -> None:
        return None

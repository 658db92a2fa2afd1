"""Continuum Memory System (NL Eqs. 70-74): a chain of residual SwiGLU levels, each with its own update period.

This first version is static (every level keeps its initial weights); the in-context updates follow.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CMSLevel(nn.Module):
    """One level: the SwiGLU ``down(silu(gate x) * up x)`` whose weights are the level's initial state."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class CMS(nn.Module):
    """Channel memory ``x -> z_L - x`` with ``z_l = z_{l-1} + level_l(z_{l-1})``, ``z_0 = x`` (NL Eq. 70)."""

    def __init__(self, d_model: int, hidden: int, periods: tuple[int | None, ...], *, variant: str = "sequential",
                 lr: float = 0.1, learnable_lr: bool = True, second_order: bool = False,
                 test_time_learning: bool = True) -> None:
        super().__init__()
        self.periods = tuple(periods)
        self.levels = nn.ModuleList(CMSLevel(d_model, hidden) for _ in self.periods)
        self.variant = variant

    def forward(self, x: torch.Tensor, state: dict | None = None, position: int = 0) -> tuple[torch.Tensor, dict]:
        z = x
        for level in self.levels:
            z = z + level(z)
        return z - x, {}

"""Continuum Memory System (NL Eqs. 70-74): SwiGLU levels that keep learning in context, each at its own period.

A level is a SwiGLU ``f(x; W) = W_down (silu(W_gate x) * W_up x)`` (``hope.layers.mlp``) used residually. Levels with a period
``C`` (tokens) have **fast weights**: per sequence (``[B, ...]``), started from the level's parameters (the
meta-learned initial state) and changed only at multiples of ``C``, by one gradient step on the model's own
next-token loss (NL Eq. 71). Levels with period ``None`` are static (update frequency 0).

This module computes outputs with the weights it is given and applies steps from gradients it is given;
``hope.models.hope.in_context`` runs the model segment by segment, computes the next-token loss at each
boundary and differentiates it (docs/cms.md). Variants:

- ``sequential`` (NL Eq. 70, 73): ``z_l = z_{l-1} + f(z_{l-1}; W_l)``, output ``z_L - x``.
- ``nested`` (NL Eq. 72): the chain of ``sequential``; at each boundary of a level, its next faster level
  restarts from a start state that the slower level learns in context (a fast weight of the slower level).
- ``independent`` (NL Eq. 74): ``y = sum_l mix_l f(x; W_l)`` with learnable ``mix``.

With one static level the output is exactly the SwiGLU of Transformer++.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from hope.layers.mlp import SwiGLU, swiglu

if TYPE_CHECKING:
    from hope.models.hope.config import CMSConfig

WEIGHTS = ("gate_up", "down")


class CMS(nn.Module):
    """Channel memory ``module(x [B, T, D], state, position) -> (y, state)`` (NL Eqs. 70-74; docs/cms.md).

    Each level's parameters (a :class:`SwiGLU`) are its meta-learned initial state (NL Eq. 73) or, for a static
    level, its weights.

    ``sequential``/``nested`` return ``z_L - x``, accumulated as ``delta_l = delta_{l-1} + f(x + delta_{l-1})``.

    ``state`` holds, for every learning level ``l``, its fast weights ``"{l}.gate_up" [B, 2H, D]`` and
    ``"{l}.down" [B, D, H]``; with ``nested`` also ``"{l}.start.gate_up"`` / ``"{l}.start.down"``, the start
    state of level ``l`` learned by its next slower level. A missing state starts from the parameters.
    """

    def __init__(self, config: CMSConfig) -> None:
        super().__init__()
        self.periods = config.level_periods
        self.variant, self.second_order = config.cms_variant, config.cms_second_order
        self.test_time_learning = config.test_time_learning
        self.initial_lr = config.cms_lr
        self.levels = nn.ModuleList(SwiGLU(config.d_model, config.level_hidden) for _ in self.periods)
        log_lr = torch.full((len(self.periods),), math.log(self.initial_lr))
        if config.cms_learnable_lr:
            self.log_lr = nn.Parameter(log_lr)
        else:
            self.register_buffer("log_lr", log_lr)
        self.mix = nn.Parameter(torch.ones(len(self.periods))) if self.variant == "independent" else None
        self.learning = tuple(i for i, p in enumerate(self.periods) if p is not None and self.test_time_learning)
        self.active_periods = tuple(sorted({self.periods[i] for i in self.learning}))
        self.teacher = self._teachers() if self.variant == "nested" else {}

    def init_weights(self) -> None:
        """Learning rates to ``cms_lr`` and, for ``independent``, every mixing weight to 1."""
        with torch.no_grad():
            self.log_lr.fill_(math.log(self.initial_lr))
            if self.mix is not None:
                self.mix.fill_(1.0)

    def _teachers(self) -> dict[int, int]:
        """``{level: the learning level that learns its start state}``: the one with the smallest period
        above it (NL Eq. 72); the slowest levels have none (their start is the meta-learned parameter)."""
        teachers = {}
        for fast in self.learning:
            above = [i for i in self.learning if self.periods[i] > self.periods[fast]]
            if above:
                teachers[fast] = min(above, key=lambda i: (self.periods[i], i))
        return teachers

    def initial_state(self, batch: int) -> dict[str, torch.Tensor]:
        """Fast weights at position 0: every learning level's parameters, one copy per sequence (a view)."""
        state = {}
        for i in self.learning:
            for name in WEIGHTS:
                weight = getattr(self.levels[i], name).weight
                state[f"{i}.{name}"] = weight.expand(batch, *weight.shape)
        for fast in self.teacher:
            for name in WEIGHTS:
                state[f"{fast}.start.{name}"] = state[f"{fast}.{name}"]
        return state

    def differentiable_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` with every fast tensor that autograd cannot differentiate (read from a file, returned by a
        no-grad call) made a leaf that requires grad. ``nested``: a pupil's weights become ``start + constant``,
        as they are in one pass (since its last restart it moved by first-order steps, constants)."""
        out = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in state.items()}
        for fast in self.teacher:
            for name in WEIGHTS:
                key, start = f"{fast}.{name}", f"{fast}.start.{name}"
                if not state[key].requires_grad:
                    out[key] = out[start] + (state[key] - state[start]).detach()
        return out

    def _weights(self, state: dict[str, torch.Tensor], i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i in self.learning:
            return state[f"{i}.gate_up"], state[f"{i}.down"]
        return self.levels[i].gate_up.weight, self.levels[i].down.weight

    def forward(self, x: torch.Tensor, state: dict | None = None, position: int = 0) -> tuple[torch.Tensor, dict]:
        if x.ndim != 3:
            raise ValueError(f"x must be [batch, time, d_model], got {list(x.shape)}")
        if self.learning and not state:
            state = self.initial_state(x.shape[0])
        state = dict(state or {})
        if self.variant == "independent":
            y = sum(self.mix[i] * swiglu(x, *self._weights(state, i)) for i in range(len(self.periods)))
            return y, state
        delta = swiglu(x, *self._weights(state, 0))
        for i in range(1, len(self.periods)):
            delta = delta + swiglu(x + delta, *self._weights(state, i))
        return delta, state

    def levels_with_period(self, period: int) -> list[int]:
        return [i for i in self.learning if self.periods[i] == period]

    def step_tensors(self, state: dict[str, torch.Tensor], period: int) -> list[torch.Tensor]:
        """The fast tensors that the step at a boundary of ``period`` differentiates, in a fixed order:
        each such level's weights, and (``nested``) the start state of its next faster level."""
        return [state[key] for key in self._step_keys(period)]

    def _step_keys(self, period: int) -> list[str]:
        keys = []
        for i in self.levels_with_period(period):
            keys += [f"{i}.{name}" for name in WEIGHTS]
            for fast in self._pupils(i):
                keys += [f"{fast}.start.{name}" for name in WEIGHTS]
        return keys

    def apply_steps(self, state: dict[str, torch.Tensor], grads: dict[int, list[torch.Tensor]]) -> dict:
        """One step ``W <- W - eta_l * grad`` (NL Eq. 71) for the levels of every period in ``grads`` (whose
        gradients were all taken before any of these steps); ``nested``: each stepping level also moves the
        start state of its pupils (next faster levels), which then restart from it (NL Eq. 72)."""
        state = dict(state)
        lr = self.log_lr.exp()
        updated = {}
        for period, tensors in grads.items():
            for key, grad in zip(self._step_keys(period), tensors):
                owner = self._owner(key)
                updated[key] = state[key] - lr[owner].to(grad.dtype) * grad
        state.update(updated)
        for period in grads:
            for i in self.levels_with_period(period):
                for fast in self._pupils(i):
                    for name in WEIGHTS:
                        state[f"{fast}.{name}"] = state[f"{fast}.start.{name}"]
        return state

    def _pupils(self, level: int) -> list[int]:
        """The levels whose start state ``level`` learns (``nested`` only)."""
        return [fast for fast, slow in self.teacher.items() if slow == level]

    def _owner(self, key: str) -> int:
        """The level whose learning rate moves the state entry ``key`` (a start state belongs to its teacher)."""
        level = int(key.split(".")[0])
        return self.teacher[level] if ".start." in key else level

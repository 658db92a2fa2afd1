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

Window-aligned steps (``hope.models.hope.window``): when every learning period is a multiple of the training
window, the fast weights are ``W = parameter - eta_l * S`` with ``S`` the sum of the steps' gradients
(constants, :class:`WindowCMSState`), read unchanged for a whole window, and stepped after the training backward.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from hope.errors import HopeError
from hope.layers.mlp import SwiGLU, swiglu

if TYPE_CHECKING:
    from hope.models.hope.config import CMSConfig

WEIGHTS = ("gate_up", "down")


class LevelWeights(NamedTuple):
    """One level's fast SwiGLU weights, per sequence: ``gate_up [B, 2H, D]``, ``down [B, D, H]``."""

    gate_up: torch.Tensor
    down: torch.Tensor


class CMSState(NamedTuple):
    """The fast weights of every learning level (``levels[l]``) and, with ``nested``, the start state of each
    level that a slower level learns (``starts[l]``, NL Eq. 72) (docs/cms.md, "State")."""

    levels: dict[int, LevelWeights]
    starts: dict[int, LevelWeights]

    def to_flat(self) -> dict[str, torch.Tensor]:
        """The tensors under their names in a state file: ``{l}.gate_up``, ``{l}.down``, ``{l}.start.gate_up``,
        ``{l}.start.down``."""
        flat = {f"{i}.{name}": t for i, weights in self.levels.items() for name, t in zip(WEIGHTS, weights)}
        flat.update({f"{i}.start.{name}": t for i, weights in self.starts.items() for name, t in zip(WEIGHTS, weights)})
        return flat


class WindowCMSState(NamedTuple):
    """The channel state of a CMS stepped at window boundaries (docs/cms.md, "Window-aligned steps"), per row:

    - ``sums[l]``: the sum ``S`` of the gradients of every step level ``l`` took since the row's document start
      (constants); its fast weights are ``parameter - eta_l * S``.
    - ``grads[l]``: the gradient of Eq. 71's loss accumulated over the windows of the current period.
    - ``tokens [B]``: the tokens the row has read since its document start; level ``l`` steps when it reaches a
      multiple of its period.
    - ``used[l]``: the fast weights the last window read (graph tensors whose ``.grad`` the training backward
      fills); ``None`` after a step or a load.

    Every tensor is zero for a fresh row, so zeroing a row's tensors restarts its document."""

    sums: dict[int, LevelWeights]
    grads: dict[int, LevelWeights]
    tokens: torch.Tensor
    used: dict[int, LevelWeights] | None = None

    def to_flat(self) -> dict[str, torch.Tensor]:
        """``{l}.sum.gate_up``, ``{l}.sum.down``, ``{l}.grad.gate_up``, ``{l}.grad.down`` and ``tokens``."""
        flat = {f"{i}.{kind}.{name}": t for kind, per_level in (("sum", self.sums), ("grad", self.grads))
                for i, weights in per_level.items() for name, t in zip(WEIGHTS, weights)}
        flat["tokens"] = self.tokens
        return flat


class CMS(nn.Module):
    """Channel memory ``module(x [B, T, D], state, position) -> (y, state)`` (NL Eqs. 70-74; docs/cms.md).

    Each level's parameters (a :class:`SwiGLU`) are its meta-learned initial state (NL Eq. 73) or, for a static
    level, its weights.

    ``sequential``/``nested`` return ``z_L - x``, accumulated as ``delta_l = delta_{l-1} + f(x + delta_{l-1})``.

    ``state``: a :class:`CMSState` (``None`` without learning levels; a missing state starts from the
    parameters).
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

    def initial_state(self, batch: int, like: torch.Tensor | None = None) -> CMSState:
        """Fast weights at position 0: every learning level's parameters, one copy per sequence (a view)."""
        levels = {i: LevelWeights(*(getattr(self.levels[i], name).weight.expand(batch, -1, -1) for name in WEIGHTS))
                  for i in self.learning}
        return CMSState(levels, {fast: levels[fast] for fast in self.teacher})

    def state_from_flat(self, flat: dict[str, torch.Tensor],
                        position: int) -> CMSState | WindowCMSState | None:
        """The state saved by :meth:`CMSState.to_flat` or :meth:`WindowCMSState.to_flat`."""
        if not self.learning:
            return None
        if "tokens" in flat:
            return WindowCMSState(*({i: LevelWeights(*(flat[f"{i}.{kind}.{name}"] for name in WEIGHTS))
                                     for i in self.learning} for kind in ("sum", "grad")), flat["tokens"])
        return CMSState({i: LevelWeights(*(flat[f"{i}.{name}"] for name in WEIGHTS)) for i in self.learning},
                        {i: LevelWeights(*(flat[f"{i}.start.{name}"] for name in WEIGHTS)) for i in self.teacher})

    def differentiable_state(self, state: CMSState) -> CMSState:
        """``state`` with every fast tensor that autograd cannot differentiate (read from a file, returned by a
        no-grad call) made a leaf that requires grad. ``nested``: a pupil's weights become ``start + constant``,
        as they are in one pass (since its last restart it moved by first-order steps, constants)."""
        def leaf(weights: LevelWeights) -> LevelWeights:
            return LevelWeights(*(t if t.requires_grad else t.detach().requires_grad_() for t in weights))

        levels = {i: leaf(weights) for i, weights in state.levels.items()}
        starts = {i: leaf(weights) for i, weights in state.starts.items()}
        for fast in self.teacher:
            levels[fast] = LevelWeights(*(
                new if weight.requires_grad else new_start + (weight - start).detach()
                for new, weight, start, new_start in zip(levels[fast], state.levels[fast], state.starts[fast],
                                                         starts[fast])))
        return CMSState(levels, starts)

    def _weights(self, state: CMSState | None, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i in self.learning:
            return state.levels[i]
        return self.levels[i].gate_up.weight, self.levels[i].down.weight

    def forward(self, x: torch.Tensor, state: CMSState | None = None,
                position: int = 0) -> tuple[torch.Tensor, CMSState | None]:
        if x.ndim != 3:
            raise ValueError(f"x must be [batch, time, d_model], got {list(x.shape)}")
        if self.learning and state is None:
            state = self.initial_state(x.shape[0])
        if self.variant == "independent":
            y = sum(self.mix[i] * swiglu(x, *self._weights(state, i)) for i in range(len(self.periods)))
            return y, state
        delta = swiglu(x, *self._weights(state, 0))
        for i in range(1, len(self.periods)):
            delta = delta + swiglu(x + delta, *self._weights(state, i))
        return delta, state

    def window_state(self, batch: int) -> WindowCMSState:
        """The window-aligned state of ``batch`` fresh rows (all zeros)."""
        def zeros(i: int) -> LevelWeights:
            return LevelWeights(*(getattr(self.levels[i], name).weight.detach().new_zeros(
                batch, *getattr(self.levels[i], name).weight.shape) for name in WEIGHTS))

        return WindowCMSState({i: zeros(i) for i in self.learning}, {i: zeros(i) for i in self.learning},
                              torch.zeros(batch, dtype=torch.long, device=self.log_lr.device))

    def check_window(self, state: WindowCMSState, length: int) -> None:
        """A clear error unless ``length`` tokens from every row's position cross no boundary strictly inside
        (the periods divide one another, so the fastest level decides)."""
        if self.variant == "nested" or self.second_order:
            raise HopeError("window-aligned CMS steps are first order and sequential/independent only: "
                            "use the in-context forward (window=False) for nested or cms_second_order")
        fastest = min(self.periods[i] for i in self.learning)
        offset = int((state.tokens % fastest).max())
        if offset + length > fastest:
            raise HopeError(f"window-aligned CMS steps need windows that end on every level boundary they reach: a "
                            f"row at offset {offset} in the period {fastest} cannot read {length} tokens (window "
                            "lengths must divide every period; shorter periods use window=False)")

    def window_weights(self, state: WindowCMSState) -> CMSState:
        """The fast weights a window reads, ``parameter - eta_l * S`` per row, made tensors whose ``.grad`` the
        backward fills (so the step reads the gradient the training backward computes)."""
        lr = self.log_lr.exp()
        levels = {}
        for i in self.learning:
            pair = []
            for name, total in zip(WEIGHTS, state.sums[i]):
                weight = getattr(self.levels[i], name).weight - lr[i].to(total.dtype) * total
                if weight.requires_grad:
                    weight.retain_grad()
                else:
                    weight = weight.detach().requires_grad_()
                pair.append(weight)
            levels[i] = LevelWeights(*pair)
        return CMSState(levels, {})

    def window_step(self, state: WindowCMSState, loss_tokens: int) -> WindowCMSState:
        """Add the last window's gradient, rescaled from a loss averaged over ``loss_tokens`` tokens to Eq. 71's
        per-row mean over the period, to ``grads``; rows whose ``tokens`` reached a multiple of a level's period
        take that level's step (``S += G``, ``G = 0``; NL Eq. 71)."""
        sums, grads = dict(state.sums), dict(state.grads)
        for i in self.learning:
            period = self.periods[i]
            due = (state.tokens % period == 0).view(-1, 1, 1)
            new_sums, new_grads = [], []
            for used, total, grad in zip(state.used[i], state.sums[i], state.grads[i]):
                if used.grad is None:
                    raise HopeError("window_step needs the gradients of the window's fast weights: call "
                                    "loss.backward() on a loss of that window's logits first")
                grad = grad + used.grad.detach().to(grad.dtype) * (loss_tokens / period)
                new_sums.append(torch.where(due, total + grad, total))
                new_grads.append(torch.where(due, torch.zeros_like(grad), grad))
            sums[i], grads[i] = LevelWeights(*new_sums), LevelWeights(*new_grads)
        return WindowCMSState(sums, grads, state.tokens)

    def levels_with_period(self, period: int) -> list[int]:
        return [i for i in self.learning if self.periods[i] == period]

    def step_tensors(self, state: CMSState, period: int) -> list[torch.Tensor]:
        """The fast tensors that the step at a boundary of ``period`` differentiates, in a fixed order:
        each such level's weights, and (``nested``) the start state of its next faster level."""
        tensors = []
        for i in self.levels_with_period(period):
            tensors += state.levels[i]
            for fast in self._pupils(i):
                tensors += state.starts[fast]
        return tensors

    def apply_steps(self, state: CMSState, grads: dict[int, list[torch.Tensor]]) -> CMSState:
        """One step ``W <- W - eta_l * grad`` (NL Eq. 71) for the levels of every period in ``grads`` (whose
        gradients were all taken before any of these steps; each list in the order of :meth:`step_tensors`);
        ``nested``: each stepping level also moves the start state of its pupils (next faster levels), which
        then restart from it (NL Eq. 72)."""
        lr = self.log_lr.exp()
        levels, starts = dict(state.levels), dict(state.starts)
        for period, tensors in grads.items():
            pairs = iter(zip(tensors[0::2], tensors[1::2]))
            for i in self.levels_with_period(period):
                step = lr[i]
                levels[i] = LevelWeights(*(w - step.to(g.dtype) * g for w, g in zip(state.levels[i], next(pairs))))
                for fast in self._pupils(i):
                    starts[fast] = LevelWeights(*(w - step.to(g.dtype) * g
                                                  for w, g in zip(state.starts[fast], next(pairs))))
        for period in grads:
            for i in self.levels_with_period(period):
                for fast in self._pupils(i):
                    levels[fast] = starts[fast]
        return CMSState(levels, starts)

    def _pupils(self, level: int) -> list[int]:
        """The levels whose start state ``level`` learns (``nested`` only)."""
        return [fast for fast, slow in self.teacher.items() if slow == level]

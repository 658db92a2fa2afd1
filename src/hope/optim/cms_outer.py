"""CMS levels stepped by the outer optimizer at their own periods: reading (ii) of NL Eq. 71 (docs/cms.md).

Eq. 71 updates level ``l`` of the Continuum Memory System only every ``C^(l)``-th time, with the sum of the
gradients since its last update. The main path of this package reads the time index as tokens inside a
sequence (reading (i), ``hope.models.hope.cms``). Reading (ii), the other reading of the equation, reads it as
*training steps*: the parameters of level ``l`` are stepped by the outer optimizer only after every
``periods[l]``-th optimizer step, with the mean of the (clipped) gradients of those steps; in between they
are frozen (no update, no weight decay, no optimizer state change). ``periods[l] = 1`` is ordinary training.

Use it between the gradient clipping and ``optimizer.step()`` of a finite step::

    levels = CMSOuterPeriods(model, (1, 4, 16))
    loss.backward(); clip_grad_norm_(...)
    levels.hold_back()      # accumulate; hide the gradients of levels that are not due
    optimizer.step()

Every optimizer of ``hope.optim`` and ``torch.optim.AdamW`` skips a parameter whose ``grad`` is ``None``.
The learning rates ``log_lr`` of a CMS are shared by its levels and step every time.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hope.errors import HopeError
from hope.models.hope.cms import CMS


class CMSOuterPeriods:
    """Hold back the gradients of CMS level ``l`` except after every ``periods[l]``-th step (A6 (ii))."""

    def __init__(self, model: nn.Module, periods: tuple[int, ...] | list[int]) -> None:
        periods = tuple(periods)
        if not periods or any(not isinstance(p, int) or isinstance(p, bool) or p < 1 for p in periods):
            raise HopeError(f"cms_outer_periods must be positive integers (training steps), got {list(periods)}")
        systems = [m for m in model.modules() if isinstance(m, CMS)]
        if not systems:
            raise HopeError("cms_outer_periods needs a model with a Continuum Memory System (hope, hope-attention)")
        for cms in systems:
            if len(cms.levels) != len(periods):
                raise HopeError(f"cms_outer_periods has {len(periods)} entries but the model's CMS has "
                                f"{len(cms.levels)} levels (one period per level)")
        self.periods = periods
        self.held: list[tuple[int, list[nn.Parameter]]] = [
            (period, [p for cms in systems for p in cms.levels[level].parameters() if p.requires_grad])
            for level, period in enumerate(periods) if period > 1
        ]
        self.sums: dict[int, torch.Tensor] = {}
        self.steps = 0

    def hold_back(self) -> None:
        """Count one optimizer step; add the gradients of every level with period > 1 to its running sum, and
        hand it the mean over its period (else ``None``) as its gradient for this step. A step without a
        gradient for a parameter counts as a zero gradient."""
        self.steps += 1
        for period, params in self.held:
            due = self.steps % period == 0
            for p in params:
                total = self.sums.pop(id(p), None)
                if p.grad is not None:
                    total = p.grad.detach().clone() if total is None else total.add_(p.grad)
                if total is None:
                    continue
                if due:
                    p.grad = total.div_(period)
                else:
                    self.sums[id(p)] = total
                    p.grad = None

    def _order(self) -> list[nn.Parameter]:
        return [p for _, params in self.held for p in params]

    def state_dict(self) -> dict[str, Any]:
        """Steps counted and the running gradient sums (in parameter order), for an exact resume."""
        return {"periods": list(self.periods), "steps": self.steps,
                "sums": [self.sums.get(id(p)) for p in self._order()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["periods"]) != list(self.periods):
            raise HopeError(f"cms_outer_periods {list(self.periods)} differ from the checkpoint's {state['periods']}")
        order = self._order()
        if len(state["sums"]) != len(order):
            raise HopeError("the checkpoint's CMS gradient sums do not match this model's CMS levels")
        self.steps = int(state["steps"])
        self.sums = {id(p): s.to(p.device) for p, s in zip(order, state["sums"]) if s is not None}

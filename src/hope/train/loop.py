"""The one optimizer loop of every run: the language-model trainer and every task run drive it.

A run supplies its batches (``batches(step)``: the micro-batches of one optimizer step), its loss
(``loss_fn(model, micro_batch)``) and callbacks (logging, evaluation, checkpoints); the loop does the rest:
one backward per micro-batch (each loss divided by their number; gradients synchronised across ``torchrun``
processes at the last one only), gradient clipping, the CMS outer periods' hold-back
(``hope.optim.cms_outer``), the optimizer and schedule steps, and non-finite steps: a step whose loss or
gradient norm is not finite is skipped with a warning, ``max_bad_steps`` in a row abort with a ``HopeError``.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from hope.errors import HopeError
from hope.optim.cms_outer import CMSOuterPeriods
from hope.optim.params import gathered
from hope.runtime import Distributed


def lr_schedule(warmup_steps: int, total_steps: int | None, floor: float) -> Callable[[int], float]:
    """Multiplier of the peak lr at ``step`` (for ``LambdaLR``): linear warmup, then cosine decay to ``floor``
    at ``total_steps``, or constant (``total_steps=None``: a continual stream, every stage learned alike)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if total_steps is None:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


@dataclass
class StepResult:
    """What callbacks see after each optimizer step."""

    step: int
    """Optimizer steps done, this one included."""
    loss: torch.Tensor
    """Mean loss of the step's batch (over every process)."""
    grad_norm: torch.Tensor
    """Global gradient norm before clipping."""
    seconds: float
    """Time of the step (batches, forward, backward, update)."""


class Trainer:
    """The optimizer state of one run and the loop that advances it (``fit``), possibly in several calls
    (a continual run fits stage after stage; the schedule and the step count carry on)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, *, grad_clip: float, max_bad_steps: int,
                 outer_periods: CMSOuterPeriods | None = None, params: Iterable[nn.Parameter] | None = None,
                 distributed: Distributed | None = None, diverged_hint: str = "", step: int = 0,
                 bad_steps: int = 0) -> None:
        """``model`` is what ``loss_fn`` calls (a ``DistributedDataParallel`` wrapper under ``torchrun``);
        ``params`` are clipped (default: ``model``'s); ``diverged_hint`` ends the divergence error."""
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.params = list(model.parameters() if params is None else params)
        self.grad_clip, self.max_bad_steps, self.outer_periods = grad_clip, max_bad_steps, outer_periods
        self.distributed, self.diverged_hint = distributed, diverged_hint
        self.step, self.bad_steps = step, bad_steps

    def fit(self, batches: Callable[[int], Sequence[Any]], loss_fn: Callable[[nn.Module, Any], torch.Tensor],
            until: int, callbacks: Sequence[Callable[[StepResult], None]] = (),
            bar: tqdm | None = None) -> StepResult | None:
        """Step until ``self.step == until``; returns the last step's result (``None`` if none was taken)."""
        result = None
        while self.step < until:
            started = time.perf_counter()
            loss, grad_norm = self._backward(batches(self.step), loss_fn)
            self._update(loss, grad_norm)
            result = StepResult(self.step, loss, grad_norm, time.perf_counter() - started)
            if bar is not None:
                bar.update(1)
            for callback in callbacks:
                callback(result)
        return result

    def _backward(self, micro_batches: Sequence[Any], loss_fn) -> tuple[torch.Tensor, torch.Tensor]:
        self.model.train()
        parallel = self.distributed is not None and self.distributed.world > 1
        total = None
        for m, batch in enumerate(micro_batches):
            last = m == len(micro_batches) - 1
            with self.model.no_sync() if parallel and not last and hasattr(self.model, "no_sync") \
                    else contextlib.nullcontext():  # FSDP2 has no no_sync: its gradients are reduced every time
                loss = loss_fn(self.model, batch) / len(micro_batches)
                loss.backward()
            total = loss.detach() if total is None else total + loss.detach()
        if parallel:
            total = self.distributed.mean(total)
        clip = self.grad_clip if self.grad_clip > 0 else float("inf")
        return total, gathered(torch.nn.utils.clip_grad_norm_(self.params, clip))

    def _update(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
        if torch.isfinite(loss) and torch.isfinite(grad_norm):
            if self.outer_periods is not None:
                self.outer_periods.hold_back()
            self.optimizer.step()
            self.bad_steps = 0
        else:
            self.bad_steps += 1
            if self.bad_steps >= self.max_bad_steps:
                raise HopeError(f"training diverged: {self.bad_steps} non-finite step(s) in a row at step {self.step}"
                                + (f"; {self.diverged_hint}" if self.diverged_hint else ""))
            warnings.warn(f"step {self.step}: non-finite loss or gradient (loss {loss.item()}, grad norm "
                          f"{grad_norm.item()}); step skipped ({self.bad_steps} in a row)", stacklevel=1)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1

"""Delta Gradient Descent (DGD, NL Sec. 4.5, Eq. 57) as a ``torch.optim.Optimizer``.

GD is one step on the dot-product objective ``<W x, grad_y L>`` (NL Eq. 9). DGD regresses instead,
``min_W 1/2 ||W x - u||^2 + 1/(2 eta) ||W - W_t||^2`` with ``u = -grad_y L`` (NL Eq. 56), whose solution
adds a data-dependent decay to GD:

    W <- W (I - eta' x x^T) - eta' grad_W L,        eta' = eta / (1 + eta ||x||^2)      (NL Eq. 57)

For a batch of ``N`` input rows ``x_n`` (all tokens of all sequences) this optimizer uses their mean
``C = 1/N sum_n x_n x_n^T``:

    W <- W - s eta' W C - eta' grad_W L,             eta' = eta / (1 + s eta tr C)

``s`` (``decay_scale``, default 1) weighs the decay term; ``s = 0`` is plain SGD (the paper's "w/o DGD"
ablation). ``eta'`` makes ``I - s eta' C`` a contraction for any ``eta``; it is Eq. 56's exact solution
when ``C`` has rank one (one token) and a first-order approximation for batches.
``proximal=False`` uses ``eta' = eta`` in both terms. ``unit_inputs=True`` normalises each input row
to unit length first (Eq. 57 assumes normalised inputs): then ``tr C = 1`` and ``eta' = eta / (1 + s eta)``.

Layer inputs come from forward hooks on every ``nn.Linear`` of ``model`` whose weight is optimised:
each forward run with autograd enabled adds ``x^T x`` and the row count to a running sum, and
``step`` uses (then clears) the sums of all forwards since the previous step, so gradient accumulation
over micro-batches gives the mean over all of them, and activation checkpointing (two forwards)
leaves the mean unchanged. Forwards under ``torch.no_grad`` / ``inference_mode`` (evaluation) are not
recorded. Under DDP the sums are all-reduced in ``step`` (as the gradients are), so ranks stay in sync.
Other parameters (embeddings, norms, biases), and ``nn.Linear`` weights whose module was not called
since the last step (e.g. a CMS level's initial state, used functionally as fast weights), take a
plain SGD step. Weight decay is decoupled,
``W <- (1 - lr wd) W``. Call ``remove_hooks()`` to detach the optimizer from the model.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from hope.optim.params import reject_dtensor


class InputStatistics:
    """Running ``sum_n x_n x_n^T`` and ``N`` of one ``nn.Linear``'s inputs (float32 or the weight's dtype
    if wider); with ``unit_inputs`` each row is first divided by its L2 norm."""

    def __init__(self, unit_inputs: bool = False) -> None:
        self.unit_inputs = unit_inputs
        self.second_moment: torch.Tensor | None = None
        self.rows = 0

    def __call__(self, module: nn.Linear, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if not torch.is_grad_enabled():
            return
        dtype = torch.promote_types(module.weight.dtype, torch.float32)
        with torch.no_grad(), torch.autocast(inputs[0].device.type, enabled=False):
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).to(dtype)
            if self.unit_inputs:
                x = torch.nn.functional.normalize(x, dim=-1)
            moment = x.T @ x
        self.second_moment = moment if self.second_moment is None else self.second_moment + moment
        self.rows += x.shape[0]

    def mean(self) -> torch.Tensor | None:
        """``C = sum x x^T / N`` over every rank (DDP), or ``None`` if nothing was recorded."""
        if self.second_moment is None:
            return None
        total, rows = self.second_moment, torch.tensor(float(self.rows), device=self.second_moment.device,
                                                       dtype=self.second_moment.dtype)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            total, rows = total.clone(), rows.clone()
            dist.all_reduce(total)
            dist.all_reduce(rows)
        return total / rows

    def clear(self) -> None:
        self.second_moment, self.rows = None, 0


class DGD(torch.optim.Optimizer):
    """DGD (NL Eq. 57) for the weights of ``model``'s ``nn.Linear`` layers, SGD for other parameters.

    Args:
        params: the parameters (or param groups) to optimise, as for any torch optimizer.
        lr: step size ``eta``.
        model: the module whose ``nn.Linear`` layers get input hooks (required).
        weight_decay: decoupled weight decay.
        decay_scale: ``s``, the weight of the ``W x x^T`` term (0: plain SGD).
        proximal: ``eta' = eta / (1 + s eta tr C)`` (True) or ``eta' = eta`` (False).
        unit_inputs: L2-normalise each input row before ``C`` (NL Eq. 57 assumes ``||x|| = lambda``;
            Hope's memories normalise their keys), so ``tr C = 1`` and ``eta' = eta / (1 + s eta)``.
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.1, *, model: nn.Module, weight_decay: float = 0.0,
                 decay_scale: float = 1.0, proximal: bool = True, unit_inputs: bool = False) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be the nn.Module whose Linear layers DGD updates, got {type(model).__name__}")
        if lr < 0 or weight_decay < 0 or decay_scale < 0:
            raise ValueError(f"need lr, weight_decay, decay_scale >= 0, got {lr}, {weight_decay}, {decay_scale}")
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, decay_scale=decay_scale, proximal=proximal))
        optimised = {id(p) for g in self.param_groups for p in g["params"]}
        reject_dtensor((p for g in self.param_groups for p in g["params"]), "DGD")
        self._inputs: dict[int, InputStatistics] = {}
        self._hooks = []
        for module in model.modules():
            if isinstance(module, nn.Linear) and id(module.weight) in optimised and id(module.weight) not in self._inputs:
                statistics = InputStatistics(unit_inputs)
                self._inputs[id(module.weight)] = statistics
                self._hooks.append(module.register_forward_hook(statistics))
        if not self._inputs:
            raise ValueError("DGD found no nn.Linear in model whose weight is among params")

    def remove_hooks(self) -> None:
        """Stop recording layer inputs (every parameter then takes plain SGD steps)."""
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, weight_decay, scale = group["lr"], group["weight_decay"], group["decay_scale"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if weight_decay:
                    p.mul_(1 - lr * weight_decay)
                statistics = self._inputs.get(id(p))
                moment = statistics.mean() if statistics is not None else None
                if moment is None:
                    p.add_(p.grad, alpha=-lr)
                    continue
                moment = moment.to(p.dtype)
                step = lr / (1 + scale * lr * moment.trace()) if group["proximal"] else moment.new_tensor(lr)
                p.sub_((p @ moment).mul_(scale * step)).sub_(p.grad * step)
        for statistics in self._inputs.values():
            statistics.clear()
        return loss

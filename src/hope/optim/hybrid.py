"""The base of Muon and M3: orthogonalised updates for weight matrices and AdamW for everything
else, in one ``torch.optim.Optimizer`` (so one LR scheduler and one state dict cover both).

A param group whose ``orthogonal`` key is true gets the subclass's matrix update; any other group
gets AdamW (decoupled weight decay, bias correction, the group's own ``lr``). A group given without
the key is split in two: its matrices (``ndim >= 2``) become orthogonal, the rest (gains, biases)
AdamW. Embeddings and output heads are matrices too, so pass them in a group with
``orthogonal=False`` (``hope.optim.build_optimizer`` does).

FSDP2 (``hope train --fsdp``): parameters, gradients and optimizer state are DTensors sharded by rows; every
elementwise update runs on the local shards, and ``orthogonalise`` gathers each whole matrix for Newton-Schulz
(every rank computes it on the same gathered matrix) and keeps the rows of its own shard.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from hope.ops.newton_schulz import newton_schulz
from hope.optim.params import as_matrix, gathered, sharded_like

NS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64, None: None}


def split_groups(params: Iterable[Any], adamw_lr: float | None) -> list[dict[str, Any]]:
    """Normalise ``params`` into param groups that each say whether they are ``orthogonal``."""
    params = list(params)
    if not params:
        raise ValueError("optimizer got an empty parameter list")
    groups = params if isinstance(params[0], dict) else [{"params": params}]
    out = []
    for group in groups:
        group = dict(group)
        tensors = [group["params"]] if isinstance(group["params"], torch.Tensor) else list(group["params"])
        if "orthogonal" in group:
            out.append({**group, "params": tensors})
            continue
        matrices = [p for p in tensors if p.ndim >= 2]
        others = [p for p in tensors if p.ndim < 2]
        if matrices:
            out.append({**group, "params": matrices, "orthogonal": True})
        if others:
            extra = {} if adamw_lr is None else {"lr": adamw_lr}
            out.append({**group, **extra, "params": others, "orthogonal": False})
    return out


def orthogonalise(matrices: list[torch.Tensor], group: dict[str, Any]) -> list[torch.Tensor]:
    """Newton-Schulz of each tensor (viewed as a matrix ``[shape[0], rest]``), same-shape ones batched
    in one call when the group's ``foreach`` is on; each result has its input's shape (and sharding: a DTensor
    is gathered whole, and the result sharded as it was)."""
    whole = [gathered(m) for m in matrices]
    return [sharded_like(o, m) for o, m in zip(_orthogonalise(whole, group), matrices)]


def _orthogonalise(matrices: list[torch.Tensor], group: dict[str, Any]) -> list[torch.Tensor]:
    kwargs = dict(steps=group["ns_steps"], coefficients=tuple(group["ns_coefficients"]), eps=group["ns_eps"],
                  dtype=NS_DTYPES[group["ns_dtype"]])
    if not group["foreach"]:
        return [newton_schulz(as_matrix(m), **kwargs).reshape(m.shape) for m in matrices]
    by_shape: dict[tuple[torch.Size, torch.device, torch.dtype], list[int]] = {}
    for i, m in enumerate(matrices):
        by_shape.setdefault((m.shape, m.device, m.dtype), []).append(i)
    out: list[torch.Tensor] = [None] * len(matrices)  # type: ignore[list-item]
    for indices in by_shape.values():
        stacked = torch.stack([as_matrix(matrices[i]) for i in indices])
        for i, result in zip(indices, newton_schulz(stacked, **kwargs).unbind(0)):
            out[i] = result.reshape(matrices[i].shape)
    return out


class HybridOptimizer(torch.optim.Optimizer):
    """Orthogonal groups: ``self._orthogonal_step(group, params, grads)``; other groups: AdamW."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any], adamw_lr: float | None) -> None:
        if defaults["ns_dtype"] not in NS_DTYPES:
            raise ValueError(f"ns_dtype must be one of {[k for k in NS_DTYPES if k]} or None, got {defaults['ns_dtype']!r}")
        groups = split_groups(params, adamw_lr)
        super().__init__(groups, defaults)

    def _orthogonal_step(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if any(g.is_sparse for g in grads):
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            if group["orthogonal"]:
                self._orthogonal_step(group, params, grads)
            else:
                self._adamw_step(group, params, grads)
        return loss

    def _adamw_step(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        """AdamW with the arithmetic of ``torch.optim.AdamW`` (decoupled decay, bias correction)."""
        beta1, beta2 = group["adamw_betas"]
        lr, weight_decay, eps = group["lr"], group["weight_decay"], group["adamw_eps"]
        exp_avgs, exp_avg_sqs, steps = [], [], []
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            state["step"] += 1
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        if weight_decay:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        denoms = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denoms, [(1 - beta2**s) ** 0.5 for s in steps])
        torch._foreach_add_(denoms, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denoms, [-lr / (1 - beta1**s) for s in steps])

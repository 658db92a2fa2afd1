"""M3, Multi-scale Momentum Muon (NL Sec. 7.2, Algorithm 1): Adam + Muon + a two-level CMS of momenta.

Per weight matrix, with gradient ``g_t`` at step ``t = 1, 2, ...`` (``accumulate="sum"``, as printed):

    M1_t = M1_{t-1} + beta1 g_t                       fast momentum (Alg. 1 line 7)
    V_t  = V_{t-1}  + beta2 g_t^2                     second moment (line 8)
    O1_t = NS(M1_t)                                   (line 9)
    W_t  = W_{t-1} - lr (O1_t + alpha O2) / (sqrt(V_t) + eps)        (line 10)

and after every ``slow_period``-th step (lines 3-4) the slow momentum absorbs the chunk's gradients,

    M2 <- M2 + beta3 sum_{chunk} g_i,    O2 <- NS(M2),

so ``O2`` used in chunk ``k`` holds the gradients of chunks ``< k`` (zero in the first chunk).

``accumulate="ema"`` reads the accumulators as exponential moving averages instead (a deviation,
docs/paper_notes.md A11): ``M1 <- beta1 M1 + (1 - beta1) g``, ``V <- beta2 V + (1 - beta2) g^2`` (bias-corrected
in the update), ``M2 <- beta3 M2 + (1 - beta3) sum_chunk g``. Newton-Schulz is invariant to the scale of
its input, so with ``sum`` the factors ``beta1`` and ``beta3`` change nothing but the ``eps`` regime.

``update_rms`` (not in the paper): when set, each matrix's update is rescaled to that RMS before the
step (AdaMuon's choice, 0.2 = AdamW's typical update RMS), which makes AdamW's learning rate usable.
As printed (``None``) the update is an orthogonal matrix divided by gradient magnitudes, whose scale
depends on the gradients' units and, with ``sum``, decays like ``1/sqrt(t)``.

Parameters that are not matrices (or are in groups with ``orthogonal=False``) get AdamW.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from hope.ops.newton_schulz import QUINTIC
from hope.optim.hybrid import HybridOptimizer, orthogonalise
from hope.optim.params import gathered

ACCUMULATE = ("sum", "ema")


class M3(HybridOptimizer):
    """M3 (NL Algorithm 1) for matrices, AdamW for the rest, in one optimizer.

    Args:
        lr: learning rate ``eta`` of the orthogonal groups.
        betas: ``(beta1, beta2, beta3)``: fast momentum, second moment, slow momentum.
        alpha: weight of the slow momentum. eps: added to ``sqrt(V)``.
        slow_period: steps per slow chunk (the paper's frequency ``f``, ``C-hat``).
        accumulate: ``"sum"`` (Algorithm 1 as printed) or ``"ema"``.
        update_rms: rescale each matrix update to this RMS (``None``: as printed).
        weight_decay: decoupled weight decay ``W <- (1 - lr wd) W``, in every group.
        ns_steps, ns_coefficients, ns_eps, ns_dtype: the Newton-Schulz iteration (default: Muon's NS5 in bf16).
        adamw_lr, adamw_betas, adamw_eps: the AdamW groups (``adamw_lr=None``: ``lr``).
        foreach: batch same-shape matrices in one Newton-Schulz call.

    Under DDP the gradients are all-reduced before ``step``, so every rank computes the same update; under
    FSDP2 the state is sharded like the parameters and Newton-Schulz gathers whole matrices (``hope.optim.hybrid``).
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.02, betas: tuple[float, float, float] = (0.9, 0.999, 0.9),
                 alpha: float = 1.0, eps: float = 1e-8, slow_period: int = 100, accumulate: str = "sum",
                 update_rms: float | None = None, weight_decay: float = 0.0, ns_steps: int = 5,
                 ns_coefficients: tuple[float, float, float] = QUINTIC, ns_eps: float = 1e-7,
                 ns_dtype: str | None = "bfloat16", adamw_lr: float | None = None,
                 adamw_betas: tuple[float, float] = (0.9, 0.95), adamw_eps: float = 1e-8, foreach: bool = True) -> None:
        if lr < 0 or weight_decay < 0 or alpha < 0 or eps < 0:
            raise ValueError(f"need lr, weight_decay, alpha, eps >= 0, got {lr}, {weight_decay}, {alpha}, {eps}")
        if len(betas) != 3 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be three numbers in [0, 1), got {betas}")
        if slow_period < 1:
            raise ValueError(f"slow_period must be >= 1, got {slow_period}")
        if accumulate not in ACCUMULATE:
            raise ValueError(f"accumulate must be one of {ACCUMULATE}, got {accumulate!r}")
        if update_rms is not None and update_rms <= 0:
            raise ValueError(f"update_rms must be positive or None, got {update_rms}")
        defaults = dict(lr=lr, betas=tuple(betas), alpha=alpha, eps=eps, slow_period=slow_period, accumulate=accumulate,
                        update_rms=update_rms, weight_decay=weight_decay, ns_steps=ns_steps,
                        ns_coefficients=tuple(ns_coefficients), ns_eps=ns_eps, ns_dtype=ns_dtype,
                        adamw_betas=tuple(adamw_betas), adamw_eps=adamw_eps, foreach=foreach)
        super().__init__(params, defaults, adamw_lr)

    def _orthogonal_step(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        beta1, beta2, beta3 = group["betas"]
        lr, weight_decay, ema = group["lr"], group["weight_decay"], group["accumulate"] == "ema"
        states = []
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = 0
                for name in ("fast", "second_moment", "slow", "slow_update", "chunk_grad_sum"):
                    state[name] = torch.zeros_like(p)
            state["step"] += 1
            states.append(state)
        fast = [s["fast"] for s in states]
        second = [s["second_moment"] for s in states]
        if ema:
            torch._foreach_lerp_(fast, grads, 1 - beta1)
            torch._foreach_mul_(second, beta2)
            torch._foreach_addcmul_(second, grads, grads, 1 - beta2)
        else:
            torch._foreach_add_(fast, grads, alpha=beta1)
            torch._foreach_addcmul_(second, grads, grads, beta2)
        torch._foreach_add_([s["chunk_grad_sum"] for s in states], grads)
        updates = orthogonalise(fast, group)
        denoms = torch._foreach_sqrt(second)
        if ema:
            torch._foreach_div_(denoms, [(1 - beta2 ** s["step"]) ** 0.5 for s in states])
        torch._foreach_add_(denoms, group["eps"])
        torch._foreach_add_(updates, [s["slow_update"] for s in states], alpha=group["alpha"])
        torch._foreach_div_(updates, denoms)
        if group["update_rms"] is not None:
            norms = torch.stack([gathered(n) for n in torch._foreach_norm(updates)])
            sizes = norms.new_tensor([u.numel() ** 0.5 for u in updates])
            torch._foreach_mul_(updates, (group["update_rms"] * sizes / norms.clamp(min=1e-30)).tolist())
        if weight_decay:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        torch._foreach_add_(params, updates, alpha=-lr)
        refresh = [s for s in states if s["step"] % group["slow_period"] == 0]
        if refresh:
            self._refresh_slow(group, refresh, beta3, ema)

    @staticmethod
    def _refresh_slow(group: dict[str, Any], states: list[dict[str, Any]], beta3: float, ema: bool) -> None:
        """Algorithm 1 lines 3-4: fold the finished chunk's gradient sum into ``M2``, re-orthogonalise."""
        for s in states:
            if ema:
                s["slow"].lerp_(s["chunk_grad_sum"], 1 - beta3)
            else:
                s["slow"].add_(s["chunk_grad_sum"], alpha=beta3)
            s["chunk_grad_sum"].zero_()
        for s, o2 in zip(states, orthogonalise([s["slow"] for s in states], group)):
            s["slow_update"].copy_(o2)

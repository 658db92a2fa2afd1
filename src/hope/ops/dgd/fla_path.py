"""Optional GPU path: run ``rule="dgd"`` through flash-linear-attention's ``chunk_gated_delta_rule``.

fla's gated delta rule, per head with state ``S: [Dk, Dv]`` (the transpose of ours), is

    S <- exp(g_t) S;   S <- S + beta_t k_t (v_t - S^T k_t)^T;   o_t = S^T (scale * q_t)

that is ``S_t^T = exp(g_t) S_{t-1}^T (I - beta_t k_t k_t^T) + beta_t v_t k_t^T``. DGD (NL Eq. 88) is
``S_t = S_{t-1} (alpha_t I - eta_t k_t k_t^T) + eta_t v_t k_t^T``, so the two agree with

    g = log(alpha),   beta = eta / alpha,   v -> alpha * v,   scale = 1,

which needs ``alpha > 0``. The path is taken only for float16 / bfloat16 CUDA inputs (fla's chunk
kernel refuses float32) with every ``alpha >= MIN_ALPHA``; anything else runs hope's own chunk form,
which is exact down to ``alpha = 0``.
"""

from __future__ import annotations

import importlib.util

import torch

MIN_ALPHA = 1e-6


def gated_delta_params(
    v: torch.Tensor, alpha: torch.Tensor, eta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Map DGD's ``(v, alpha, eta)`` onto fla's ``(v, g, beta)`` (see the module docstring)."""
    wide = torch.promote_types(alpha.dtype, torch.float32)
    alpha, eta = alpha.to(wide), eta.to(wide)
    scaled_v = (alpha.unsqueeze(-1) * v.to(wide)).to(v.dtype)
    return scaled_v, torch.log(alpha), (eta / alpha).to(v.dtype)


def fla_applies(q: torch.Tensor, alpha: torch.Tensor, rule: str) -> bool:
    """Whether :func:`dgd_fla` may run these inputs (CUDA, fla installed, half precision, alpha > 0)."""
    return (
        rule == "dgd"
        and q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16)
        and q.shape[-1] <= 256
        and importlib.util.find_spec("fla") is not None
        and bool((alpha >= MIN_ALPHA).all())
    )


def dgd_fla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha: torch.Tensor,
    eta: torch.Tensor,
    state: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DGD through fla; ``state: [B, H, Dv, Dk]`` in float32. Returns ``o`` and the final state."""
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    scaled_v, g, beta = gated_delta_params(v, alpha, eta)
    o, final = chunk_gated_delta_rule(
        q,
        k,
        scaled_v,
        g=g,
        beta=beta,
        scale=1.0,
        initial_state=state.transpose(-1, -2).contiguous(),
        output_final_state=True,
    )
    return o, final.transpose(-1, -2)

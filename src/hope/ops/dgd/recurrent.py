"""Token-by-token form of the linear DGD family, for decoding (NL Eqs. 57, 64 and 88).

Each step is written in delta-rule form, ``S <- alpha S + eta (v - S k) k^T`` (``rule="dgd"``) or
``S <- alpha S + eta v k^T`` (``rule="gd"``), then ``o = S q``: ``O(Dk Dv)`` work and memory per
token and head, whatever the position.
"""

from __future__ import annotations

import torch


def dgd_step(
    state: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha: torch.Tensor,
    eta: torch.Tensor,
    rule: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token: ``state: [B, H, Dv, Dk]``, ``q, k: [B, H, Dk]``, ``v: [B, H, Dv]``,
    ``alpha, eta: [B, H]``. Returns ``o: [B, H, Dv]`` and the new state."""
    target = v
    if rule == "dgd":
        target = v - torch.einsum("bhvk,bhk->bhv", state, k)
    state = alpha[..., None, None] * state + (eta[..., None] * target).unsqueeze(-1) * k.unsqueeze(-2)
    return torch.einsum("bhvk,bhk->bhv", state, q), state


def dgd_recurrent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha: torch.Tensor,
    eta: torch.Tensor,
    rule: str,
    state: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply :func:`dgd_step` to each of the ``T`` tokens in turn (same shapes as ``dgd_naive``)."""
    outputs = []
    for q_t, k_t, v_t, a_t, e_t in zip(*(x.unbind(1) for x in (q, k, v, alpha, eta))):
        o_t, state = dgd_step(state, q_t, k_t, v_t, a_t, e_t, rule)
        outputs.append(o_t)
    return torch.stack(outputs, dim=1), state

"""Per-token reference for the linear DGD family (the ground truth for the fast forms).

Per batch element and head, with ``S_0`` given or zero (``S: [Dv, Dk]``):

* ``rule="dgd"`` (delta gradient descent, NL Eqs. 57 and 88; the gated delta rule):
  ``S_t = S_{t-1} (alpha_t I - eta_t k_t k_t^T) + eta_t v_t k_t^T``
* ``rule="gd"`` (Hebbian memory / linear attention with decay, NL Eq. 64):
  ``S_t = alpha_t S_{t-1} + eta_t v_t k_t^T``

and ``o_t = S_t q_t``. The loop below writes the product with the transition matrix out as its
rank-one expansion, ``alpha S - eta (S k) k^T``, so it costs ``O(Dk Dv)`` per token.
"""

from __future__ import annotations

import torch


def dgd_naive(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha: torch.Tensor,
    eta: torch.Tensor,
    rule: str,
    state: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the recurrence token by token.

    ``q, k: [B, T, H, Dk]``, ``v: [B, T, H, Dv]``, ``alpha, eta: [B, T, H]`` and
    ``state: [B, H, Dv, Dk]`` all in the state dtype. Returns ``o: [B, T, H, Dv]`` and the final
    state ``[B, H, Dv, Dk]``. Tokens are taken with one ``unbind`` per input (indexing token by
    token would make the backward quadratic in ``T``).
    """
    outputs = []
    for q_t, k_t, v_t, a_t, e_t in zip(*(x.unbind(1) for x in (q, k, v, alpha, eta))):
        a_t, e_t = a_t[..., None, None], e_t[..., None, None]
        write = e_t * v_t.unsqueeze(-1) * k_t.unsqueeze(-2)
        if rule == "dgd":
            erase = e_t * (state @ k_t.unsqueeze(-1)) * k_t.unsqueeze(-2)
            state = a_t * state - erase + write
        else:
            state = a_t * state + write
        outputs.append((state @ q_t.unsqueeze(-1)).squeeze(-1))
    return torch.stack(outputs, dim=1), state

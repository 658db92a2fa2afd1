"""Linear DGD memory update (NL Eqs. 57, 64, 88): the gated delta rule and its no-DGD ablation.

    from hope.ops.dgd import dgd
    o, final_state = dgd(q, k, v, alpha, eta, rule="dgd", initial_state=None,
                         output_final_state=False, chunk_size=64, mode="chunk")

Per batch element and head, with ``S: [Dv, Dk]`` starting at ``initial_state`` (or zero):

* ``rule="dgd"``: ``S_t = S_{t-1} (alpha_t I - eta_t k_t k_t^T) + eta_t v_t k_t^T``
* ``rule="gd"``:  ``S_t = alpha_t S_{t-1} + eta_t v_t k_t^T``

and ``o_t = S_t q_t``. The three modes compute the same function: ``naive`` (per-token reference),
``chunk`` (WY / UT transform, chunk-parallel; the default) and ``recurrent`` (one token at a time,
for decoding).

Defaults (the rule of ``hope.ops.mlp_memory``: an option that chooses the function has a default only where it
is what the models use by default): ``rule="dgd"`` is NL Eq. 88 itself, what Gated DeltaNet and Hope's linear
memories run unless the "w/o DGD" ablation (``HopeConfig.dgd=False``) asks for ``"gd"``; ``initial_state=None``
is an empty memory; ``chunk_size``, ``mode`` and ``output_final_state`` only choose how it is computed and
returned. On CUDA with flash-linear-attention installed, ``mode="chunk"`` on float16 /
bfloat16 inputs runs fla's ``chunk_gated_delta_rule`` (see ``fla_path``).
"""

from __future__ import annotations

import torch

from hope.ops.dgd._checks import check_dgd_args, state_dtype
from hope.ops.dgd.chunk import dgd_chunk
from hope.ops.dgd.fla_path import dgd_fla, fla_applies
from hope.ops.dgd.naive import dgd_naive
from hope.ops.dgd.recurrent import dgd_recurrent, dgd_step

__all__ = ["dgd", "dgd_step"]


def dgd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha: torch.Tensor,
    eta: torch.Tensor,
    *,
    rule: str = "dgd",
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
    mode: str = "chunk",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run the linear DGD memory over a sequence (NL Eq. 88; ``rule="gd"`` is NL Eq. 64).

    Args:
        q, k: ``[B, T, H, Dk]`` queries and keys. ``v``: ``[B, T, H, Dv]`` values; q, k, v share a
            dtype (float16, bfloat16, float32 or float64).
        alpha: ``[B, T, H]`` retention (any real value, 0 included: with ``rule="gd"`` it wipes the
            memory at that token; with ``rule="dgd"`` it leaves ``-eta S k k^T``).
        eta: ``[B, T, H]`` step size.
        rule: ``"dgd"`` (delta gradient descent) or ``"gd"`` (Hebbian, the no-DGD ablation).
        initial_state: ``[B, H, Dv, Dk]`` memory before the first token, zero if ``None``.
        output_final_state: return the memory after the last token (else ``None``).
        chunk_size: tokens per chunk for ``mode="chunk"`` (the result does not depend on it).
        mode: ``"chunk"``, ``"naive"`` or ``"recurrent"``.

    Returns:
        ``o: [B, T, H, Dv]`` in the dtype of ``q``, and the final state ``[B, H, Dv, Dk]`` (or
        ``None``) in the state dtype: float64 if any input is float64, else float32.

    Gradients flow to every tensor argument, ``initial_state`` included (second order too). With
    gradients, ``mode="chunk"`` keeps only its inputs and one state per ~1024-token segment for the
    backward and recomputes the rest (activation checkpointing).
    """
    check_dgd_args(q, k, v, alpha, eta, rule, initial_state, chunk_size, mode)
    out_dtype, dtype = q.dtype, state_dtype(q, alpha, eta, initial_state)
    b, _, h, dk = q.shape
    dv = v.shape[-1]
    if initial_state is None:
        state = q.new_zeros(b, h, dv, dk, dtype=dtype)
    else:
        state = initial_state.to(dtype)
    if mode == "chunk" and fla_applies(q, alpha, rule):
        o, state = dgd_fla(q, k, v, alpha, eta, state)
        return o, state if output_final_state else None
    q, k, v, alpha, eta = (x.to(dtype) for x in (q, k, v, alpha, eta))
    if mode == "naive":
        o, state = dgd_naive(q, k, v, alpha, eta, rule, state)
    elif mode == "recurrent":
        o, state = dgd_recurrent(q, k, v, alpha, eta, rule, state)
    else:
        o, state = dgd_chunk(q, k, v, alpha, eta, rule, state, chunk_size)
    return o.to(out_dtype), state if output_final_state else None

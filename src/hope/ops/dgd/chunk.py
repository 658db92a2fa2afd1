"""Chunk-parallel form of the linear DGD family: WY representation / UT transform (NL Eq. 88).

Cut the sequence into chunks of ``C`` tokens. Inside a chunk with entering state ``S_0``, write each
step as ``S_t = alpha_t S_{t-1} + u_t k_t^T`` with ``u_t = eta_t (v_t - S_{t-1} k_t)`` (``rule="dgd"``)
or ``u_t = eta_t v_t`` (``rule="gd"``). Unrolling with the decay products
``G[t, j] = alpha_{j+1} ... alpha_t`` (``G[t, t] = 1``) gives

    S_t = G[t, 0] S_0 + sum_{j <= t} G[t, j] u_j k_j^T,        o_t = S_t q_t,

and, substituting ``S_{t-1}`` into ``u_t``, the unit lower-triangular system

    (I + A) U = diag(eta) V - diag(eta * G[t-1, 0]) K S_0^T,
    A[t, j] = eta_t G[t-1, j] (k_t . k_j)   for j < t.

So ``U = U_v - W S_0^T`` with ``U_v, W`` from one triangular solve per chunk, done for all chunks at
once; only the short loop that carries ``S_0`` from chunk to chunk is sequential:

    O = diag(G[:, 0]) Q S_0^T + (tril(Q K^T) * G) U,     S_C = G[C, 0] S_0 + U^T diag(G[C, :]) K.

Decays. ``G`` is built by a running product down the columns of a ``(C + 1) x (C + 1)`` matrix, never
as a ratio ``b_t / b_j`` of cumulative products and never through ``log(alpha)``. Each entry is an
honest product of the alphas between two positions, so products of tiny alphas underflow to 0
(as they do in the recurrence) instead of producing ``inf / inf`` or ``nan``; ``alpha = 0`` is exact,
and so is any real alpha (even > 1 or negative), with gradients that match the recurrence.

A short last chunk is padded with identity steps (``alpha = 1``, ``eta = 0``, zero ``k, v, q``) that
leave the state unchanged; their outputs are dropped.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

SEGMENT_TOKENS = 1024


def _to_chunks(x: torch.Tensor, chunk: int, pad: int, fill: float) -> torch.Tensor:
    """``[B, T, H, ...]`` -> ``[B, H, N, C, ...]``, padding the time axis with ``fill``."""
    if pad:
        shape = list(x.shape)
        shape[1] = pad
        x = torch.cat([x, x.new_full(shape, fill)], dim=1)
    b, t, h = x.shape[:3]
    x = x.reshape(b, t // chunk, chunk, h, *x.shape[3:])
    return x.movedim(3, 1).contiguous()


def decay_products(alpha: torch.Tensor) -> torch.Tensor:
    """``alpha: [..., C]`` -> ``G: [..., C + 1, C + 1]``, ``G[i, j] = alpha_{j+1} ... alpha_i`` for
    ``i >= j`` (empty product 1) and 0 above the diagonal; index 0 is the chunk start."""
    c = alpha.shape[-1]
    padded = torch.cat([alpha.new_ones(*alpha.shape[:-1], 1), alpha], dim=-1)
    strict_upper = torch.ones(c + 1, c + 1, dtype=torch.bool, device=alpha.device).triu(1)
    factors = torch.where(strict_upper, padded.unsqueeze(-2), padded.new_ones(()))
    return torch.cumprod(factors, dim=-1).triu().transpose(-1, -2)


def _ut_transform(
    k: torch.Tensor, eta: torch.Tensor, decays: torch.Tensor, written: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``(I + A) [U_v, W] = [diag(eta) V, diag(eta G[t-1, 0]) K]`` for every chunk at once;
    ``written`` is ``diag(eta) V``. Returns ``U_v`` and ``W``."""
    coupling = eta.unsqueeze(-1) * decays[..., :-1, 1:] * (k @ k.transpose(-1, -2))
    erase = (eta * decays[..., :-1, 0]).unsqueeze(-1) * k
    # Solved as X (I + A)^T = [..]^T, which LAPACK handles faster here than the left-sided solve.
    solved = torch.linalg.solve_triangular(
        coupling.transpose(-1, -2),
        torch.cat([written, erase], dim=-1).transpose(-1, -2),
        upper=True,
        left=False,
        unitriangular=True,
    ).transpose(-1, -2)
    return solved.split([written.shape[-1], k.shape[-1]], dim=-1)


def dgd_chunk(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha: torch.Tensor,
    eta: torch.Tensor,
    rule: str,
    state: torch.Tensor,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked DGD; same arguments and results as :func:`hope.ops.dgd.naive.dgd_naive`.

    When gradients are needed and the sequence is longer than one segment of about ``SEGMENT_TOKENS``
    tokens (whole chunks), each segment runs under activation checkpointing: autograd keeps only the
    inputs and the state entering each segment, and recomputes a segment's intermediates in the backward.
    """
    tensors = (q, k, v, alpha, eta, state)
    span = max(1, SEGMENT_TOKENS // chunk_size) * chunk_size
    if q.shape[1] <= span or not (torch.is_grad_enabled() and any(x.requires_grad for x in tensors)):
        return _chunked(q, k, v, alpha, eta, rule, state, chunk_size)
    outputs = []
    for start in range(0, q.shape[1], span):
        pieces = (x[:, start : start + span] for x in (q, k, v, alpha, eta))
        o, state = checkpoint(
            _chunked, *pieces, rule, state, chunk_size, use_reentrant=False, preserve_rng_state=False
        )
        outputs.append(o)
    return torch.cat(outputs, dim=1), state


def _chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha: torch.Tensor,
    eta: torch.Tensor,
    rule: str,
    state: torch.Tensor,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chunk algorithm of the module docstring over one stretch of the sequence."""
    length = q.shape[1]
    chunk = min(chunk_size, length)
    n_chunks = -(-length // chunk)
    pad = n_chunks * chunk - length
    q, k, v = (_to_chunks(x, chunk, pad, 0.0) for x in (q, k, v))
    alpha, eta = _to_chunks(alpha, chunk, pad, 1.0), _to_chunks(eta, chunk, pad, 0.0)

    decays = decay_products(alpha)
    keys_to_end = k * decays[..., -1, 1:].unsqueeze(-1)
    chunk_decays = decays[..., -1, 0].unbind(2)
    updates = eta.unsqueeze(-1) * v
    entering = []
    if rule == "dgd":
        base, erase = _ut_transform(k, eta, decays, updates)
        per_chunk = []
        for base_n, erase_n, keys_n, decay_n in zip(
            base.unbind(2), erase.unbind(2), keys_to_end.unbind(2), chunk_decays
        ):
            entering.append(state)
            per_chunk.append(base_n - erase_n @ state.transpose(-1, -2))
            state = decay_n[..., None, None] * state + per_chunk[-1].transpose(-1, -2) @ keys_n
        updates = torch.stack(per_chunk, dim=2)
    else:
        for chunk_write, decay_n in zip((updates.transpose(-1, -2) @ keys_to_end).unbind(2), chunk_decays):
            entering.append(state)
            state = decay_n[..., None, None] * state + chunk_write

    scores = (q @ k.transpose(-1, -2)) * decays[..., 1:, 1:]
    carried = q @ torch.stack(entering, dim=2).transpose(-1, -2)
    o = decays[..., 1:, 0].unsqueeze(-1) * carried + scores @ updates
    b, h = o.shape[:2]
    o = o.movedim(1, 3).reshape(b, n_chunks * chunk, h, -1)[:, :length]
    return o, state

"""Chunk-parallel form of the deep (MLP) DGD memory (NL Eqs. 90-91).

Inside a chunk of ``C`` tokens every read, every layer input ``u`` and every error ``delta`` is
computed at the chunk-start weights, so they come out of one batched pass of the MLP over the chunk
(:func:`~hope.ops.mlp_memory.residual_mlp.read_and_errors`). Each layer then folds the chunk in with
DGD token after token, which is the linear DGD op (gated delta rule) with keys ``u`` and values
``-delta``, started from the chunk-start weights. Only the loop over the ``T / C`` chunks is
sequential.

Layer W2 (``[E, D]``) has the keys themselves as inputs, so its fold over a chunk is a fixed linear
map of the chunk-start weights and the values, known before the loop (the chunk's transfer):

    W2_end = W2_start Phi - delta2^T P,       Phi: [D, D],   P: [C, D],

where ``Phi`` is the product of the chunk's ``alpha_t I - eta'_t k_t k_t^T`` and ``P`` carries each
token's write to the chunk end. Both come from one call of :func:`hope.ops.dgd.dgd` over all chunks at
once: the fold is linear in (initial state, values), so starting from ``[0; I]`` with the basis
vectors ``[e_t; 0]`` as values ends in ``[P; Phi]``.

Layer W1 (``[D, E]``) has inputs ``h = silu(W2 k)`` that depend on the chunk-start weights, so it is
folded inside the loop with the WY / UT form of the gated delta rule, keeping only the end state:
with ``G[i, j] = alpha_{j+1} ... alpha_i`` (``hope.ops.dgd.chunk.decay_products``) and

    (I + A) [X | Y] = [diag(eta') g | diag(eta' G[t-1, 0]) h],   A[t, j] = eta'_t G[t-1, j] (h_t . h_j), j < t,

the chunk end is ``W1_end = G[C, 0] W1_start - (X + Y W1_start^T)^T diag(G[C, 1:]) h``.
With ``dgd=False`` (no ``-eta' u u^T`` term) ``A`` and ``Y`` vanish.

A short last chunk is padded with identity steps (``alpha = 1``, ``eta = 0``, zero inputs).
"""

from __future__ import annotations

import torch

from hope.ops.dgd import dgd as linear_dgd
from hope.ops.dgd.chunk import decay_products
from hope.ops.mlp_memory.residual_mlp import proximal_eta, read_and_errors


def to_chunks(x: torch.Tensor, chunk: int, fill: float) -> torch.Tensor:
    """``[B, T, H, ...]`` -> ``[B, H, N, C, ...]``, padding the time axis with ``fill``."""
    b, t, h = x.shape[:3]
    pad = -t % chunk
    if pad:
        x = torch.cat([x, x.new_full((b, pad, h, *x.shape[3:]), fill)], dim=1)
    return x.reshape(b, (t + pad) // chunk, chunk, h, *x.shape[3:]).movedim(3, 1)


def chunk_transfer(
    keys: torch.Tensor, alpha: torch.Tensor, eta: torch.Tensor, rule: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Transfer of a linear DGD fold over each chunk: ``S_end = S_start Phi + V^T P`` for any start
    state ``S_start: [Dv, Dk]`` and values ``V: [C, Dv]``.

    ``keys: [B, H, N, C, Dk]``, ``alpha, eta: [B, H, N, C]``, ``rule`` as in :func:`hope.ops.dgd.dgd`.
    Returns ``Phi: [B, H, N, Dk, Dk]`` and ``P: [B, H, N, C, Dk]``.
    """
    b, h, n, c, dk = keys.shape
    flat_keys = keys.movedim(1, 3).reshape(b * n, c, h, dk)
    flat_alpha, flat_eta = (x.movedim(1, 3).reshape(b * n, c, h) for x in (alpha, eta))
    basis = torch.eye(c, c + dk, dtype=keys.dtype, device=keys.device)
    values = basis[None, :, None, :].expand(b * n, c, h, c + dk)
    start = torch.eye(c + dk, dtype=keys.dtype, device=keys.device)[:, c:].expand(b * n, h, c + dk, dk)
    _, end = linear_dgd(
        flat_keys, flat_keys, values, flat_alpha, flat_eta,
        rule=rule, initial_state=start, output_final_state=True, chunk_size=c,
    )
    end = end.reshape(b, n, h, c + dk, dk).movedim(2, 1)
    return end[..., c:, :], end[..., :c, :]


def fold_chunk_end(
    state: torch.Tensor,
    inputs: torch.Tensor,
    errors: torch.Tensor,
    decays: torch.Tensor,
    eta: torch.Tensor,
    dgd: bool,
) -> torch.Tensor:
    """End state of ``W <- W (alpha_t I - eta_t u_t u_t^T) - eta_t delta_t u_t^T`` over one chunk
    (without the ``u u^T`` term if not ``dgd``).

    ``state: [..., Dout, Din]``, ``inputs u: [..., C, Din]``, ``errors delta: [..., C, Dout]``,
    ``decays: [..., C + 1, C + 1]`` from ``decay_products(alpha)``, ``eta: [..., C]``.
    """
    total, to_end = decays[..., -1, :1, None], decays[..., -1, 1:, None]
    if not dgd:
        return total * state - (errors * (eta[..., None] * to_end)).mT @ inputs
    coupling = (inputs @ inputs.mT) * (eta[..., None] * decays[..., :-1, 1:])
    rhs = torch.cat([eta[..., None] * errors, (eta * decays[..., :-1, 0])[..., None] * inputs], dim=-1)
    solved = torch.linalg.solve_triangular(coupling, rhs, upper=False, unitriangular=True)
    written, erased = solved.split([errors.shape[-1], inputs.shape[-1]], dim=-1)
    return total * state - (written + erased @ state.mT).mT @ (inputs * to_end)


def mlp_memory_chunk(
    q: torch.Tensor,
    k: torch.Tensor,
    v_hat: torch.Tensor,
    alpha: torch.Tensor,
    eta: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    objective: str,
    proximal: bool,
    dgd: bool,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chunked deep DGD memory; same arguments and results as
    :func:`hope.ops.mlp_memory.naive.mlp_memory_naive`."""
    length = q.shape[1]
    c = min(chunk_size, length)
    q, k, v_hat = (to_chunks(x, c, 0.0) for x in (q, k, v_hat))
    alpha, eta = to_chunks(alpha, c, 1.0), to_chunks(eta, c, 0.0)

    phi, writes = chunk_transfer(k, alpha, proximal_eta(eta, k) if proximal else eta, "dgd" if dgd else "gd")
    decays = decay_products(alpha)
    per_chunk = zip(
        torch.cat([q, k], dim=-2).unbind(2), v_hat.unbind(2), eta.unbind(2),
        decays.unbind(2), phi.unbind(2), writes.unbind(2), strict=True,
    )
    reads = []
    for x_n, v_n, eta_n, decays_n, phi_n, writes_n in per_chunk:
        o_n, h, g, delta2 = read_and_errors(w1, w2, x_n, c, v_n, objective)
        reads.append(o_n)
        eta1 = proximal_eta(eta_n, h) if proximal else eta_n
        w1, w2 = fold_chunk_end(w1, h, g, decays_n, eta1, dgd), w2 @ phi_n - delta2.mT @ writes_n
    o = torch.stack(reads, dim=2)
    b, h, n = o.shape[:3]
    return o.movedim(1, 3).reshape(b, n * c, h, -1)[:, :length], w1, w2

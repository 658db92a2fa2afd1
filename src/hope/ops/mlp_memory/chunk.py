"""Chunk-parallel form of the deep (MLP) DGD memory (NL Eqs. 90-91).

Inside a chunk of ``C`` tokens every layer input ``u`` and every error ``delta`` is computed at the chunk-start
weights, so they come out of one batched pass of the MLP over the chunk's queries and keys
(:func:`~hope.ops.mlp_memory.residual_mlp.read_and_errors`). Each layer then folds the chunk in with DGD token after
token: the gated delta rule (``hope.ops.dgd``) with keys ``u`` and values ``-delta``, started from the chunk-start
weights. Only the loop over the ``T / C`` chunks is sequential; a chunk costs one MLP pass, one ``C x C`` unit
lower-triangular solve per layer and a few matrix products (:func:`fold_chunk`).

The fold of one layer in WY / UT form. With ``G[i, j] = alpha_{j+1} ... alpha_i`` (``G[i, i] = 1``, zero above the
diagonal; index 0 is the chunk start, index ``t + 1`` the state after token ``t``;
``hope.ops.dgd.chunk.decay_products``) the step ``S_t = alpha_t S_{t-1} - R_t u_t^T`` with
``R_t = eta_t (delta_t + S_{t-1} u_t)`` unrolls to

    S_t = G[t, 0] S - sum_{j <= t} G[t, j] R_j u_j^T,
    (I + A) R = diag(eta) (delta + diag(G[:-1, 0]) U S^T),   A[t, j] = eta_t G[t-1, j] (u_t . u_j)  (j < t)

(``A = 0`` without the DGD term; ``U``: inputs ``[C, Din]``, ``delta``: errors ``[C, Dout]``). So the end state is
``S_end = G[C, 0] S - R^T diag(G[C, 1:]) U`` and the state after each token reads any ``x_t`` as

    S_t x_t = G[t, 0] S x_t - ((X U^T) * G[1:, 1:]) R         (read="running")
    S_{t-1} x_t = G[t-1, 0] S x_t - ((X U^T) * G[:-1, 1:]) R   (read="previous")

where the decay products themselves are the causal masks. ``U S^T`` and ``X S^T`` are products the MLP pass has
already made (``z = x W2^T`` for W2, whose inputs are the keys; ``h W1^T`` for W1), so no state is ever multiplied
per token.

``read="start"`` reads every token at the chunk-start weights (NL Eq. 90). ``read="running"``: each token reads the
memory after the updates of the tokens before it in its chunk and its own (the Titans / TTT dual form: the
gradients still come from the chunk start): W2's fold reads ``W2_t q_t``, then W1's fold reads ``W1_t a_t`` at
``a_t = silu(W2_t q_t)``. ``read="previous"`` reads ``M_{t-1}(q_t)`` (NL Eq. 94), the same two folds one state
earlier; the chunk's first token reads the chunk-start weights.

A short last chunk is padded with identity steps (``alpha = 1``, ``eta = 0``, zero inputs).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from hope.ops.dgd.chunk import decay_products
from hope.ops.mlp_memory.residual_mlp import curvature_gains, proximal_eta, read_and_errors


def to_chunks(x: torch.Tensor, chunk: int, fill: float) -> torch.Tensor:
    """``[B, T, H, ...]`` -> ``[B, H, N, C, ...]``, padding the time axis with ``fill``."""
    b, t, h = x.shape[:3]
    pad = -t % chunk
    if pad:
        x = torch.cat([x, x.new_full((b, pad, h, *x.shape[3:]), fill)], dim=1)
    return x.reshape(b, (t + pad) // chunk, chunk, h, *x.shape[3:]).movedim(3, 1)


def from_chunks(reads: list[torch.Tensor], length: int) -> torch.Tensor:
    """Per-chunk ``[B, H, C, D]`` reads back to ``[B, T, H, D]`` (the inverse of :func:`to_chunks`, padding dropped)."""
    o = torch.stack(reads, dim=2)
    b, h, n, c = o.shape[:4]
    return o.movedim(1, 3).reshape(b, n * c, h, -1)[:, :length]


class Decays(NamedTuple):
    """The parts of the decay products ``G: [..., C + 1, C + 1]`` (``decay_products(alpha)``) that a fold uses, cut
    once per chunk and shared by both layers: ``coupling = G[:-1, 1:]``, ``before = G[:-1, :1]``,
    ``running = G[1:, 1:]``, ``running_start = G[1:, :1]``, ``to_end = G[-1, 1:, None]``, ``total = G[-1:, :1]``."""

    coupling: torch.Tensor
    before: torch.Tensor
    running: torch.Tensor
    running_start: torch.Tensor
    to_end: torch.Tensor
    total: torch.Tensor

    @classmethod
    def of(cls, alpha: torch.Tensor) -> Decays:
        """``alpha: [..., C]`` (the retention of each token of a chunk)."""
        g = decay_products(alpha)
        return cls(g[..., :-1, 1:], g[..., :-1, :1], g[..., 1:, 1:], g[..., 1:, :1], g[..., -1, 1:, None],
                   g[..., -1:, :1])


def fold_layer(
    state: torch.Tensor,
    inputs: torch.Tensor,
    state_inputs: torch.Tensor,
    errors: torch.Tensor,
    decays: Decays,
    eta: torch.Tensor,
    dgd: bool,
    queries: torch.Tensor | None = None,
    state_queries: torch.Tensor | None = None,
    previous: bool = False,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """``S <- S (alpha_t I - eta_t u_t u_t^T) - eta_t delta_t u_t^T`` over one chunk (without the ``u u^T`` term if
    not ``dgd``), in the WY form of the module docstring.

    ``state S: [..., Dout, Din]``, ``inputs u: [..., C, Din]``, ``state_inputs = u S^T: [..., C, Dout]``,
    ``errors delta: [..., C, Dout]``, ``decays``: :class:`Decays` of the chunk's ``alpha``,
    ``eta: [..., C]``; optional ``queries x: [..., C, Din]`` with ``state_queries = x S^T``. Returns the reads
    ``S_t x_t`` (``S_{t-1} x_t`` if ``previous``; ``None`` without queries) and the end state.
    """
    eta = eta[..., None]
    if dgd:
        coupling = (inputs @ inputs.mT) * (eta * decays.coupling)
        rhs = eta * torch.addcmul(errors, decays.before, state_inputs)
        written = torch.linalg.solve_triangular(coupling, rhs, upper=False, unitriangular=True)
    else:
        written = eta * errors
    end = decays.total * state - written.mT @ (inputs * decays.to_end)
    if queries is None:
        return None, end
    seen, seen_start = (decays.coupling, decays.before) if previous else (decays.running, decays.running_start)
    return seen_start * state_queries - ((queries @ inputs.mT) * seen) @ written, end


def fold_chunk(
    w1: torch.Tensor, w2: torch.Tensor, q: torch.Tensor | None, k: torch.Tensor, v_hat: torch.Tensor, eta: torch.Tensor,
    decays: Decays, objective: str, proximal: bool, dgd: bool, curvature: bool, read: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One chunk of the deep memory: ``w1: [..., D, E]``, ``w2: [..., E, D]``, ``q, k, v_hat: [..., C, D]``
    (``q=None``: the queries are the keys), ``eta: [..., C]``, the :class:`Decays` of its ``alpha``. Returns the reads
    ``[..., C, D]`` and the end weights."""
    c = k.shape[-2]
    if q is None:  # the queries are the keys: one MLP pass over them gives the reads too
        _, z_k, h, w1_h, g, delta2 = read_and_errors(w1, w2, k, 0, v_hat, objective)
        q, z_q, start_reads = k, z_k, k + w1_h
    else:
        start_reads, z, h, w1_h, g, delta2 = read_and_errors(w1, w2, torch.cat([q, k], dim=-2), c, v_hat, objective)
        z_q, z_k = z[..., :c, :], z[..., c:, :]
    gain1, gain2 = curvature_gains(w1, objective) if curvature and proximal else (0.0, 0.0)
    eta1 = proximal_eta(eta, h, gain1) if proximal else eta
    eta2 = proximal_eta(eta, k, gain2[..., None] if torch.is_tensor(gain2) else gain2) if proximal else eta
    if read == "start":
        _, w2_end = fold_layer(w2, k, z_k, delta2, decays, eta2, dgd)
        _, w1_end = fold_layer(w1, h, w1_h, g, decays, eta1, dgd)
        return start_reads, w1_end, w2_end
    previous = read == "previous"
    hidden_reads, w2_end = fold_layer(w2, k, z_k, delta2, decays, eta2, dgd, q, z_q, previous)
    hidden = F.silu(hidden_reads)
    reads, w1_end = fold_layer(w1, h, w1_h, g, decays, eta1, dgd, hidden, hidden @ w1.mT, previous)
    return q + reads, w1_end, w2_end


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
    curvature: bool,
    read: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chunked deep DGD memory; same arguments and results as
    :func:`hope.ops.mlp_memory.naive.mlp_memory_naive`."""
    length = q.shape[1]
    c = min(chunk_size, length)
    queries = [None] * -(-length // c) if q is k else to_chunks(q, c, 0.0).unbind(2)
    k, v_hat = (to_chunks(x, c, 0.0) for x in (k, v_hat))
    eta, decays = to_chunks(eta, c, 0.0), Decays.of(to_chunks(alpha, c, 1.0))
    reads = []
    for q_n, k_n, v_n, eta_n, *decays_n in zip(queries, k.unbind(2), v_hat.unbind(2), eta.unbind(2),
                                                *(part.unbind(2) for part in decays), strict=True):
        decays_n = Decays(*decays_n)
        o_n, w1, w2 = fold_chunk(w1, w2, q_n, k_n, v_n, eta_n, decays_n, objective, proximal, dgd, curvature, read)
        reads.append(o_n)
    return from_chunks(reads, length), w1, w2

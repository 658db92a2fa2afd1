"""Chunk-parallel form of the deep (MLP) DGD memory (NL Eqs. 90-91).

Inside a chunk of ``C`` tokens every read, every layer input ``u`` and every error ``delta`` is
computed at the chunk-start weights, so they come out of one batched pass of the MLP over the chunk
(:func:`~hope.ops.mlp_memory.residual_mlp.read_and_errors`). Each layer then folds the chunk in with
DGD token after token: the gated delta rule (``hope.ops.dgd``) with keys ``u`` and values ``-delta``,
started from the chunk-start weights. Only the loop over the ``T / C`` chunks is sequential.

The fold in WY / UT form. With ``G[i, j] = alpha_{j+1} ... alpha_i`` (``G[i, i] = 1``; index 0 is
the chunk start; ``hope.ops.dgd.chunk.decay_products``) and the unit lower-triangular

    (I + A),   A[t, j] = eta_t G[t-1, j] (u_t . u_j)   for j < t   (0 without the DGD term),

a start state ``S`` ends the chunk as ``S_end = G[C, 0] S - R^T diag(G[C, 1:]) U`` with
``(I + A) R = diag(eta) (delta + diag(G[:-1, 0]) U S^T)`` (``U``: inputs ``[C, Din]``, ``delta``:
errors ``[C, Dout]``). Two layers, two uses:

* W1 (``[D, E]``, inputs ``h = silu(W2 k)``): the inputs depend on the chunk-start weights, so the
  solve is done per chunk, inside the loop; ``U S^T = h W1^T`` is already known from the forward pass.
* W2 (``[E, D]``, inputs ``k``): everything but the errors is known before the loop, so the fold is
  a fixed linear map per chunk, computed for all chunks at once (the chunk's transfer):
  ``W2_end = W2 Phi - delta2^T P``, ``Phi = G[C, 0] I - X^T diag(G[C, 1:]) K`` with
  ``(I + A) X = diag(eta G[:-1, 0]) K``, and ``P = diag(eta) (I + A)^{-T} diag(G[C, 1:]) K``.

With ``curvature`` the W2 step sizes depend on W1 at the chunk start, so W2's transfer is computed per
chunk, inside the loop.

``read="running"``: each token reads the memory after the updates of the tokens before it in its chunk and
its own (the Titans / TTT dual form: the gradients still come from the chunk start). Per layer that read is the
linear DGD op's output ``S_t x_t``, so each chunk is two calls of :func:`hope.ops.dgd.dgd`: W2 with keys ``k``,
values ``-delta2`` and queries ``q``; then W1 with keys ``h``, values ``-g`` and queries ``silu(W2_t q_t)``.

``read="previous"``: token ``t`` reads ``M_{t-1}(q_t)``, the weights after the tokens before it and not its own
update (NL Eq. 94). The same two folds give it with the queries moved one token earlier: position ``j`` of the
folds reads ``q_{j+1}`` at ``W_j``, which is token ``j + 1``'s read; the chunk's first token reads the chunk-start
weights.

A short last chunk is padded with identity steps (``alpha = 1``, ``eta = 0``, zero inputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hope.ops.dgd import dgd as linear_dgd
from hope.ops.dgd.chunk import decay_products
from hope.ops.mlp_memory.residual_mlp import curvature_gains, proximal_eta, read_and_errors, residual_mlp


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


def _coupling(inputs: torch.Tensor, decays: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
    """``A[t, j] = eta_t G[t-1, j] (u_t . u_j)``, zero on and above the diagonal: ``[..., C, C]``."""
    return (inputs @ inputs.mT) * (eta[..., None] * decays[..., :-1, 1:])


def _solve_unit_lower(coupling: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``(I + A)^{-1} rhs`` for the strictly lower ``A`` of :func:`_coupling`."""
    return torch.linalg.solve_triangular(coupling, rhs, upper=False, unitriangular=True)


def chunk_transfer(
    keys: torch.Tensor, alpha: torch.Tensor, eta: torch.Tensor, dgd: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Transfer of the fold over each chunk for fixed inputs ``keys``: for any start state
    ``S: [Dout, Dk]`` and errors ``delta: [C, Dout]``, ``S_end = S Phi - delta^T P``.

    ``keys: [..., C, Dk]``, ``alpha, eta: [..., C]``. Returns ``Phi: [..., Dk, Dk]`` and
    ``P: [..., C, Dk]``.
    """
    decays = decay_products(alpha)
    to_end = keys * decays[..., -1, 1:, None]
    eye = torch.eye(keys.shape[-1], dtype=keys.dtype, device=keys.device)
    total = decays[..., -1, 0, None, None] * eye
    if not dgd:
        return total, eta[..., None] * to_end
    coupling = _coupling(keys, decays, eta)
    erased = _solve_unit_lower(coupling, (eta * decays[..., :-1, 0])[..., None] * keys)
    writes = eta[..., None] * torch.linalg.solve_triangular(coupling.mT, to_end, upper=True, unitriangular=True)
    return total - erased.mT @ to_end, writes


def fold_chunk_end(
    state: torch.Tensor,
    inputs: torch.Tensor,
    state_inputs: torch.Tensor,
    errors: torch.Tensor,
    decays: torch.Tensor,
    eta: torch.Tensor,
    dgd: bool,
) -> torch.Tensor:
    """End state of ``S <- S (alpha_t I - eta_t u_t u_t^T) - eta_t delta_t u_t^T`` over one chunk
    (without the ``u u^T`` term if not ``dgd``).

    ``state S: [..., Dout, Din]``, ``inputs u: [..., C, Din]``, ``state_inputs = u S^T: [..., C, Dout]``,
    ``errors delta: [..., C, Dout]``, ``decays: [..., C + 1, C + 1]`` from ``decay_products(alpha)``,
    ``eta: [..., C]``.
    """
    total, to_end = decays[..., -1, :1, None], decays[..., -1, 1:, None]
    if not dgd:
        return total * state - (errors * (eta[..., None] * to_end)).mT @ inputs
    rhs = eta[..., None] * (errors + decays[..., :-1, :1] * state_inputs)
    written = _solve_unit_lower(_coupling(inputs, decays, eta), rhs)
    return total * state - written.mT @ (inputs * to_end)


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
    q, k, v_hat = (to_chunks(x, c, 0.0) for x in (q, k, v_hat))
    alpha, eta = to_chunks(alpha, c, 1.0), to_chunks(eta, c, 0.0)
    if read != "start":
        return _running_reads(q, k, v_hat, alpha, eta, w1, w2, objective, proximal, dgd, curvature, length,
                              previous=read == "previous")

    adaptive = curvature and proximal and objective == "l2"
    if adaptive:
        transfers = [(None, None)] * k.shape[2]
    else:
        phi, writes = chunk_transfer(k, alpha, proximal_eta(eta, k) if proximal else eta, dgd)
        transfers = list(zip(phi.unbind(2), writes.unbind(2), strict=True))
    per_chunk = zip(
        torch.cat([q, k], dim=-2).unbind(2), v_hat.unbind(2), alpha.unbind(2), eta.unbind(2),
        decay_products(alpha).unbind(2), transfers, strict=True,
    )
    reads = []
    for x_n, v_n, alpha_n, eta_n, decays_n, (phi_n, writes_n) in per_chunk:
        gain1, gain2 = curvature_gains(w1, objective) if adaptive else (0.0, 0.0)
        o_n, h, w1_h, g, delta2 = read_and_errors(w1, w2, x_n, c, v_n, objective)
        reads.append(o_n)
        if adaptive:
            phi_n, writes_n = chunk_transfer(x_n[..., c:, :], alpha_n, proximal_eta(eta_n, x_n[..., c:, :],
                                                                                      gain2[..., None]), dgd)
        eta1 = proximal_eta(eta_n, h, gain1) if proximal else eta_n
        w1, w2 = fold_chunk_end(w1, h, w1_h, g, decays_n, eta1, dgd), w2 @ phi_n - delta2.mT @ writes_n
    return from_chunks(reads, length), w1, w2


def _running_reads(
    q: torch.Tensor, k: torch.Tensor, v_hat: torch.Tensor, alpha: torch.Tensor, eta: torch.Tensor,
    w1: torch.Tensor, w2: torch.Tensor, objective: str, proximal: bool, dgd: bool, curvature: bool, length: int,
    previous: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``read="running"`` (or ``"previous"``) over chunked inputs (``[B, H, N, C, ...]``, from :func:`to_chunks`)."""
    c, rule = q.shape[3], "dgd" if dgd else "gd"
    reads = []

    def fold(queries, keys, values, alpha_n, eta_n, state):
        seq = [x.transpose(1, 2) for x in (queries, keys, values, alpha_n, eta_n)]
        o, end = linear_dgd(*seq, rule=rule, initial_state=state, output_final_state=True, chunk_size=c)
        return o.transpose(1, 2), end

    for q_n, k_n, v_n, alpha_n, eta_n in zip(q.unbind(2), k.unbind(2), v_hat.unbind(2), alpha.unbind(2),
                                             eta.unbind(2), strict=True):
        gain1, gain2 = curvature_gains(w1, objective) if curvature and proximal else (0.0, 0.0)
        _, h, _, g, delta2 = read_and_errors(w1, w2, k_n, 0, v_n, objective)
        eta2 = proximal_eta(eta_n, k_n, gain2[..., None] if torch.is_tensor(gain2) else gain2) if proximal else eta_n
        eta1 = proximal_eta(eta_n, h, gain1) if proximal else eta_n
        queries = torch.cat([q_n[..., 1:, :], torch.zeros_like(q_n[..., :1, :])], dim=-2) if previous else q_n
        first = residual_mlp(q_n[..., :1, :], w1, w2) if previous else None
        w2_q, w2 = fold(queries, k_n, -delta2, alpha_n, eta2, w2)
        w1_h, w1 = fold(F.silu(w2_q), h, -g, alpha_n, eta1, w1)
        reads.append(torch.cat([first, q_n[..., 1:, :] + w1_h[..., :-1, :]], dim=-2) if previous else q_n + w1_h)
    return from_chunks(reads, length), w1, w2

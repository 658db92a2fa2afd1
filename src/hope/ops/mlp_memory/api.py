"""Public entry points of ``hope.ops.mlp_memory``: argument checks, dtypes and dispatch to the forms.

Defaults. An option that chooses the function (not only how it is computed) has a default only where that default
is what every model that runs the op uses by default (``proximal=True``, ``dgd=True``: NL Eqs. 56, 88). The others
(``objective``, ``chunk_size``, ``curvature``, ``read``; for the Titans rule ``chunk_size``, ``max_grad_norm``,
``read``) are chosen differently by the model configs (``HopeConfig``, ``TitansConfig``), so they are required: a
call never silently computes another memory than the model's. ``mode`` picks only the form (every mode computes the
same function); ``initial_momentum=None`` is a fresh memory's zero momentum.

A whole sequence from a chunk boundary: :func:`mlp_memory` / :func:`titans_memory`. From any state
(prompt prefill, then decoding; the streaming API that the model layers use): :func:`mlp_memory_prefill` /
:func:`titans_memory_prefill`, which finish the current chunk token by token, run the chunks that follow
(the last one possibly partial) in the requested mode, and return the full decoding state;
:func:`mlp_memory_step` / :func:`titans_memory_step` advance it by one token.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import torch

from hope.ops.mlp_memory._checks import (
    READS, TITANS_READS, check_max_grad_norm, check_options, check_read, check_sequence, check_weights, state_dtype,
)
from hope.ops.mlp_memory.chunk import mlp_memory_chunk
from hope.ops.mlp_memory.naive import mlp_memory_naive
from hope.ops.mlp_memory.recurrent import MLPMemoryState, mlp_memory_recurrent
from hope.ops.mlp_memory.titans import TitansMemoryState, titans_chunk, titans_naive, titans_recurrent

State = TypeVar("State", MLPMemoryState, TitansMemoryState)
Weights = tuple[torch.Tensor, torch.Tensor]


def mlp_memory(
    q: torch.Tensor,
    k: torch.Tensor,
    v_hat: torch.Tensor,
    alpha: torch.Tensor,
    eta: torch.Tensor,
    W1: torch.Tensor,
    W2: torch.Tensor,
    *,
    objective: str,
    chunk_size: int,
    curvature: bool,
    read: str,
    proximal: bool = True,
    dgd: bool = True,
    mode: str = "chunk",
) -> tuple[torch.Tensor, Weights]:
    """Run the deep memory ``M(x) = x + W1 silu(W2 x)`` trained in context by DGD (NL Eqs. 88-91).

    Args:
        q, k, v_hat: ``[B, T, H, D]`` queries, keys and targets (one dtype).
        alpha: ``[B, T, H]`` retention; eta: ``[B, T, H]`` step size.
        W1: ``[B, H, D, E]``, W2: ``[B, H, E, D]`` weights at the start (``[H, ...]`` is broadcast
            over the batch); each sequence then has its own copy.
        objective: ``"dot"`` (``-<M(k), v_hat>``) or ``"l2"`` (``0.5 ||M(k) - v_hat||^2``).
        proximal: step ``eta' = eta / (1 + eta ||u||^2)`` per layer (NL Eq. 56) instead of ``eta``.
        dgd: keep the ``-eta' u u^T`` term of DGD (``False``: GD with retention, the "w/o DGD" row).
        chunk_size: tokens per chunk ``C``; part of the model (reads, inputs and errors of a chunk
            use the weights from its start). ``C = 1`` is exact per-token DGD.
        mode: ``"chunk"`` (default), ``"naive"`` (per-token reference) or ``"recurrent"``.
        curvature: with ``proximal`` and ``objective="l2"``, the proximal step of each layer also counts
            the curvature of the objective along the layer's output (at the chunk-start weights):
            ``eta'_1 = eta / (1 + 2 eta ||h||^2)``, ``eta'_2 = eta / (1 + eta (1 + c^2 ||W1||_F^2) ||k||^2)``
            with ``c = max silu' = 1.0998``. Plain ``proximal`` bounds only the DGD term, so once
            ``||W1||`` grows past about 2 the W2 steps overshoot and the weights grow without bound;
            with ``curvature`` every step of the linearised layer objective is contractive.
        read: which weights token ``t`` of a chunk reads (the gradients always come from the chunk start):
            ``"start"``, the chunk-start weights (NL Eq. 90), so a token sees the other tokens of
            its chunk only through what came before the chunk; ``"previous"``, the weights after the updates of
            the chunk's tokens before ``t``, ``o_t = M_{t-1}(q_t)`` (NL Eq. 94); ``"running"``, the weights after
            the updates up to and including ``t`` (the dual form of Titans and TTT). ``C = 1`` makes ``"start"``
            and ``"previous"`` the same. docs/ops_mlp_memory.md compares the three.

    Returns:
        ``o: [B, T, H, D]`` (``o_t = M(q_t)`` at the weights ``read`` names) in the dtype of ``q``, and
        the weights after the last token ``(W1, W2)`` in the state dtype (float64 if any input is,
        else float32). Gradients flow to every tensor argument.
    """
    b, _, h, d = check_sequence(q, ("k", "v_hat", "alpha", "eta"), (k, v_hat, alpha, eta))
    w1, w2 = check_weights(W1, W2, b, h, d, q.device)
    check_options(chunk_size, mode, objective, proximal=proximal, dgd=dgd, curvature=curvature)
    check_read(read, READS)
    dtype = state_dtype(q, alpha, eta, w1, w2)
    args = [x.to(dtype) for x in (q, k, v_hat, alpha, eta, w1, w2)]
    options = (objective, proximal, dgd, chunk_size, curvature, read)
    if mode == "recurrent":
        o, state = mlp_memory_recurrent(*args[:5], MLPMemoryState.start(*args[5:]), *options)
        return o.to(q.dtype), state.weights
    run = mlp_memory_naive if mode == "naive" else mlp_memory_chunk
    o, w1, w2 = run(*args, *options)
    return o.to(q.dtype), (w1, w2)


def mlp_memory_prefill(
    q: torch.Tensor,
    k: torch.Tensor,
    v_hat: torch.Tensor,
    alpha: torch.Tensor,
    eta: torch.Tensor,
    state: MLPMemoryState,
    *,
    objective: str,
    chunk_size: int,
    curvature: bool,
    read: str,
    proximal: bool = True,
    dgd: bool = True,
    mode: str = "chunk",
) -> tuple[torch.Tensor, MLPMemoryState]:
    """Continue :func:`mlp_memory` from ``state`` (at any position in a chunk) over ``T`` tokens.

    ``state``: :class:`MLPMemoryState` (``MLPMemoryState.start(W1, W2)`` for a fresh sequence);
    other arguments as in :func:`mlp_memory`. Returns ``o: [B, T, H, D]`` and the state after the
    last token, ready for :func:`mlp_memory_step` or another prefill.
    """
    b, _, h, d = check_sequence(q, ("k", "v_hat", "alpha", "eta"), (k, v_hat, alpha, eta))
    check_options(chunk_size, mode, objective, proximal=proximal, dgd=dgd, curvature=curvature)
    check_read(read, READS)
    state = _checked_state(state, b, h, d, q.device, chunk_size)
    dtype = state_dtype(q, alpha, eta, *state.weights)
    inputs = [x.to(dtype) for x in (q, k, v_hat, alpha, eta)]
    state = _cast_state(state, dtype)
    options = (objective, proximal, dgd, chunk_size, curvature, read)

    def chunks(xs: list[torch.Tensor], start: MLPMemoryState) -> tuple[torch.Tensor, MLPMemoryState]:
        run = mlp_memory_naive if mode == "naive" else mlp_memory_chunk
        o, w1, w2 = run(*xs, *start.weights, *options)
        return o, _after_chunks(MLPMemoryState.start(w1, w2), start, xs[0].shape[1], chunk_size)

    def tokens(xs: list[torch.Tensor], start: MLPMemoryState) -> tuple[torch.Tensor, MLPMemoryState]:
        return mlp_memory_recurrent(*xs, start, *options)

    o, state = _continue(inputs, state, chunk_size, chunks if mode != "recurrent" else None, tokens)
    return o.to(q.dtype), state


def mlp_memory_step(
    state: MLPMemoryState,
    q: torch.Tensor,
    k: torch.Tensor,
    v_hat: torch.Tensor,
    alpha: torch.Tensor,
    eta: torch.Tensor,
    *,
    objective: str,
    chunk_size: int,
    curvature: bool,
    read: str,
    proximal: bool = True,
    dgd: bool = True,
) -> tuple[torch.Tensor, MLPMemoryState]:
    """One decoding step: ``q, k, v_hat: [B, H, D]``, ``alpha, eta: [B, H]``. Returns
    ``o: [B, H, D]`` and the next :class:`MLPMemoryState` (same semantics as :func:`mlp_memory`)."""
    o, state = mlp_memory_prefill(
        *(x.unsqueeze(1) if isinstance(x, torch.Tensor) else x for x in (q, k, v_hat, alpha, eta)), state,
        objective=objective, proximal=proximal, dgd=dgd, chunk_size=chunk_size, mode="recurrent",
        curvature=curvature, read=read,
    )
    return o.squeeze(1), state


def titans_memory(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    theta: torch.Tensor,
    beta: torch.Tensor,
    forget: torch.Tensor,
    W1: torch.Tensor,
    W2: torch.Tensor,
    *,
    chunk_size: int,
    max_grad_norm: float | None,
    read: str,
    initial_momentum: Weights | None = None,
    mode: str = "chunk",
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Run the residual MLP memory under the Titans rule (Titans section 3.1; see
    :mod:`hope.ops.mlp_memory.titans`): ``S <- beta S - theta grad``, ``W <- (1 - forget) W + S``
    per layer, gradients of ``0.5 ||M(k) - v||^2`` at the chunk-start weights.

    Args:
        q, k, v: ``[B, T, H, D]``; theta (step), beta (momentum), forget (decay): ``[B, T, H]``.
        W1: ``[B, H, D, E]``, W2: ``[B, H, E, D]`` (or ``[H, ...]``, broadcast).
        initial_momentum: ``(S1, S2)`` shaped like ``(W1, W2)``; zero if ``None``.
        chunk_size, mode: as in :func:`mlp_memory`.
        max_grad_norm: clip each token's gradient of each layer to this Frobenius norm (``None``: no clipping;
            see :mod:`hope.ops.mlp_memory.titans`).
        read: ``"start"`` reads every token of a chunk at the chunk-start weights; ``"running"`` reads token
            ``t`` after its own update (the Titans paper's ``y_t = M*_t(q_t)``; gradients still from the chunk start).

    Returns:
        ``o: [B, T, H, D]`` and ``(W1, W2, S1, S2)`` after the last token.
    """
    b, _, h, d = check_sequence(q, ("k", "v", "theta", "beta", "forget"), (k, v, theta, beta, forget))
    w1, w2 = check_weights(W1, W2, b, h, d, q.device)
    check_options(chunk_size, mode)
    check_max_grad_norm(max_grad_norm)
    check_read(read, TITANS_READS)
    momentum = None
    if initial_momentum is not None:
        if not isinstance(initial_momentum, tuple) or len(initial_momentum) != 2:
            raise ValueError("initial_momentum must be a pair (S1, S2) shaped like (W1, W2)")
        momentum = _checked_pair(initial_momentum, w1, w2, ("initial_momentum[0]", "initial_momentum[1]"))
    dtype = state_dtype(q, theta, beta, forget, w1, w2)
    inputs = [x.to(dtype) for x in (q, k, v, theta, beta, forget)]
    state = _cast_state(TitansMemoryState.start(w1, w2, momentum), dtype)
    if mode == "recurrent":
        o, state = titans_recurrent(*inputs, state, chunk_size, max_grad_norm, read)
        (w1, w2), (s1, s2) = state.weights, state.momentum
    else:
        run = titans_naive if mode == "naive" else titans_chunk
        o, ((w1, w2), (s1, s2)) = run(*inputs, state, chunk_size, max_grad_norm, read)
    return o.to(q.dtype), (w1, w2, s1, s2)


def titans_memory_prefill(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    theta: torch.Tensor,
    beta: torch.Tensor,
    forget: torch.Tensor,
    state: TitansMemoryState,
    *,
    chunk_size: int,
    max_grad_norm: float | None,
    read: str,
    mode: str = "chunk",
) -> tuple[torch.Tensor, TitansMemoryState]:
    """Continue :func:`titans_memory` from ``state`` (any position); see :func:`mlp_memory_prefill`."""
    b, _, h, d = check_sequence(q, ("k", "v", "theta", "beta", "forget"), (k, v, theta, beta, forget))
    check_options(chunk_size, mode)
    check_max_grad_norm(max_grad_norm)
    check_read(read, TITANS_READS)
    state = _checked_state(state, b, h, d, q.device, chunk_size)
    dtype = state_dtype(q, theta, beta, forget, *state.weights)
    inputs = [x.to(dtype) for x in (q, k, v, theta, beta, forget)]
    state = _cast_state(state, dtype)

    def chunks(xs: list[torch.Tensor], start: TitansMemoryState) -> tuple[torch.Tensor, TitansMemoryState]:
        o, (weights, momentum) = (titans_naive if mode == "naive" else titans_chunk)(*xs, start, chunk_size,
                                                                                       max_grad_norm, read)
        return o, _after_chunks(TitansMemoryState.start(*weights, momentum), start, xs[0].shape[1], chunk_size)

    def tokens(xs: list[torch.Tensor], start: TitansMemoryState) -> tuple[torch.Tensor, TitansMemoryState]:
        return titans_recurrent(*xs, start, chunk_size, max_grad_norm, read)

    o, state = _continue(inputs, state, chunk_size, chunks if mode != "recurrent" else None, tokens)
    return o.to(q.dtype), state


def titans_memory_step(
    state: TitansMemoryState,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    theta: torch.Tensor,
    beta: torch.Tensor,
    forget: torch.Tensor,
    *,
    chunk_size: int,
    max_grad_norm: float | None,
    read: str,
) -> tuple[torch.Tensor, TitansMemoryState]:
    """One decoding step of :func:`titans_memory`: ``q, k, v: [B, H, D]``, gates ``[B, H]``."""
    o, state = titans_memory_prefill(
        *(x.unsqueeze(1) if isinstance(x, torch.Tensor) else x for x in (q, k, v, theta, beta, forget)), state,
        chunk_size=chunk_size, mode="recurrent", max_grad_norm=max_grad_norm, read=read,
    )
    return o.squeeze(1), state


def _continue(
    inputs: list[torch.Tensor],
    state: State,
    chunk_size: int,
    chunks: Callable[[list[torch.Tensor], State], tuple[torch.Tensor, State]] | None,
    tokens: Callable[[list[torch.Tensor], State], tuple[torch.Tensor, State]],
) -> tuple[torch.Tensor, State]:
    """Finish the open chunk with ``tokens``, then run the whole chunks after it and the partial chunk that
    follows them with ``chunks`` (two calls, so the partial chunk's start weights are known; everything token by
    token if ``None``)."""
    length = inputs[0].shape[1]
    head = min(-state.position % chunk_size, length)
    body = head + (length - head) // chunk_size * chunk_size
    outputs = []
    rest = tokens if chunks is None else chunks
    for start, stop, run in ((0, head, tokens), (head, body, rest), (body, length, rest)):
        if stop > start:
            o, state = run([x[:, start:stop] for x in inputs], state)
            outputs.append(o)
    return torch.cat(outputs, dim=1), state


def _after_chunks(end: State, start: State, length: int, chunk_size: int) -> State:
    """The state ``end``, reached from the chunk boundary ``start`` by ``length`` tokens (whole chunks, or part
    of one chunk, which then began at ``start``'s weights), with its position in its chunk."""
    position = length % chunk_size
    if position == 0:
        return end
    return end._replace(chunk_start=start.weights, position=position)


def _checked_pair(pair: Weights, w1: torch.Tensor, w2: torch.Tensor, names: tuple[str, str]) -> Weights:
    """Check that ``pair`` has the shapes of ``(w1, w2)`` (or ``[H, ...]``); return it broadcast."""
    b, h, d, e = w1.shape
    return check_weights(pair[0], pair[1], b, h, d, w1.device, names)


def _checked_state(state: State, b: int, h: int, d: int, device: torch.device, chunk_size: int) -> State:
    """Validate a decoding state against the inputs; return it with every tensor broadcast to ``[B, H, ...]``."""
    if not isinstance(state, (MLPMemoryState, TitansMemoryState)):
        raise ValueError(f"state must be an MLPMemoryState or TitansMemoryState, got {type(state).__name__}")
    position = state.position
    if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < chunk_size:
        raise ValueError(f"state.position must be an int in [0, chunk_size={chunk_size}), got {position!r}")
    w1, w2 = check_weights(*state.weights, b, h, d, device, ("state.weights[0]", "state.weights[1]"))
    fields = {"weights": (w1, w2)}
    for name in state._fields[1:-1]:
        fields[name] = _checked_pair(getattr(state, name), w1, w2, (f"state.{name}[0]", f"state.{name}[1]"))
    return state._replace(**fields)


def _cast_state(state: State, dtype: torch.dtype) -> State:
    """``state`` with every tensor in ``dtype``."""
    return state._replace(**{name: tuple(x.to(dtype) for x in getattr(state, name)) for name in state._fields[:-1]})

"""Segment-wise forward of a language model whose CMS levels learn in context (NL Eq. 71; docs/cms.md).

A boundary is a position ``b > 0`` that is a multiple of a learning level's period ``C``. The model reads the
tokens between two consecutive boundaries in one pass; at a boundary ``b``, every level with ``C | b`` takes one
step on the mean next-token loss of positions ``b - C .. b - 1`` (targets: tokens ``b - C + 1 .. b``), computed
from the model's own logits and differentiated through every layer above the level. The step changes the
outputs of positions ``>= b`` only. The target of position ``b - 1`` is token ``b``, so the step at ``b`` is
taken when token ``b`` is read: when a call ends, steps whose targets are not read yet are pending.

Cost. Each step's gradient is a backward from the loss of at most the slowest period's positions. PyTorch prunes a
backward at the smallest topological number of its inputs, but a fresh fast weight's number is small (it is a short
chain back to its parameter), so without help every step would walk the whole graph of the sequence so far (a
quadratic cost: at 2,048 tokens the steps took 8.3 of the forward's 9.9 s). :class:`_After` gives the new fast weights
of each step a topological number above everything computed before the step, so a step walks only its window.

Truncation (``cms_grad_window``; docs/cms.md, "Truncated in-context steps"). A step's gradient runs back from each
position's loss only to the start of its window of ``cms_grad_window`` tokens: the mixers' states are passed through
:class:`_CutForInnerSteps` at every multiple of it, which stops the inner gradients there and lets outputs and the
outer backward through unchanged. So the steps equal the window-aligned steps of streamed training
(``hope.models.hope.window``) with windows of that length.

Pending steps live in the ``ModelState``: for each learning level, a snapshot of the model state where it last
stepped, and the tokens read since the oldest snapshot. A call that reaches a pending boundary re-runs the
model from that snapshot over the stored tokens, so the step sees the same graph as one full forward would:
prefill + decode == one full forward. Decoding between boundaries costs one ordinary forward per token.

A streamed state whose rows restart (``ModelState.restart``, at a boundary of every level) restarts them after the
replay has taken the pending steps at ``position``, so those rows drop their pending step (docs/training.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils import _pytree as pytree

from hope.compiling import compiling
from hope.models.state import BlockState, ModelState


class _After(torch.autograd.Function):
    """``x`` (a copy), ordered after ``anchors`` in the autograd graph: its node points at theirs, which get no
    gradient through it, so its topological number exceeds theirs and a backward to ``x`` skips their history."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, *anchors: torch.Tensor) -> torch.Tensor:
        ctx.anchors = len(anchors)
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return (grad,) + (None,) * ctx.anchors


_INNER_STEPS = [0]
"""How many inner-step gradients are being taken (``_inner_gradients``); :class:`_CutForInnerSteps` reads it from
the autograd engine's threads, so it is a module global, not a context variable."""


class _CutForInnerSteps(torch.autograd.Function):
    """The mixer states at a truncation point (``cms_grad_window``), unchanged: the outer backward goes through
    them, the inner step's gradient (taken while ``_INNER_STEPS[0] > 0``) stops at them."""

    @staticmethod
    def forward(ctx, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t.view_as(t) for t in tensors)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return (None,) * len(grads) if _INNER_STEPS[0] else grads


def _cut_mixer_states(layers: list[BlockState]) -> list[BlockState]:
    """``layers`` with every mixer-state tensor that carries a gradient passed through :class:`_CutForInnerSteps`."""
    leaves, spec = pytree.tree_flatten([layer.mixer for layer in layers])
    cut = [i for i, t in enumerate(leaves) if isinstance(t, torch.Tensor) and t.requires_grad]
    if not cut:
        return layers
    for i, t in zip(cut, _CutForInnerSteps.apply(*(leaves[i] for i in cut))):
        leaves[i] = t
    mixers = pytree.tree_unflatten(leaves, spec)
    return [layer._replace(mixer=mixer) for layer, mixer in zip(layers, mixers)]


def _run_truncated(model, ids: torch.Tensor, start: int, stop: int, offset: int,
                   layers: list[BlockState]) -> tuple[torch.Tensor, list[BlockState], torch.Tensor]:
    """``model.run_blocks`` over positions ``start .. stop`` (``ids`` begins at position ``offset``), split at the
    multiples of ``model.cms_grad_window`` with the mixer states cut there for the inner steps."""
    window = model.cms_grad_window
    cuts = [] if window is None else list(range((start // window + 1) * window, stop, window))
    logits, hidden, position = [], [], start
    for cut in [*cuts, stop]:
        if position in cuts:
            layers = _cut_mixer_states(layers)
        piece_logits, layers, piece_hidden = model.run_blocks(ids[:, position - offset: cut - offset], layers,
                                                              position)
        logits.append(piece_logits)
        hidden.append(piece_hidden)
        position = cut
    if len(logits) == 1:
        return logits[0], layers, hidden[0]
    return torch.cat(logits, dim=1), layers, torch.cat(hidden, dim=1)


def _tensors_with_grad(layers: list[BlockState]) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves(layers) if isinstance(t, torch.Tensor) and t.requires_grad]


def _after_everything(model, before: list[BlockState], layers: list[BlockState],
                      logits: torch.Tensor) -> list[BlockState]:
    """``layers`` with the CMS fast weights that a step just made (those not in ``before``) passed through
    :class:`_After`, anchored at ``logits`` and at every tensor of the state: so the next steps' backwards stop
    where these weights were made. A tensor held in several places (a restarted level and its start) stays one."""
    anchors = [logits, *_tensors_with_grad(layers)]
    ordered: dict[int, torch.Tensor] = {}
    out = list(layers)
    for i in model.cms_layers:
        kept = {id(t) for t in pytree.tree_leaves(before[i].channel)}

        def after(t: torch.Tensor) -> torch.Tensor:
            if not t.requires_grad or id(t) in kept:
                return t
            if id(t) not in ordered:
                ordered[id(t)] = _After.apply(t, *anchors)
            return ordered[id(t)]

        out[i] = layers[i]._replace(channel=pytree.tree_map(after, layers[i].channel))
    return out


def last_step(position: int, period: int) -> int:
    """Where a level of ``period`` last stepped after reading ``position`` tokens (0: it never did).
    The step at a multiple ``b`` of ``period`` needs token ``b``, so it is taken once ``position > b``."""
    return (position - 1) // period * period if position > 0 else 0


def forward_in_context(model, input_ids: torch.Tensor,
                       state: ModelState | None) -> tuple[torch.Tensor, torch.Tensor, ModelState]:
    """``model(input_ids, state)`` for a model with learning CMS levels: logits ``[B, T, V]``, the head's
    inputs ``[B, T, D]`` and the new state."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError("CMS in-context learning needs autograd: use torch.no_grad(), not torch.inference_mode()")
    state = state or ModelState()
    periods, position, length = model.cms_periods, state.position, input_ids.shape[1]
    end = position + length
    last = {c: last_step(position, c) for c in periods}
    start = min((last[c] for c in periods if last[c] + c < end), default=position)
    origin = state.snapshots[0].position if state.snapshots else position
    if state.restart is not None and any(position % c for c in periods):
        raise ValueError(f"rows can restart only at a boundary of every CMS level {periods}, not at {position}")
    if start < position:
        begin = _snapshot_at(state, start)
        ids = torch.cat([state.replay_ids[:, start - origin:], input_ids], dim=1)
        restart = None if state.restart is None else (position, state.restart)
        layers = begin.layers
    else:
        begin, ids, restart = state, input_ids, None
        layers = begin.layers if state.restart is None else model.restarted(begin.layers, state.restart)
    keep = {last_step(end, c) for c in periods}
    outer_grad = torch.is_grad_enabled()
    logits, hidden, layers, captured = _run_segments(model, ids, start, layers, keep, outer_grad, restart)
    snapshots = [captured[p] if p >= start else _snapshot_at(state, p) for p in sorted(keep)]
    known = input_ids if state.replay_ids is None else torch.cat([state.replay_ids, input_ids], dim=1)
    new_state = ModelState(end, layers, known[:, min(keep) - origin:], snapshots)
    logits, hidden = logits[:, position - start:], hidden[:, position - start:]
    if not outer_grad:
        return logits.detach(), hidden.detach(), new_state.detach()
    return logits, hidden, new_state


def _snapshot_at(state: ModelState, position: int) -> ModelState:
    for snapshot in state.snapshots:
        if snapshot.position == position:
            return snapshot
    raise ValueError(f"state at position {state.position} has no CMS snapshot at position {position}; "
                     "a state for a model whose CMS learns in context must come from such a model")


def _run_segments(model, ids: torch.Tensor, start: int, layers: list[BlockState], keep: set[int],
                  outer_grad: bool, restart: tuple[int, torch.Tensor] | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor, list[BlockState], dict[int, ModelState]]:
    """Read ``ids`` (positions ``start ..``) segment by segment, stepping the CMS levels at every boundary
    (``restart``: at that boundary, after the steps, those rows go back to the initial state).

    Returns all the logits and head inputs, the final per-layer states and the states at the positions in ``keep``."""
    periods, end = model.cms_periods, start + ids.shape[1]
    boundaries = sorted({b for c in periods for b in range((start // c + 1) * c, end, c)})
    captured = {start: ModelState(start, layers)} if start in keep else {}
    if not boundaries:
        logits, layers, hidden = model.run_blocks(ids, layers, start)
        return logits, hidden, layers, captured
    second_order = outer_grad and any(model.blocks[i].channel.second_order for i in model.cms_layers)
    with torch.enable_grad(), _twice_differentiable() if second_order else contextlib.nullcontext():
        layers = _fast_weights_requiring_grad(model, layers)
        return _learning_loop(model, ids, start, layers, boundaries, keep, captured, outer_grad, second_order,
                              restart)


@contextlib.contextmanager
def _twice_differentiable() -> Iterator[None]:
    """For second-order steps: attention on the math SDPA kernel (the CPU flash kernel has no double backward)
    and no compiled functions (AOTAutograd has none either)."""
    with sdpa_kernel([SDPBackend.MATH]), compiling(False):
        yield


def _learning_loop(model, ids: torch.Tensor, start: int, layers: list[BlockState], boundaries: list[int],
                   keep: set[int], captured: dict[int, ModelState], outer_grad: bool, second_order: bool,
                   restart: tuple[int, torch.Tensor] | None,
                   ) -> tuple[torch.Tensor, torch.Tensor, list[BlockState], dict[int, ModelState]]:
    """The segments and steps; ``second_order`` runs attention on the math kernel, which has a double backward.
    Without an outer graph (``outer_grad`` False), the graph is cut wherever every level starts a new period
    (no pending step reaches back past it), so a long no-grad call holds at most one slowest period of it."""
    periods, end = model.cms_periods, start + ids.shape[1]
    outputs, hiddens, window = [], [], []
    position = start
    for boundary in [*boundaries, end]:
        if model.cms_grad_window and position % model.cms_grad_window == 0:
            layers = _cut_mixer_states(layers)
        logits, layers, hidden = _run_truncated(model, ids, position, boundary, start, layers)
        outputs.append(logits if outer_grad else logits.detach())
        hiddens.append(hidden if outer_grad else hidden.detach())
        if boundary == end:
            break
        window.append((position, _next_token_losses(logits, ids[:, position - start + 1 : boundary - start + 1])))
        position = boundary
        due = [c for c in periods if boundary % c == 0]
        grads = _inner_gradients(model, window, boundary, due, layers, second_order)
        layers = _after_everything(model, layers, _apply_steps(model, layers, grads), logits)
        if not outer_grad and all(boundary % c == 0 for c in periods):
            layers = _fast_weights_requiring_grad(model, ModelState(boundary, layers).detach().layers)
        if restart is not None and boundary == restart[0]:
            layers = model.restarted(layers, restart[1])
        if boundary in keep:
            captured[boundary] = ModelState(boundary, layers)
        oldest_needed = min(boundary // c * c for c in periods)
        window = [(p, x) for p, x in window if p >= oldest_needed]
    return torch.cat(outputs, dim=1), torch.cat(hiddens, dim=1), layers, captured


def _fast_weights_requiring_grad(model, layers: list[BlockState]) -> list[BlockState]:
    """The CMS fast weights of ``layers`` as tensors that autograd can differentiate (states read from a
    file or returned by a no-grad call are plain tensors)."""
    if not layers:
        return layers
    out = list(layers)
    for i in model.cms_layers:
        out[i] = layers[i]._replace(channel=model.blocks[i].channel.differentiable_state(layers[i].channel))
    return out


def _next_token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every position against the token after it, ``[B, T]`` (at least float32)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view(targets.shape)


def _inner_gradients(model, window: list, boundary: int, due: list[int], layers: list[BlockState],
                     second_order: bool) -> dict[int, list[list[torch.Tensor]]]:
    """``{period: per layer, the gradients of its step tensors}``: for each due period ``C``, the gradient of
    the mean next-token loss of positions ``boundary - C .. boundary - 1`` (per sequence; NL Eq. 71).

    One backward serves every due period: a level of period ``C`` entered its current weights at
    ``boundary - C``, so only the last ``C`` positions reach them, and the gradient of the slowest due loss
    (mean over ``C_max`` positions) is ``C / C_max`` times its own."""
    slowest = max(due)
    first = boundary - slowest
    if not window or window[0][0] > first:
        raise RuntimeError(f"losses of positions {first}..{boundary - 1} are missing (internal error)")
    loss = torch.cat([x for p, x in window if p >= first], dim=1).mean(dim=1).sum()
    groups = [(c, model.blocks[i].channel.step_tensors(layers[i].channel, c)) for c in due for i in model.cms_layers]
    _INNER_STEPS[0] += 1
    try:
        flat = torch.autograd.grad(loss, [t for _, group in groups for t in group], create_graph=second_order,
                                   retain_graph=True)
    finally:
        _INNER_STEPS[0] -= 1
    grads: dict[int, list[list[torch.Tensor]]] = {c: [] for c in due}
    offset = 0
    for c, group in groups:
        grads[c].append([g * (slowest / c) for g in flat[offset : offset + len(group)]])
        offset += len(group)
    return grads


def _apply_steps(model, layers: list[BlockState], grads: dict[int, list[list[torch.Tensor]]]) -> list[BlockState]:
    out = list(layers)
    for k, i in enumerate(model.cms_layers):
        channel = model.blocks[i].channel.apply_steps(layers[i].channel, {c: g[k] for c, g in grads.items()})
        out[i] = layers[i]._replace(channel=channel)
    return out

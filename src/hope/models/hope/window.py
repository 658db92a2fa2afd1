"""Window-aligned CMS steps: the step of NL Eq. 71 taken from the gradient the training backward already computes
(docs/cms.md, "Window-aligned steps").

When every learning period ``C`` is a multiple of the training window ``T``, a level's fast weights are constant
inside a window, and Eq. 71's (first-order) sum over a period is the sum of its windows' gradients. A streaming
trainer that carries the ``ModelState`` from window to window therefore runs::

    out = model(ids, state=state, targets=targets, window=True)   # no in-window step, no extra backward
    out.loss.backward()                                            # also fills the fast weights' gradients
    state = step_after_backward(model, out.state, loss_tokens)     # accumulate; step the rows at a boundary
    state = state.detach()                                         # (the trainer's truncation)

``loss_tokens`` is the count of target tokens the backward's loss averages over (batch x window x micro-batches
for a mean loss split into micro-batches), which turns each row's gradient back into the gradient of its own
mean next-token loss. Each row keeps its own position (``WindowCMSState.tokens``), so rows that restart their
documents at different windows step at their own boundaries; zeroing a row's CMS tensors restarts it.
"""

from __future__ import annotations

import torch

from hope.errors import HopeError
from hope.models.hope.cms import WindowCMSState
from hope.models.state import BlockState, ModelState


def forward_window(model, input_ids: torch.Tensor,
                   state: ModelState | None) -> tuple[torch.Tensor, torch.Tensor, ModelState]:
    """``model(input_ids, state, window=True)``: logits ``[B, T, V]``, the head's inputs and the new state, with
    every learning CMS level reading ``parameter - eta_l * S`` unchanged for the whole window."""
    if not torch.is_grad_enabled():
        raise HopeError("window-aligned CMS steps take their gradient from the training backward: run the "
                        "window with autograd enabled (window=False reads without one)")
    state = state or ModelState()
    batch, length = input_ids.shape
    layers = list(state.layers) or [BlockState(None, None)] * len(model.blocks)
    if state.restart is not None:
        layers = model.restarted(layers, state.restart, window=True)
    carried = {}
    for i in model.cms_layers:
        cms = model.blocks[i].channel
        window_state = layers[i].channel if layers[i].channel is not None else cms.window_state(batch)
        if not isinstance(window_state, WindowCMSState):
            raise HopeError("this state comes from the in-context forward (window=False); window=True "
                            "continues only states that window=True made")
        cms.check_window(window_state, length)
        carried[i] = window_state
        layers[i] = layers[i]._replace(channel=cms.window_weights(window_state))
    logits, new_layers, hidden = model.run_blocks(input_ids, layers, state.position)
    for i, window_state in carried.items():
        read = new_layers[i].channel.levels
        new_layers[i] = new_layers[i]._replace(
            channel=window_state._replace(tokens=window_state.tokens + length, used=read))
    return logits, hidden, ModelState(state.position + length, new_layers)


def step_after_backward(model, state: ModelState, loss_tokens: int) -> ModelState:
    """The next window's state: each level's gradient (from ``loss.backward()`` on a loss averaged over
    ``loss_tokens`` target tokens) added to its period's sum, and the step ``S += G`` for the rows at a
    boundary of that level (NL Eq. 71)."""
    if loss_tokens < 1:
        raise HopeError(f"loss_tokens must be the positive count of tokens the loss averages over, got {loss_tokens}")
    layers = list(state.layers)
    for i in model.cms_layers:
        window_state = layers[i].channel
        if not isinstance(window_state, WindowCMSState) or window_state.used is None:
            raise HopeError("step_after_backward needs the state returned by model(..., window=True) for the "
                            "window whose loss was just back-propagated")
        layers[i] = layers[i]._replace(channel=model.blocks[i].channel.window_step(window_state, loss_tokens))
    return ModelState(state.position, layers)


def fast_weights_read(model, state: ModelState) -> list[torch.Tensor]:
    """The fast weights the window of ``state`` (returned by ``model(..., window=True)``) read: the tensors whose
    gradient :func:`step_after_backward` needs (``torch.autograd.backward(loss, inputs=...)`` fills only these)."""
    return [weight for i in model.cms_layers for level in state.layers[i].channel.used.values() for weight in level]


def is_window_state(model, state: ModelState | None) -> bool:
    """Whether ``state`` was made by window-aligned steps."""
    return bool(state and state.layers and model.cms_layers
                and isinstance(state.layers[model.cms_layers[0]].channel, WindowCMSState))

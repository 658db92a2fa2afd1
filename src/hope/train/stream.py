"""Streaming (stateful) training, ``hope train --stream`` (docs/training.md, streaming).

Each row of the batch reads consecutive windows of one document (``hope.data.stream``); the model's state (every
mixer memory, CMS fast weights, convolution tails) is carried from window to window of that row and cut from the
autograd graph between them (truncated backpropagation through time), so memory does not grow with the number of
windows. Tensors that start as parameters are carried as ``parameter + detached displacement``
(``ModelState.carried``), so the parameters keep learning from every window, not only from each document's first.
A row whose document ends restarts from the initial state (``ModelState.restart``).

When every learning CMS period is a multiple of the window (the paper's periods, 512 tokens or more, over windows
of 256 or 512), the levels take window-aligned steps (``hope.models.hope.window``; docs/cms.md): a window reads
fixed fast weights, and the level steps at its boundary from the gradient the training backward computed.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import torch

from hope.data.stream import IGNORE_INDEX, DocumentStream, StreamBatch
from hope.errors import HopeError, HopeWarning
from hope.models import LanguageModel, ModelState, make_config
from hope.models.hope.window import is_window_state, step_after_backward
from hope.train.loop import StepResult


def warn_unstepped_cms(unstepped: list[int], length: int, remedy: str) -> None:
    """Warn that the CMS levels of periods ``unstepped`` never step in training rows of ``length`` tokens: a level
    of period ``C`` steps at position ``C`` (NL Eq. 71), so its inner learning rate gets no gradient from rows of at
    most ``C`` tokens, and longer evaluation rows take steps that training never sized (docs/cms.md)."""
    if unstepped:
        warnings.warn(f"CMS periods {unstepped} are not shorter than the training rows ({length} tokens): those "
                      f"levels never step in training, so their inner learning rates are never trained; {remedy}",
                      HopeWarning, stacklevel=3)


def streamed_model_overrides(config: Any) -> dict[str, Any]:
    """A run's ``model`` overrides (``TrainConfig`` or ``TaskRunConfig``: ``arch``, ``size``, ``model``, ``stream``,
    ``seq_len``) and, for a streamed run of a model with learning CMS levels, its window as ``cms_grad_window``
    unless given: the model's in-context steps are then truncated as its window-aligned training steps are
    (docs/cms.md, "Truncated in-context steps")."""
    overrides = dict(config.model)
    fields = {f.name for f in dataclasses.fields(make_config(config.arch, config.size, **config.model))}
    if getattr(config, "stream", False) and "cms_grad_window" in fields:
        overrides.setdefault("cms_grad_window", config.seq_len)
    return overrides


def next_window_state(model: LanguageModel, state: ModelState, loss_tokens: int) -> ModelState:
    """The state a row's next window starts from, made from this window's final ``state`` once the training
    backward is done: the window-aligned CMS step, from the gradient of the levels' fast weights of a loss
    averaged over ``loss_tokens`` target tokens (``step_after_backward``), then the truncated-BPTT cut."""
    if is_window_state(model, state):
        state = step_after_backward(model, state, loss_tokens)
    return state.detach()


class StreamedBatches:
    """The batches and the loss of a streamed run, and the state of each micro-batch's rows between steps.

    ``batches(step)`` gives the micro-batches of a step, ``loss(model, micro_batch)`` reads one window from its
    carried state, ``advance`` (a ``Trainer.fit`` callback, after the backward) carries the states on."""

    def __init__(self, model: LanguageModel, stream: DocumentStream, *, batch_size: int, grad_accum: int,
                 seed: int, device: torch.device, autocast: Any) -> None:
        self.window = model.window_aligned(stream.seq_len)
        multiple = model.window_multiple(self.window)
        if stream.seq_len % multiple:
            raise HopeError(f"--stream needs seq_len a multiple of {multiple} (the memory chunk sizes of this model "
                            f"and the CMS periods shorter than the window), or dividing every CMS period "
                            f"{list(model.cms_periods)}; got {stream.seq_len}")
        self.model, self.stream, self.seed, self.device, self.autocast = model, stream, seed, device, autocast
        self.batch_size, self.micro = batch_size, batch_size // grad_accum
        self.states: list[ModelState | None] = [None] * grad_accum
        self._read: list[ModelState | None] = [None] * grad_accum
        self._loss_tokens = [0] * grad_accum
        self.documents, self.resets = 0, 0

    def batches(self, step: int) -> list[tuple[int, StreamBatch]]:
        micro_batches = [(m, self.stream.batch_at(step, batch_size=self.batch_size, seed=self.seed,
                                                  rows=slice(m * self.micro, (m + 1) * self.micro)))
                         for m in range(len(self.states))]
        self.documents = sum(batch.documents for _, batch in micro_batches)
        self.resets = sum(int(batch.restart.sum()) for _, batch in micro_batches) if step else 0
        return [(m, StreamBatch(*(t.to(self.device) for t in batch[:3]), batch.documents))
                for m, batch in micro_batches]

    def loss(self, trained: torch.nn.Module, micro_batch: tuple[int, StreamBatch]) -> torch.Tensor:
        m, batch = micro_batch
        state = self.model.window_state(self.states[m], batch.restart, self.window)
        with self.autocast:
            out = trained(batch.inputs, state=state, targets=batch.targets,
                          **({"window": True} if self.window else {}))
        self._read[m] = out.state
        # the step's loss is the mean of the micro-batches' mean losses (Trainer.fit)
        self._loss_tokens[m] = max(1, int((batch.targets != IGNORE_INDEX).sum())) * len(self.states)
        return out.loss

    def advance(self, result: StepResult | None = None) -> None:
        """After a step's backward: every micro-batch's next state (:func:`next_window_state`). A step that the
        trainer skipped (non-finite loss or gradient) leaves the states where they were: its windows are dropped
        and each row reads on from its last finite state."""
        if result is None or (torch.isfinite(result.loss) and torch.isfinite(result.grad_norm)):
            self.states = [None if state is None else next_window_state(self.model, state, tokens)
                           for state, tokens in zip(self._read, self._loss_tokens)]
        self._read = list(self.states)  # drops the last window's graph

    def state_dict(self) -> list[dict[str, Any] | None]:
        """Each micro-batch's carried state as tensors (copies: a checkpoint stores no shared memory) and metadata."""
        return [None if state is None else {"meta": state.metadata(),
                                            "tensors": {k: t.detach().clone() for k, t in state.tensors().items()}}
                for state in self.states]

    def load_state_dict(self, saved: list[dict[str, Any] | None]) -> None:
        if not isinstance(saved, list) or len(saved) != len(self.states):
            raise HopeError(f"the checkpoint holds {len(saved) if isinstance(saved, list) else 'no'} streamed "
                            f"states, this run needs {len(self.states)} (one per micro-batch)")
        self.states = [None if item is None else ModelState.from_tensors(
            {k: t.to(self.device) for k, t in item["tensors"].items()}, item["meta"], self.model, "streamed state")
            for item in saved]
        self._read = list(self.states)

"""Language-model evaluation: mean next-token loss, perplexity and bits per byte.

Bits per byte divide the summed loss (in bits) by the UTF-8 bytes the evaluated tokens cover,
so models with different tokenizers are comparable.

``evaluate_lm`` reads independent windows; ``evaluate_lm_streamed`` reads every document whole, window after
window, carrying the model's state (docs/training.md, streaming).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from hope.data.dataset import TokenSplit, eval_windows
from hope.data.stream import IGNORE_INDEX, DocumentStream, document_starts
from hope.errors import HopeError
from hope.models.hope.window import fast_weights_read, step_after_backward
from hope.models.state import ModelState


@dataclass
class EvalResult:
    loss: float
    perplexity: float
    bits_per_byte: float
    tokens: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@torch.no_grad()
def evaluate_lm(model: torch.nn.Module, split: TokenSplit, *, seq_len: int, batch_size: int = 8,
                max_windows: int | None = None, device: str | torch.device = "cpu") -> EvalResult:
    """Evaluate on consecutive windows of ``split`` (all of it unless ``max_windows``)."""
    was_training = model.training
    model.eval()
    windows = eval_windows(split.tokens, seq_len, max_windows)
    total_nats, total_tokens = 0.0, 0
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size].to(device)
        logits = model(batch[:, :-1]).logits.float()
        total_nats += F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum").item()
        total_tokens += batch[:, 1:].numel()
    model.train(was_training)
    loss = total_nats / total_tokens
    n_bytes = total_tokens * split.bytes_per_token
    return EvalResult(loss, math.exp(min(loss, 700.0)), total_nats / (math.log(2) * n_bytes), total_tokens)


@torch.no_grad()
def evaluate_lm_streamed(model: torch.nn.Module, split: TokenSplit, *, seq_len: int, eot_id: int,
                         batch_size: int = 8, max_windows: int | None = None,
                         device: str | torch.device = "cpu") -> EvalResult:
    """Evaluate on whole documents: each of ``batch_size`` rows reads its documents window after window with the
    state carried (``hope.data.stream``); at most ``max_windows`` windows in all, rounded up to whole batches
    (default: every document)."""
    window = model.window_aligned(seq_len)
    multiple = model.window_multiple(window)
    if seq_len % multiple:
        raise HopeError(f"streaming needs seq_len a multiple of {multiple} (memory chunk sizes and CMS periods "
                        f"shorter than the window), or dividing every CMS period {list(model.cms_periods)}; "
                        f"got {seq_len}")
    was_training = model.training
    model.eval()
    stream = DocumentStream(split.tokens, document_starts(split, eot_id), seq_len=seq_len, eot_id=eot_id)
    total_nats, total_tokens, state = 0.0, 0, None
    max_steps = None if max_windows is None else -(-max_windows // batch_size)
    for batch in stream.evaluation_batches(batch_size, max_steps):
        inputs, targets = batch.inputs.to(device), batch.targets.to(device)
        state = model.window_state(state, batch.restart.to(device), window)
        nats, state = (_read_window if window else _read_in_context)(model, inputs, targets, state)
        total_nats += nats
        total_tokens += int((targets != IGNORE_INDEX).sum())
    model.train(was_training)
    loss = total_nats / total_tokens
    n_bytes = total_tokens * split.bytes_per_token
    return EvalResult(loss, math.exp(min(loss, 700.0)), total_nats / (math.log(2) * n_bytes), total_tokens)


def _read_in_context(model, inputs: torch.Tensor, targets: torch.Tensor,
                     state: ModelState | None) -> tuple[float, ModelState]:
    """One streamed window's summed loss (nats) and the state after it."""
    out = model(inputs, state=state)
    return _summed_loss(out.logits, targets).item(), out.state


def _read_window(model, inputs: torch.Tensor, targets: torch.Tensor,
                 state: ModelState | None) -> tuple[float, ModelState]:
    """:func:`_read_in_context` with window-aligned CMS steps: the levels step from the gradient of the window's
    loss with respect to their fast weights only (the parameters are not touched), as in training."""
    tokens = max(1, int((targets != IGNORE_INDEX).sum()))
    with torch.enable_grad():
        out = model(inputs, state=state, window=True)
        nats = _summed_loss(out.logits, targets)
        torch.autograd.backward(nats / tokens, inputs=fast_weights_read(model, out.state))
    return nats.item(), step_after_backward(model, out.state, tokens).detach()


def _summed_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    wide = logits if logits.dtype == torch.float64 else logits.float()
    return F.cross_entropy(wide.flatten(0, 1), targets.flatten(), reduction="sum", ignore_index=IGNORE_INDEX)

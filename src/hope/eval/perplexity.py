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
    if seq_len % model.window_multiple():
        raise HopeError(f"streaming needs seq_len a multiple of {model.window_multiple()} (CMS periods and memory "
                        f"chunk sizes of this model), got {seq_len}")
    was_training = model.training
    model.eval()
    stream = DocumentStream(split.tokens, document_starts(split, eot_id), seq_len=seq_len, eot_id=eot_id)
    total_nats, total_tokens, state = 0.0, 0, None
    max_steps = None if max_windows is None else -(-max_windows // batch_size)
    for batch in stream.evaluation_batches(batch_size, max_steps):
        inputs, targets = batch.inputs.to(device), batch.targets.to(device)
        out = model(inputs, state=model.window_state(state, batch.restart.to(device)))
        total_nats += F.cross_entropy(out.logits.float().flatten(0, 1), targets.flatten(), reduction="sum",
                                      ignore_index=IGNORE_INDEX).item()
        total_tokens += int((targets != IGNORE_INDEX).sum())
        state = out.state
    model.train(was_training)
    loss = total_nats / total_tokens
    n_bytes = total_tokens * split.bytes_per_token
    return EvalResult(loss, math.exp(min(loss, 700.0)), total_nats / (math.log(2) * n_bytes), total_tokens)

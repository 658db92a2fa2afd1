"""Language-model evaluation: mean next-token loss, perplexity and bits per byte.

Bits per byte divide the summed loss (in bits) by the UTF-8 bytes the evaluated tokens cover,
so models with different tokenizers are comparable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from hope.data.dataset import TokenSplit, eval_windows


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

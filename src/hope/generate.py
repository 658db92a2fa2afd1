"""Sampling: temperature, top-k and nucleus (top-p), streaming one token at a time through the state.

With ``use_state=True`` (default) the prompt is read once and every new token costs one step of the
model's recurrent state (a KV cache for attention); ``use_state=False`` re-reads the whole sequence
at every step and exists to check the first.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from hope.models import LanguageModel, ModelState


def sample_next(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token id per row of ``logits: [B, V]``; ``temperature == 0`` is greedy."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs > top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def stream(model: LanguageModel, prompt_ids: torch.Tensor, max_new_tokens: int, *, state: ModelState | None = None,
           temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           generator: torch.Generator | None = None, use_state: bool = True) -> Iterator[tuple[torch.Tensor, ModelState]]:
    """Yield ``(next_ids [B], state)`` for each new token after reading ``prompt_ids [B, T]``."""
    model.eval()
    if prompt_ids.shape[1] == 0:
        raise ValueError("the prompt must hold at least one token")
    out = model(prompt_ids, state=state)
    sequence = prompt_ids
    for _ in range(max_new_tokens):
        next_ids = sample_next(out.logits[:, -1], temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
        yield next_ids, out.state
        sequence = torch.cat([sequence, next_ids[:, None]], dim=1)
        out = model(next_ids[:, None], state=out.state) if use_state else model(sequence, state=state)


def generate(model: LanguageModel, prompt_ids: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
    """The prompt followed by ``max_new_tokens`` sampled tokens, ``[B, T + max_new_tokens]``."""
    new = [ids for ids, _ in stream(model, prompt_ids, max_new_tokens, **kwargs)]
    return torch.cat([prompt_ids, torch.stack(new, dim=1)], dim=1) if new else prompt_ids

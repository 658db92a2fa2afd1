"""What a task run reads its predictions from: the language model's own logits, or (MAD compression) a
reconstruction decoder on the last hidden state (``LanguageModel(..., output_hidden_states=True)``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hope.models import LanguageModel
from hope.tasks.base import IGNORE_INDEX


class ReconstructionDecoder(nn.Module):
    """MAD's auto-encoder decoder: the last hidden state plus a position embedding, through an MLP."""

    def __init__(self, d_model: int, vocab_size: int, max_length: int) -> None:
        super().__init__()
        self.positions = nn.Embedding(max_length, d_model)
        self.mlp = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, d_model), nn.GELU(),
                                 nn.LayerNorm(d_model), nn.Linear(d_model, d_model), nn.GELU(),
                                 nn.LayerNorm(d_model), nn.Linear(d_model, vocab_size))

    def forward(self, summary: torch.Tensor, length: int) -> torch.Tensor:
        positions = self.positions(torch.arange(length, device=summary.device))
        return self.mlp(summary[:, None, :] + positions[None])


class Predictor:
    """Logits for a batch: the LM's own, or (with a ``decoder``) the decoder's from the last hidden state."""

    def __init__(self, model: LanguageModel, decoder: ReconstructionDecoder | None) -> None:
        self.model, self.decoder = model, decoder

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.decoder is None:
            return self.model(input_ids).logits
        hidden = self.model(input_ids, output_hidden_states=True).hidden_states
        return self.decoder(hidden[:, -1], input_ids.shape[1])

    @torch.no_grad()
    def predict(self, input_ids: torch.Tensor, chunk: int,
                targets: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Argmax ids and, given ``targets``, the negative log-likelihood of each target (0 where it is
        ``IGNORE_INDEX``); rows longer than ``chunk`` run chunk by chunk carrying the state."""
        if input_ids.shape[1] <= chunk or self.decoder is not None:
            starts_and_logits = [(0, self.logits(input_ids))]
        else:
            state, starts_and_logits = None, []
            for start in range(0, input_ids.shape[1], chunk):
                out = self.model(input_ids[:, start: start + chunk], state=state)
                state = out.state
                starts_and_logits.append((start, out.logits))
        ids = torch.cat([logits.argmax(-1) for _, logits in starts_and_logits], dim=1)
        if targets is None:
            return ids, None
        nll = [F.cross_entropy(logits.float().transpose(1, 2), targets[:, start: start + logits.shape[1]],
                               ignore_index=IGNORE_INDEX, reduction="none") for start, logits in starts_and_logits]
        return ids, torch.cat(nll, dim=1)

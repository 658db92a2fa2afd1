"""Streamed batches (docs/training.md, streaming): each batch row reads consecutive windows of one document, then
of the next, so that a model can carry its state from window to window of a row.

Document ``d`` (``tokens[a:b]``, ending with its end-of-text token) is read as the inputs ``[eot] + tokens[a:b-1]``
and the targets ``tokens[a:b]``, in windows of ``seq_len``; a document's last window is padded (inputs with
end-of-text, targets with ``IGNORE_INDEX``), so a window never crosses documents and every document starts a
window. Only ``len(tokens)``, slices ``tokens[i:j]`` and the document starts are read, so a memory-mapped token
store works unchanged.

Training batches are a pure function of ``(seed, step)``: row ``r`` reads the documents in the order of a
permutation seeded by ``(seed, r, epoch)``, one window per step, so the window of row ``r`` at step ``s`` follows
from the cumulative window counts, and a resumed run needs only the model's state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from hope.data.dataset import TokenSplit
from hope.errors import HopeError

IGNORE_INDEX = -100
"""The target of padded positions (``torch.nn.functional.cross_entropy``'s default ``ignore_index``)."""


def document_starts(split: TokenSplit, eot_id: int) -> np.ndarray:
    """The offset of each document's first token: ``split.document_starts`` or, when the split does not know
    them, the positions after each end-of-text token (a last document without one is kept)."""
    n = len(split.tokens)
    if split.document_starts is not None:
        starts = np.asarray(split.document_starts, dtype=np.int64)
    else:
        ends = np.flatnonzero(np.asarray(split.tokens) == eot_id) + 1
        starts = np.concatenate([[0], ends[ends < n]]).astype(np.int64)
    if n == 0 or len(starts) == 0 or starts[0] != 0 or np.any(np.diff(starts) <= 0) or starts[-1] >= n:
        raise HopeError(f"document starts must begin at 0 and increase strictly below {n} tokens")
    return starts


class StreamBatch(NamedTuple):
    """One step's windows: ``inputs, targets [B, seq_len]`` (int64; padded targets ``IGNORE_INDEX``),
    ``restart [B]`` (bool: the row starts a document, so its state restarts) and ``documents``, the documents the
    rows had finished before this step (summed over the rows)."""

    inputs: torch.Tensor
    targets: torch.Tensor
    restart: torch.Tensor
    documents: int


class DocumentStream:
    """The documents of ``tokens`` cut into windows of ``seq_len`` (see the module docstring)."""

    def __init__(self, tokens: np.ndarray, starts: np.ndarray, *, seq_len: int, eot_id: int) -> None:
        if seq_len < 1:
            raise HopeError(f"seq_len must be >= 1, got {seq_len}")
        self.tokens, self.starts, self.seq_len, self.eot_id = tokens, starts, seq_len, eot_id
        self.ends = np.append(starts[1:], len(tokens))
        self.windows = -(-(self.ends - self.starts) // seq_len)
        """Windows of each document."""
        self._orders: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}

    @property
    def padding(self) -> float:
        """The fraction of target positions that are padding (the cost of never crossing documents)."""
        return 1.0 - float((self.ends - self.starts).sum()) / float(self.windows.sum() * self.seq_len)

    def window(self, document: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets (int64, ``[seq_len]``) of window ``index`` of ``document``."""
        a, b, w = int(self.starts[document]), int(self.ends[document]), self.seq_len
        first = a + index * w
        targets = np.full(w, IGNORE_INDEX, dtype=np.int64)
        inputs = np.full(w, self.eot_id, dtype=np.int64)
        real = min(w, b - first)
        targets[:real] = self.tokens[first : first + real]
        if index == 0:
            inputs[1:real] = self.tokens[first : first + real - 1]
        else:
            inputs[:real] = self.tokens[first - 1 : first + real - 1]
        return inputs, targets

    def _order(self, seed: int, row: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Row ``row``'s document order in ``epoch`` and the cumulative window counts along it."""
        key = (seed, row, epoch)
        if key not in self._orders:
            if len(self._orders) > 4096:
                self._orders.clear()
            order = np.random.default_rng([seed, row, epoch]).permutation(len(self.starts))
            self._orders[key] = order, np.cumsum(self.windows[order])
        return self._orders[key]

    def batch_at(self, step: int, *, batch_size: int, seed: int, rows: slice | None = None) -> StreamBatch:
        """The windows of ``step``: row ``r`` of the global batch reads window ``step`` of its own endless
        sequence of documents (a new seeded permutation each epoch). ``rows`` selects a slice of the global batch
        (a data-parallel rank's or a micro-batch's share) without changing the other rows."""
        per_epoch = int(self.windows.sum())
        epoch, offset = divmod(step, per_epoch)
        inputs, targets, restart, documents = [], [], [], 0
        for row in range(batch_size)[rows or slice(None)]:
            order, cumulative = self._order(seed, row, epoch)
            place = int(np.searchsorted(cumulative, offset, side="right"))
            index = offset - (int(cumulative[place - 1]) if place else 0)
            x, y = self.window(int(order[place]), index)
            inputs.append(x)
            targets.append(y)
            restart.append(index == 0)
            documents += epoch * len(self.starts) + place
        return StreamBatch(torch.from_numpy(np.stack(inputs)), torch.from_numpy(np.stack(targets)),
                           torch.tensor(restart), documents)

    def evaluation_batches(self, batch_size: int, max_steps: int | None = None) -> Iterator[StreamBatch]:
        """Every document once, in order: row ``r`` reads documents ``r, r + B, r + 2B, ...``; a row with no
        document left reads padding (targets ``IGNORE_INDEX``). At most ``max_steps`` steps."""
        plans = []
        for row in range(min(batch_size, len(self.starts))):
            plans.append([(int(d), k) for d in range(row, len(self.starts), batch_size)
                          for k in range(int(self.windows[d]))])
        steps = max(len(plan) for plan in plans)
        if max_steps is not None:
            steps = min(steps, max_steps)
        padding = (np.full(self.seq_len, self.eot_id, dtype=np.int64), np.full(self.seq_len, IGNORE_INDEX, dtype=np.int64))
        documents = 0
        for step in range(steps):
            windows = [self.window(*plan[step]) if step < len(plan) else padding for plan in plans]
            restart = [step >= len(plan) or plan[step][1] == 0 for plan in plans]
            yield StreamBatch(torch.from_numpy(np.stack([x for x, _ in windows])),
                              torch.from_numpy(np.stack([y for _, y in windows])), torch.tensor(restart), documents)
            documents += int(sum(step < len(plan) and plan[step][1] == self.windows[plan[step][0]] - 1 for plan in plans))

"""The six MAD synthetic tasks (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid
Architectures"; NL Table 4), with the vocabulary layouts and baseline settings of the MAD benchmark.

* ``InContextRecallTask`` (in-context recall, and noisy in-context recall with ``frac_noise > 0``):
  key-value pairs with a mapping fixed within the row; every value of a key seen before is a
  target (MAD's multi-query setting), and the row ends with a probe pair of a seen key.
* ``FuzzyInContextRecallTask``: keys and values are motifs of 1..3 tokens; rows of the ``test``
  split use keys of the full motif size only, as in MAD.
* ``SelectiveCopyingTask``: tokens scattered among blanks must be reproduced after a copy token.
* ``CompressionTask``: the whole row must be reconstructed from the representation at its last
  position (MAD's auto-encoder task): ``objective = "reconstruct"``, ``targets`` are the row itself,
  and a runner must decode them from the last position only, never from the per-position outputs.
* ``MemorizationTask``: a key-value map fixed across all rows (by ``map_seed``) must be learned in
  the weights: after ``key INSERT`` the model outputs the key's value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hope.errors import HopeError
from hope.tasks.base import IGNORE_INDEX, RowBuilder, Task, check_positive


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise HopeError(f"{name} must be in [0, 1), got {value}")


@dataclass(frozen=True)
class InContextRecallTask(Task):
    """``length`` tokens of pairs ``k v``; keys in ``[0, s/2)``, values in ``[s/2, s)`` where
    ``s = vocab_size - noise_vocab_size``; noise pairs use the top ``noise_vocab_size`` ids."""

    length: int = 128
    vocab_size: int = 16
    noise_vocab_size: int = 0
    frac_noise: float = 0.0

    name = "in_context_recall"

    def __post_init__(self) -> None:
        check_positive("length", self.length, 4)
        if self.length % 2:
            raise HopeError(f"in-context recall length must be even, got {self.length}")
        if self.vocab_size - self.noise_vocab_size < 2:
            raise HopeError(f"vocab_size {self.vocab_size} leaves no keys and values after {self.noise_vocab_size} noise ids")
        _check_fraction("frac_noise", self.frac_noise)
        if self.frac_noise > 0 and self.noise_vocab_size < 1:
            raise HopeError("frac_noise > 0 needs noise_vocab_size >= 1")

    @property
    def pad_id(self) -> int:
        return 0

    def example(self, rng: np.random.Generator) -> tuple[RowBuilder, dict[str, Any]]:
        symbols = self.vocab_size - self.noise_vocab_size
        key_vocab, value_vocab = np.arange(symbols // 2), np.arange(symbols // 2, symbols)
        pairs = self.length // 2
        kept = int(rng.integers(pairs - 1))
        mapping: dict[int, int] = {}
        row = RowBuilder()
        events = []
        for i in range(pairs - 1):
            if self.frac_noise > 0 and i != kept and rng.random() < self.frac_noise:
                row.extend(rng.integers(symbols, self.vocab_size, size=2))
                continue
            key = int(rng.choice(key_vocab))
            seen = key in mapping
            if not seen:
                mapping[key] = int(rng.choice(value_vocab))
            self._pair(row, key, mapping[key], seen)
            events.append((key, mapping[key], seen))
        probe = int(rng.choice(sorted(mapping)))
        self._pair(row, probe, mapping[probe], True)
        events.append((probe, mapping[probe], True))
        return row, {"pairs": events, "probe": probe}

    @staticmethod
    def _pair(row: RowBuilder, key: int, value: int, query: bool) -> None:
        row.extend([key])
        if query:
            row.extend_answer([value])
        else:
            row.extend([value])


@dataclass(frozen=True)
class FuzzyInContextRecallTask(Task):
    """Keys (values) are tuples of 1..``key_motif_size`` (``value_motif_size``) distinct tokens.

    Ids: keys ``[0, s/2)``, values ``[s/2, s)`` with ``s = vocab_size - 1``; ``vocab_size - 1`` pads
    the left of the row to exactly ``length`` tokens.
    """

    length: int = 128
    vocab_size: int = 16
    key_motif_size: int = 3
    value_motif_size: int = 3
    split: str = "train"

    name = "fuzzy_in_context_recall"

    def __post_init__(self) -> None:
        check_positive("key_motif_size", self.key_motif_size)
        check_positive("value_motif_size", self.value_motif_size)
        if self.split not in ("train", "test"):
            raise HopeError(f"split must be 'train' or 'test', got {self.split!r}")
        symbols = self.vocab_size - 1
        if symbols // 2 < self.key_motif_size or symbols - symbols // 2 < self.value_motif_size:
            raise HopeError(f"vocab_size {self.vocab_size} is too small for motifs of {self.key_motif_size} / {self.value_motif_size} tokens")
        check_positive("length", self.length, 4 * (self.key_motif_size + self.value_motif_size))

    @property
    def pad_id(self) -> int:
        return self.vocab_size - 1

    def example(self, rng: np.random.Generator) -> tuple[RowBuilder, dict[str, Any]]:
        symbols = self.vocab_size - 1
        key_vocab, value_vocab = range(symbols // 2), range(symbols // 2, symbols)
        key_sizes = [self.key_motif_size] if self.split == "test" else list(range(1, self.key_motif_size + 1))
        value_sizes = list(range(1, self.value_motif_size + 1))

        def motif(vocab: range, sizes: list[int]) -> tuple[int, ...]:
            size = sizes[int(rng.integers(len(sizes)))]
            return tuple(int(t) for t in rng.choice(np.asarray(vocab), size=size, replace=False))

        probe_key, probe_value = motif(key_vocab, key_sizes), motif(value_vocab, value_sizes)
        probe_size = len(probe_key) + len(probe_value)
        longest_pair = self.key_motif_size + self.value_motif_size
        budget = self.length - probe_size - longest_pair
        probe_at = int(rng.integers(budget - longest_pair + 1))
        mapping = {probe_key: probe_value}
        pairs: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
        used = 0
        probe_placed = False
        while used < budget:
            key = probe_key if used >= probe_at and not probe_placed else motif(key_vocab, key_sizes)
            probe_placed |= key == probe_key
            mapping.setdefault(key, motif(value_vocab, value_sizes))
            pairs.append((key, mapping[key]))
            used += len(key) + len(mapping[key])
        pairs.append((probe_key, probe_value))
        used += probe_size
        row = RowBuilder()
        row.extend([self.pad_id] * (self.length - used))
        seen: set[tuple[int, ...]] = set()
        queries = []
        for key, value in pairs:
            row.extend(key)
            if key in seen:
                row.extend_answer(value)
                queries.append(key)
            else:
                row.extend(value)
            seen.add(key)
        return row, {"pairs": pairs, "probe": probe_key, "queries": queries}


@dataclass(frozen=True)
class SelectiveCopyingTask(Task):
    """``num_tokens`` tokens scattered among blanks, a copy token, then ``num_tokens`` blanks at
    which the tokens must be output in order. Ids: tokens ``[0, vocab_size - 2)``, blank
    ``vocab_size - 2``, copy ``vocab_size - 1``."""

    length: int = 256
    vocab_size: int = 16
    num_tokens: int = 16

    name = "selective_copying"

    def __post_init__(self) -> None:
        check_positive("num_tokens", self.num_tokens)
        check_positive("vocab_size", self.vocab_size, 3)
        if self.length <= 2 * self.num_tokens + 1:
            raise HopeError(f"selective copying needs length > 2 * num_tokens + 1 ({2 * self.num_tokens + 1}), got {self.length}")

    @property
    def pad_id(self) -> int:
        return self.vocab_size - 2

    def example(self, rng: np.random.Generator) -> tuple[RowBuilder, dict[str, Any]]:
        blank, copy = self.vocab_size - 2, self.vocab_size - 1
        tokens = rng.integers(0, self.vocab_size - 2, size=self.num_tokens)
        data_length = self.length - self.num_tokens - 1
        positions = np.sort(rng.choice(data_length, size=self.num_tokens, replace=False))
        data = np.full(data_length, blank, dtype=np.int64)
        data[positions] = tokens
        row = RowBuilder()
        row.extend(data)
        row.extend([copy])
        row.extend_labelled(np.full(self.num_tokens, blank), tokens, one_group=False)
        return row, {"tokens": tokens.tolist(), "positions": positions.tolist()}


@dataclass(frozen=True)
class CompressionTask(Task):
    """``length - 1`` random tokens in ``[0, vocab_size - 1)`` and the compression token
    ``vocab_size - 1``; the targets are the row itself, to be decoded from the last position."""

    length: int = 32
    vocab_size: int = 16

    name = "compression"
    objective = "reconstruct"

    def __post_init__(self) -> None:
        check_positive("length", self.length, 2)
        check_positive("vocab_size", self.vocab_size, 2)

    @property
    def pad_id(self) -> int:
        return self.vocab_size - 1

    def example(self, rng: np.random.Generator) -> tuple[RowBuilder, dict[str, Any]]:
        ids = np.append(rng.integers(0, self.vocab_size - 1, size=self.length - 1), self.vocab_size - 1)
        row = RowBuilder()
        row.extend_labelled(ids, ids)
        return row, {}


@dataclass(frozen=True)
class MemorizationTask(Task):
    """``length / 2`` pairs ``key INSERT``; the output at ``INSERT`` must be the key's value under a
    map fixed by ``map_seed``. Ids: keys ``[0, s/2)``, values ``[s/2, s)``, insert ``s = vocab_size - 1``."""

    length: int = 32
    vocab_size: int = 256
    map_seed: int = 12345

    name = "memorization"

    def __post_init__(self) -> None:
        check_positive("length", self.length, 2)
        check_positive("vocab_size", self.vocab_size, 3)
        if self.length % 2:
            raise HopeError(f"memorization length must be even, got {self.length}")

    @property
    def pad_id(self) -> int:
        return self.vocab_size - 1

    def key_value_map(self) -> dict[int, int]:
        """The fixed map: shuffled keys paired with shuffled values (as MAD's ``generate_kv_map``)."""
        symbols = self.vocab_size - 1
        rng = np.random.default_rng(self.map_seed)
        keys = list(range(symbols // 2))
        values = list(range(symbols // 2, symbols))
        rng.shuffle(keys)
        rng.shuffle(values)
        return dict(zip(keys, values))

    def example(self, rng: np.random.Generator) -> tuple[RowBuilder, dict[str, Any]]:
        mapping = self.key_value_map()
        keys = sorted(mapping)
        drawn = [keys[i] for i in rng.integers(len(keys), size=self.length // 2)]
        ids = np.array([[k, self.vocab_size - 1] for k in drawn], dtype=np.int64).reshape(-1)
        labels = np.array([[IGNORE_INDEX, mapping[k]] for k in drawn], dtype=np.int64).reshape(-1)
        row = RowBuilder()
        row.extend_labelled(ids, labels, one_group=False)
        return row, {"keys": drawn}

"""Multi-query associative recall (MQAR; Arora et al. 2024, "Zoology"; NL Sec. 9.4).

A row of ``length`` tokens: ``num_kv_pairs`` key-value pairs ``k_1 v_1 ... k_n v_n``, then every key
queried once at a random even offset of the rest of the row, gaps drawn from Zoology's power law
(``power_a``; 1.0 is uniform). At a query position the model must output the key's value. Keys are
distinct ids in ``[1, vocab_size / 2)``, values distinct ids in ``[vocab_size / 2, vocab_size)``.
Positions that are neither pairs nor queries hold random ids (Zoology's ``random_non_queries``) or 0.
Each query is one answer group, so item accuracy is Zoology's accuracy over queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hope.errors import HopeError
from hope.tasks.base import IGNORE_INDEX, RowBuilder, Task, check_positive


@dataclass(frozen=True)
class MQARTask(Task):
    length: int = 256
    num_kv_pairs: int = 16
    vocab_size: int = 512
    power_a: float = 0.01
    random_non_queries: bool = True

    name = "mqar"

    def __post_init__(self) -> None:
        check_positive("length", self.length, 4)
        check_positive("num_kv_pairs", self.num_kv_pairs)
        if self.length % 2:
            raise HopeError(f"MQAR length must be even, got {self.length}")
        if 4 * self.num_kv_pairs > self.length:
            raise HopeError(f"MQAR needs length >= 4 * num_kv_pairs ({4 * self.num_kv_pairs}), got {self.length}")
        if self.vocab_size // 2 - 1 < self.num_kv_pairs:
            raise HopeError(f"vocab_size {self.vocab_size} has too few keys for {self.num_kv_pairs} pairs")
        if not 0.0 < self.power_a <= 1.0:
            raise HopeError(f"power_a must be in (0, 1], got {self.power_a}")

    @property
    def pad_id(self) -> int:
        return 0

    def example(self, rng: np.random.Generator) -> tuple[RowBuilder, dict[str, Any]]:
        n, half = self.num_kv_pairs, self.vocab_size // 2
        keys = rng.choice(np.arange(1, half), size=n, replace=False)
        values = rng.choice(np.arange(half, self.vocab_size), size=n, replace=False)
        context = 2 * n
        space = (self.length - context) // 2
        weights = self.power_a * np.arange(1, space + 1, dtype=np.float64) ** (self.power_a - 1)
        slots = rng.choice(space, size=n, replace=False, p=weights / weights.sum())
        ids = np.zeros(self.length, dtype=np.int64)
        ids[0:context:2], ids[1:context:2] = keys, values
        query_positions = context + 2 * slots
        ids[query_positions] = keys
        if self.random_non_queries:
            filler = np.ones(self.length, dtype=bool)
            filler[:context] = False
            filler[query_positions] = False
            ids[filler] = rng.integers(0, self.vocab_size, size=int(filler.sum()))
        labels = np.full(self.length, IGNORE_INDEX, dtype=np.int64)
        labels[query_positions] = values
        row = RowBuilder()
        row.extend(ids[:context])
        row.extend_labelled(ids[context:], labels[context:], one_group=False)
        info = {"keys": keys.tolist(), "values": values.tolist(), "query_positions": query_positions.tolist()}
        return row, info


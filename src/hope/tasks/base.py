"""What every task produces: token rows with answer targets, stacked into a ``TaskBatch``, and scoring.

Convention (shared by every family): ``targets[b, t]`` is the token that the model's output at
position ``t`` must predict, or ``IGNORE_INDEX``. A runner trains with cross-entropy on the
positions that have a target and scores exact match there. Answer positions that belong to one
answer (a value of several tokens, a whole formal-language string) share a group id in ``groups``;
an answer counts as correct only when every one of its positions is.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hope.errors import HopeError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TaskBatch:
    """``input_ids``, ``targets`` and ``groups`` are int arrays ``[batch, time]``; ``info`` holds one dict per row."""

    input_ids: np.ndarray
    targets: np.ndarray
    groups: np.ndarray
    info: tuple[dict[str, Any], ...]

    def __post_init__(self) -> None:
        shape = self.input_ids.shape
        if self.input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, time], got shape {shape}")
        if self.targets.shape != shape or self.groups.shape != shape:
            raise ValueError(f"targets {self.targets.shape} and groups {self.groups.shape} must match input_ids {shape}")
        if len(self.info) != shape[0]:
            raise ValueError(f"info must hold one dict per row ({shape[0]}), got {len(self.info)}")

    @property
    def answer_mask(self) -> np.ndarray:
        return self.targets != IGNORE_INDEX

    def __len__(self) -> int:
        return self.input_ids.shape[0]


@dataclass
class RowBuilder:
    """Builds one row from segments of tokens; answer segments get targets, the rest do not."""

    _ids: list[np.ndarray] = field(default_factory=list)
    _targets: list[np.ndarray | None] = field(default_factory=list)
    _groups: list[np.ndarray | None] = field(default_factory=list)
    _length: int = 0
    num_groups: int = 0

    def __len__(self) -> int:
        return self._length

    def extend(self, tokens: np.ndarray | list[int]) -> int:
        """Append context tokens (no targets); returns the position of the first one."""
        start = self._length
        ids = np.asarray(tokens, dtype=np.int64)
        if ids.size:
            self._ids.append(ids)
            self._targets.append(None)
            self._groups.append(None)
            self._length += ids.size
        return start

    def extend_answer(self, tokens: np.ndarray | list[int]) -> int:
        """Append an answer that the model must produce next-token style (teacher forced).

        The output at the position before each answer token must predict it, so the answer is
        scored exactly as greedy decoding would be. Returns the position of the first answer token.
        """
        ids = np.asarray(tokens, dtype=np.int64)
        if ids.size == 0 or self._length == 0:
            raise ValueError("an answer needs at least one token and some context before it")
        group = self._new_group()
        last = len(self._ids) - 1
        self._materialise(last)
        self._targets[last][-1] = ids[0]
        self._groups[last][-1] = group
        targets = np.full(ids.size, IGNORE_INDEX, dtype=np.int64)
        targets[:-1] = ids[1:]
        groups = np.full(ids.size, -1, dtype=np.int64)
        groups[:-1] = group
        return self._append(ids, targets, groups)

    def extend_labelled(self, tokens: np.ndarray | list[int], labels: np.ndarray | list[int],
                        one_group: bool = True) -> int:
        """Append tokens whose own positions carry the labels (``IGNORE_INDEX`` for none).

        The labelled positions form one answer group (``one_group``) or one group each.
        """
        ids = np.asarray(tokens, dtype=np.int64)
        targets = np.asarray(labels, dtype=np.int64)
        if ids.shape != targets.shape or ids.ndim != 1:
            raise ValueError(f"labels {targets.shape} must match tokens {ids.shape}, both 1-D")
        labelled = targets != IGNORE_INDEX
        groups = np.full(ids.size, -1, dtype=np.int64)
        if one_group:
            groups[labelled] = self._new_group()
        else:
            groups[labelled] = [self._new_group() for _ in range(int(labelled.sum()))]
        return self._append(ids, targets, groups)

    def build(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = np.concatenate(self._ids) if self._ids else np.zeros(0, dtype=np.int64)
        targets = np.concatenate([t if t is not None else np.full(i.size, IGNORE_INDEX, dtype=np.int64)
                                  for i, t in zip(self._ids, self._targets)]) if self._ids else ids.copy()
        groups = np.concatenate([g if g is not None else np.full(i.size, -1, dtype=np.int64)
                                 for i, g in zip(self._ids, self._groups)]) if self._ids else ids.copy()
        return ids, targets, groups

    def _new_group(self) -> int:
        self.num_groups += 1
        return self.num_groups - 1

    def _materialise(self, index: int) -> None:
        size = self._ids[index].size
        if self._targets[index] is None:
            self._targets[index] = np.full(size, IGNORE_INDEX, dtype=np.int64)
            self._groups[index] = np.full(size, -1, dtype=np.int64)

    def _append(self, ids: np.ndarray, targets: np.ndarray, groups: np.ndarray) -> int:
        start = self._length
        self._ids.append(ids)
        self._targets.append(targets)
        self._groups.append(groups)
        self._length += ids.size
        return start


def stack_rows(rows: list[tuple[RowBuilder, dict[str, Any]]], pad_id: int) -> TaskBatch:
    """Right-pad rows to the longest one (padding has no targets) and stack them."""
    built = [(row.build(), info) for row, info in rows]
    width = max(ids.size for (ids, _, _), _ in built)
    batch = len(built)
    input_ids = np.full((batch, width), pad_id, dtype=np.int64)
    targets = np.full((batch, width), IGNORE_INDEX, dtype=np.int64)
    groups = np.full((batch, width), -1, dtype=np.int64)
    for b, ((ids, tg, gr), _) in enumerate(built):
        input_ids[b, : ids.size] = ids
        targets[b, : ids.size] = tg
        groups[b, : ids.size] = gr
    return TaskBatch(input_ids, targets, groups, tuple(info for _, info in built))


def score_predictions(predictions: np.ndarray, batch: TaskBatch) -> dict[str, float | int]:
    """Exact-match scores of predicted ids ``[batch, time]`` (e.g. ``logits.argmax(-1)``).

    ``item_accuracy``: answers (groups) right in every position; ``sequence_accuracy``: rows whose
    answers are all right; ``token_accuracy``: answer positions right. Counts come with them
    (``items``, ``items_right``, ...), so scores of several batches can be pooled.
    """
    predictions = np.asarray(predictions)
    if predictions.shape != batch.targets.shape:
        raise ValueError(f"predictions must have shape {batch.targets.shape}, got {predictions.shape}")
    mask = batch.answer_mask
    correct = (predictions == batch.targets) & mask
    items = items_right = rows_right = 0
    for b in range(len(batch)):
        groups = batch.groups[b][mask[b]]
        wrong = groups[~correct[b][mask[b]]]
        ids = np.unique(groups)
        items += ids.size
        items_right += ids.size - np.unique(wrong).size
        rows_right += int(wrong.size == 0)
    positions, positions_right = int(mask.sum()), int(correct.sum())
    return {
        "item_accuracy": items_right / items if items else float("nan"),
        "sequence_accuracy": rows_right / len(batch) if len(batch) else float("nan"),
        "token_accuracy": positions_right / positions if positions else float("nan"),
        "items": items, "items_right": items_right,
        "sequences": len(batch), "sequences_right": rows_right,
        "positions": positions, "positions_right": positions_right,
    }


class Task(abc.ABC):
    """A generator of ``TaskBatch`` es, deterministic in the ``numpy.random.Generator`` it is given."""

    name: str = "task"
    objective: str = "predict"
    """``predict``: output ``t`` must predict ``targets[t]``. ``reconstruct`` (MAD compression): the
    targets are to be decoded from the representation at the last position alone."""

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Ids the task uses lie in ``[0, vocab_size)``."""

    @property
    @abc.abstractmethod
    def pad_id(self) -> int:
        """The id that pads short rows (never a target)."""

    @abc.abstractmethod
    def example(self, rng: np.random.Generator) -> tuple[RowBuilder, dict[str, Any]]:
        """One row and its metadata (answers, positions) drawn with ``rng``."""

    def batch(self, rng: np.random.Generator, batch_size: int) -> TaskBatch:
        if batch_size < 1:
            raise HopeError(f"batch size must be at least 1, got {batch_size}")
        return stack_rows([self.example(rng) for _ in range(batch_size)], self.pad_id)

    def sample(self, seed: int, batch_size: int) -> TaskBatch:
        """``batch`` with a fresh ``numpy.random.default_rng(seed)``: same seed, same batch."""
        return self.batch(np.random.default_rng(seed), batch_size)


def check_positive(name: str, value: int, minimum: int = 1) -> None:
    """Raise a one-line ``HopeError`` when an integer option is below its minimum."""
    if not isinstance(value, (int, np.integer)) or value < minimum:
        raise HopeError(f"{name} must be an integer >= {minimum}, got {value!r}")

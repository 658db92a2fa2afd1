"""The six MAD tasks, each checked against a solver that replays the row."""

import numpy as np
import pytest

from hope.tasks.base import IGNORE_INDEX
from hope.tasks.mad import (
    CompressionTask, FuzzyInContextRecallTask, InContextRecallTask, MemorizationTask, SelectiveCopyingTask,
)


@pytest.mark.parametrize("noisy", [False, True])
def test_in_context_recall_targets_are_values_of_seen_keys(noisy):
    task = InContextRecallTask(vocab_size=32, noise_vocab_size=16, frac_noise=0.2) if noisy else InContextRecallTask()
    symbols = task.vocab_size - task.noise_vocab_size
    batch = task.sample(0, 16)
    assert batch.input_ids.shape == (16, task.length)
    noise_pairs = 0
    for b in range(16):
        ids, targets = batch.input_ids[b], batch.targets[b]
        table: dict[int, int] = {}
        for p in range(0, task.length, 2):
            key, value = int(ids[p]), int(ids[p + 1])
            if key >= symbols:
                assert value >= symbols and targets[p] == IGNORE_INDEX
                noise_pairs += 1
                continue
            assert key < symbols // 2 <= value < symbols
            first = key not in table
            assert table.setdefault(key, value) == value
            assert targets[p] == (IGNORE_INDEX if first else value)
            assert targets[p + 1] == IGNORE_INDEX
        assert targets[task.length - 2] == ids[task.length - 1]  # the probe is a query
    assert (noise_pairs > 0) == noisy


@pytest.mark.parametrize("split", ["train", "test"])
def test_fuzzy_recall_rows_replay_from_pairs(split):
    task = FuzzyInContextRecallTask(split=split)
    batch = task.sample(2, 16)
    for b, info in enumerate(batch.info):
        ids, targets = batch.input_ids[b], batch.targets[b]
        pairs = info["pairs"]
        body = [t for k, v in pairs for t in k + v]
        pad = task.length - len(body)
        assert pad >= 0 and (ids[:pad] == task.pad_id).all() and ids[pad:].tolist() == body
        table, seen, expected, position = {}, set(), np.full(task.length, IGNORE_INDEX), pad
        for key, value in pairs:
            assert table.setdefault(key, value) == value
            assert len(set(key)) == len(key) and all(t < 7 for t in key) and all(7 <= t < 15 for t in value)
            if split == "test":
                assert len(key) == 3
            position += len(key)
            if key in seen:
                expected[position - 1: position + len(value) - 1] = value
            seen.add(key)
            position += len(value)
        assert np.array_equal(targets, expected)
        assert pairs[-1][0] in {k for k, _ in pairs[:-1]}


def test_selective_copying_targets_are_the_scattered_tokens_in_order():
    task = SelectiveCopyingTask()
    batch = task.sample(3, 8)
    blank, copy = task.vocab_size - 2, task.vocab_size - 1
    for b in range(8):
        ids, targets = batch.input_ids[b], batch.targets[b]
        copy_at = int(np.flatnonzero(ids == copy)[0])
        scattered = [t for t in ids[:copy_at].tolist() if t != blank]
        assert len(scattered) == task.num_tokens and copy_at == task.length - task.num_tokens - 1
        assert (ids[copy_at + 1:] == blank).all()
        assert targets[copy_at + 1:].tolist() == scattered
        assert (targets[: copy_at + 1] == IGNORE_INDEX).all()


def test_compression_reconstructs_the_row():
    task = CompressionTask()
    batch = task.sample(0, 4)
    assert task.objective == "reconstruct"
    assert np.array_equal(batch.targets, batch.input_ids)
    assert (batch.input_ids[:, -1] == task.vocab_size - 1).all()
    assert (batch.input_ids[:, :-1] < task.vocab_size - 1).all()


def test_memorization_map_is_fixed_across_rows_and_seeds():
    task = MemorizationTask()
    mapping = task.key_value_map()
    assert len(set(mapping.values())) == len(mapping) == 127
    for seed in (0, 1):
        batch = task.sample(seed, 8)
        ids, targets = batch.input_ids, batch.targets
        assert (ids[:, 1::2] == task.vocab_size - 1).all()
        assert all(targets[b, p + 1] == mapping[int(ids[b, p])] for b in range(8) for p in range(0, task.length, 2))
    assert MemorizationTask(map_seed=1).key_value_map() != mapping

"""The shared row format: answer targets sit one position before their tokens; scoring by groups."""

import numpy as np
import pytest

from hope.errors import HopeError
from hope.tasks.base import IGNORE_INDEX, RowBuilder, TaskBatch, score_predictions, stack_rows
from hope.tasks.mqar import MQARTask


def test_answer_targets_are_next_tokens():
    row = RowBuilder()
    row.extend([5, 6, 7])
    start = row.extend_answer([8, 9])
    row.extend([1])
    row.extend_answer([4])
    ids, targets, groups = row.build()
    assert start == 3
    assert ids.tolist() == [5, 6, 7, 8, 9, 1, 4]
    assert targets.tolist() == [IGNORE_INDEX, IGNORE_INDEX, 8, 9, IGNORE_INDEX, 4, IGNORE_INDEX]
    assert groups.tolist() == [-1, -1, 0, 0, -1, 1, -1]
    for t in np.flatnonzero(targets != IGNORE_INDEX):
        assert targets[t] == ids[t + 1]


def test_labelled_positions_and_groups():
    row = RowBuilder()
    row.extend_labelled([1, 2, 3], [IGNORE_INDEX, 7, 8], one_group=False)
    row.extend_labelled([4, 5], [9, 9])
    _, targets, groups = row.build()
    assert targets.tolist() == [IGNORE_INDEX, 7, 8, 9, 9]
    assert groups.tolist() == [-1, 0, 1, 2, 2]


def test_answer_needs_context():
    with pytest.raises(ValueError, match="context"):
        RowBuilder().extend_answer([1])


def test_stacking_pads_without_targets():
    short, long = RowBuilder(), RowBuilder()
    short.extend([1])
    short.extend_answer([2])
    long.extend([3, 3, 3])
    long.extend_answer([4])
    batch = stack_rows([(short, {}), (long, {})], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 2, 0, 0], [3, 3, 3, 4]]
    assert batch.targets[0].tolist() == [2, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    assert batch.answer_mask.sum() == 2


def test_scores_count_groups_and_rows():
    row_a, row_b = RowBuilder(), RowBuilder()
    row_a.extend([1])
    row_a.extend_answer([2, 3])
    row_a.extend([0])
    row_a.extend_answer([4])
    row_b.extend([1])
    row_b.extend_answer([5])
    batch = stack_rows([(row_a, {}), (row_b, {})], pad_id=0)
    perfect = np.where(batch.answer_mask, batch.targets, 0)
    assert score_predictions(perfect, batch)["item_accuracy"] == 1.0
    wrong = perfect.copy()
    wrong[0, 1] = 99  # second token of the first answer of row 0
    scores = score_predictions(wrong, batch)
    assert scores["item_accuracy"] == pytest.approx(2 / 3)
    assert scores["sequence_accuracy"] == pytest.approx(1 / 2)
    assert scores["token_accuracy"] == pytest.approx(3 / 4)
    assert (scores["items"], scores["sequences"], scores["positions"]) == (3, 2, 4)


def test_bad_shapes_and_options_fail_clearly():
    with pytest.raises(ValueError, match="targets"):
        TaskBatch(np.zeros((2, 3), dtype=np.int64), np.zeros((2, 4), dtype=np.int64), np.zeros((2, 3), dtype=np.int64), ({}, {}))
    batch = MQARTask(length=16, num_kv_pairs=2, vocab_size=16).sample(0, 2)
    with pytest.raises(ValueError, match="predictions"):
        score_predictions(np.zeros((1, 16)), batch)
    with pytest.raises(HopeError, match="batch size"):
        MQARTask().sample(0, 0)

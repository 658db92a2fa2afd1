"""Class-incremental intents in context: every query's target checked against the dataset files and the row's own
labelled examples, parsed back from the tokens without the generator; determinism; bad options."""

import json

import numpy as np
import pytest

from hope.data.tokenizer import BytesTokenizer
from hope.errors import HopeError
from hope.tasks.base import IGNORE_INDEX
from hope.tasks.in_context_classes import InContextClassTask


def _true_labels(data_dir):
    """Text -> intent, read straight from the fixture's CLINC150 file."""
    data = json.loads((data_dir / "clinc150" / "data_full.json").read_text())
    return {text: label for split in ("train", "test") for text, label in data[split]}


def _parse(ids, targets, sep):
    """The row's labelled examples ``(text, label id)`` and queries ``(text, target)``, in order."""
    shots, queries, start, t = [], [], 0, 0
    while t < ids.size:
        if ids[t] == sep:
            text = bytes(ids[start:t].tolist()).decode()
            if targets[t] != IGNORE_INDEX:
                queries.append((text, int(targets[t])))
                start = t + 1
            else:
                shots.append((text, int(ids[t + 1])))
                start, t = t + 2, t + 1
        t += 1
    return shots, queries


@pytest.mark.parametrize("split", ["train", "test"])
def test_query_targets_are_the_labels_shown_for_their_intents(intent_data_dir, split):
    truth = _true_labels(intent_data_dir)
    task = InContextClassTask("clinc150", BytesTokenizer(), str(intent_data_dir), num_stages=2, classes_per_stage=3,
                              shots=2, queries_per_stage=3, split=split)
    batch = task.sample(0, 4)
    sep = BytesTokenizer.vocab_size
    for b in range(len(batch)):
        length = int((batch.input_ids[b] != task.pad_id).nonzero()[0].max()) + 1
        shots, queries = _parse(batch.input_ids[b, :length], batch.targets[b, :length], sep)
        assert len(shots) == 2 * 3 * 2 and len(queries) == 2 * 3
        label_of = {}
        for text, label in shots:
            assert label_of.setdefault(truth[text], label) == label  # one label per intent in a row
        assert len(label_of) == 6 and len(set(label_of.values())) == 6
        assert all(sep < label < task.vocab_size for label in label_of.values())
        stage_of = {truth[text]: k // 6 for k, (text, _) in enumerate(shots)}  # stages arrive in order
        assert sorted(stage_of.values()) == [0, 0, 0, 1, 1, 1]
        shown = {text for text, _ in shots}
        for text, target in queries:
            assert target == label_of[truth[text]]
            assert text not in shown  # queries read text the row never showed
            assert text.startswith(split)  # the fixture's texts name their split
        assert batch.groups[b][batch.targets[b] != IGNORE_INDEX].tolist() == list(range(len(queries)))


def test_query_stage_asks_one_stage_and_labels_change_per_row(intent_data_dir):
    truth = _true_labels(intent_data_dir)
    task = InContextClassTask("clinc150", BytesTokenizer(), str(intent_data_dir), num_stages=2, classes_per_stage=3,
                              shots=1, queries_per_stage=4, query_stage=0, split="test")
    batch = task.sample(1, 8)
    mappings = set()
    for b in range(len(batch)):
        shots, queries = _parse(batch.input_ids[b], batch.targets[b], BytesTokenizer.vocab_size)
        first_stage = {truth[text] for text, _ in shots[:3]}
        assert len(queries) == 4 and all(truth[text] in first_stage for text, _ in queries)
        mappings.add(tuple(sorted((truth[text], label) for text, label in shots)))
    assert len(mappings) > 1


def test_deterministic_in_the_generator(intent_data_dir):
    task = InContextClassTask("banking77", BytesTokenizer(), str(intent_data_dir), num_stages=2, classes_per_stage=2)
    first, again, other = task.sample(3, 2), task.sample(3, 2), task.sample(4, 2)
    assert np.array_equal(first.input_ids, again.input_ids) and np.array_equal(first.targets, again.targets)
    assert first.input_ids.shape != other.input_ids.shape or not np.array_equal(first.input_ids, other.input_ids)


def test_bad_options_raise_one_line_errors(intent_data_dir):
    data = str(intent_data_dir)
    with pytest.raises(HopeError, match="has 6 classes"):
        InContextClassTask("clinc150", data_dir=data, num_stages=7, classes_per_stage=1)
    with pytest.raises(HopeError, match="too few examples"):
        InContextClassTask("clinc150", data_dir=data, num_stages=1, shots=4)
    with pytest.raises(HopeError, match="query_stage"):
        InContextClassTask("clinc150", data_dir=data, num_stages=2, classes_per_stage=1, query_stage=2)
    with pytest.raises(HopeError, match="split must be one of train, test, shown"):
        InContextClassTask("clinc150", data_dir=data, split="valid")
    with pytest.raises(HopeError, match="unknown intent dataset"):
        InContextClassTask("snips", data_dir=data)


def test_shown_split_queries_repeat_a_text_shown_for_their_intent(intent_data_dir):
    truth = _true_labels(intent_data_dir)
    task = InContextClassTask("clinc150", BytesTokenizer(), str(intent_data_dir), num_stages=2, classes_per_stage=3,
                              shots=2, queries_per_stage=3, split="shown")
    batch = task.sample(0, 4)
    for b in range(len(batch)):
        shots, queries = _parse(batch.input_ids[b], batch.targets[b], BytesTokenizer.vocab_size)
        label_after = dict(shots)
        assert len(queries) == 6
        for text, target in queries:
            assert target == label_after[text]  # the label the row showed right after this very text
            assert truth[text] == next(truth[shown] for shown, label in shots if label == target)

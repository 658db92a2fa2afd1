"""Continual learning: data loading (tiny files in the real formats), stages, encoding, metrics."""

import gzip

import numpy as np
import pytest

from hope.data.tokenizer import BytesTokenizer
from hope.errors import HopeError
from hope.tasks.base import IGNORE_INDEX
from hope.tasks.continual import (
    SHIPPED_DATA_DIR, IntentEncoder, class_incremental_stages, continual_metrics, corpus_eras, default_data_dir,
    load_intents, seen_class_accuracy,
)


@pytest.mark.parametrize("name", ["clinc150", "banking77"])
def test_stages_partition_the_classes(intent_data_dir, name):
    dataset = load_intents(name, intent_data_dir)
    assert len(dataset.classes) == 6
    stages = class_incremental_stages(dataset, classes_per_stage=4, seed=1)
    assert [len(s.classes) for s in stages] == [4, 2]
    assert sorted(c for s in stages for c in s.classes) == sorted(dataset.classes)
    for stage in stages:
        assert {e.label for e in stage.train} == set(stage.classes) == {e.label for e in stage.test}
    assert sum(len(s.train) for s in stages) == len(dataset.train)
    assert all(e.text.startswith("test") for s in stages for e in s.test)
    again = class_incremental_stages(dataset, classes_per_stage=4, seed=1)
    other = class_incremental_stages(dataset, classes_per_stage=4, seed=2)
    assert again == stages and [s.classes for s in other] != [s.classes for s in stages]


def test_domains_and_caps(intent_data_dir):
    dataset = load_intents("clinc150", intent_data_dir)
    stages = class_incremental_stages(dataset, by_domain=True, max_train_per_class=2, max_test_per_class=1)
    assert sorted(s.name for s in stages) == ["one", "two"]
    assert all(len(s.train) == 2 * len(s.classes) and len(s.test) == len(s.classes) for s in stages)
    with pytest.raises(HopeError, match="no domains"):
        class_incremental_stages(load_intents("banking77", intent_data_dir), by_domain=True)


def test_num_stages_keeps_the_first_stages(intent_data_dir):
    dataset = load_intents("clinc150", intent_data_dir)
    assert class_incremental_stages(dataset, classes_per_stage=2, num_stages=2) == \
        class_incremental_stages(dataset, classes_per_stage=2)[:2]
    with pytest.raises(HopeError, match="num_stages=9 asks for more"):
        class_incremental_stages(dataset, classes_per_stage=2, num_stages=9)


def test_data_dir_override_and_gzip_files(intent_data_dir, tmp_path, monkeypatch):
    """``$HOPE_DATA_DIR`` replaces the shipped copy; a file may be plain or gzip-compressed (``NAME.gz``)."""
    monkeypatch.setenv("HOPE_DATA_DIR", str(intent_data_dir))
    assert default_data_dir() == intent_data_dir and len(load_intents("clinc150").classes) == 6
    packed = tmp_path / "packed"
    for path in intent_data_dir.rglob("*.*"):
        target = packed / path.relative_to(intent_data_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(target.with_name(target.name + ".gz"), "wb") as handle:
            handle.write(path.read_bytes())
    for name in ("clinc150", "banking77"):
        assert load_intents(name, packed) == load_intents(name, intent_data_dir)


def test_missing_data_is_a_clear_error(tmp_path):
    for name in ("clinc150", "banking77"):
        with pytest.raises(HopeError, match="--data-dir"):
            load_intents(name, tmp_path)
    with pytest.raises(HopeError, match="unknown intent dataset"):
        load_intents("dbpedia", tmp_path)


def test_shipped_data_is_the_default(monkeypatch):
    monkeypatch.delenv("HOPE_DATA_DIR", raising=False)
    assert default_data_dir() == SHIPPED_DATA_DIR
    clinc, banking = load_intents("clinc150"), load_intents("banking77")
    assert (len(clinc.classes), len(clinc.train), len(clinc.test)) == (150, 15000, 4500)
    assert (len(banking.classes), len(banking.train), len(banking.test)) == (77, 10003, 3080)
    assert len(class_incremental_stages(clinc)) == 10 and len(class_incremental_stages(banking)) == 11
    assert len(class_incremental_stages(clinc, by_domain=True)) == 10


def test_encoder_puts_the_class_at_the_separator(intent_data_dir):
    dataset = load_intents("clinc150", intent_data_dir)
    tok = BytesTokenizer()
    encoder = IntentEncoder(tok, dataset.classes, max_text_tokens=10)
    batch = encoder.encode(dataset.test[:5])
    assert encoder.vocab_size == 257 + 1 + 6
    for b, example in enumerate(dataset.test[:5]):
        row = batch.input_ids[b]
        sep = int(np.flatnonzero(row == encoder.sep_id)[0])
        assert sep == min(10, len(example.text)) and tok.decode(row[:sep]) == example.text[:10]
        assert batch.targets[b, sep] == encoder.label_id(example.label)
        assert (np.delete(batch.targets[b], sep) == IGNORE_INDEX).all()
    assert encoder.label_ids(dataset.classes[:2]).tolist() == [258, 259]


def test_eras_are_in_time_order_with_held_out_addresses():
    eras = corpus_eras()
    years = [(int(s.name.split("-")[0]), int(s.name.split("-")[1])) for s in eras]
    assert years == sorted(years) and years[0][0] == 1790
    for stage, (start, stop) in zip(eras, years):
        assert stage.train and stage.test
        assert all(start <= int(fid.split("-")[0]) <= stop for fid in stage.classes)
        assert not set(stage.test) & set(stage.train)


def test_metrics_by_hand():
    accuracy = [[0.9, 0.1, 0.0], [0.6, 0.8, 0.2], [0.5, 0.7, 0.9]]
    result = continual_metrics(accuracy)
    assert result["average"] == pytest.approx(0.7)
    assert result["forgetting"] == pytest.approx(((0.9 - 0.5) + (0.8 - 0.7)) / 2)
    assert result["backward_transfer"] == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)
    loss = [[2.0, 5.0], [3.0, 1.5]]
    result = continual_metrics(loss, higher_is_better=False)
    assert result["average"] == pytest.approx(2.25)
    assert result["forgetting"] == pytest.approx(1.0) and result["backward_transfer"] == pytest.approx(-1.0)
    assert continual_metrics([[0.5]]) == {"average": 0.5, "forgetting": 0.0, "backward_transfer": 0.0}
    assert seen_class_accuracy(accuracy, [10, 30, 60]) == pytest.approx([0.9, (6 + 24) / 40, (5 + 21 + 54) / 100])
    with pytest.raises(ValueError, match="square"):
        continual_metrics([[1.0, 2.0]])

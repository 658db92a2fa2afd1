"""Every registered task builds at its train and eval settings, is deterministic by seed, and
keeps every id and target inside its vocabulary."""

import numpy as np
import pytest

from hope.errors import HopeError
from hope.tasks.base import Task
from hope.tasks.registry import FAMILIES, TASKS, ClassIncrementalStream, DomainStream, get_task, task_table
from hope.tasks.streams import CipherStream, LongDocumentStream

SEQUENCE_TASKS = [name for name, spec in TASKS.items() if spec.family not in ("continual", "stream")]


@pytest.mark.parametrize("name", SEQUENCE_TASKS)
def test_settings_build_deterministic_batches(name):
    spec = get_task(name)
    for overrides in [spec.train, *spec.evals.values()]:
        task = spec.build(**overrides)
        assert isinstance(task, Task)
        first, again, other = task.sample(0, 2), task.sample(0, 2), task.sample(1, 2)
        assert np.array_equal(first.input_ids, again.input_ids) and np.array_equal(first.targets, again.targets)
        if name not in ("formal_aa_star", "formal_abab_star", "formal_anbn", "formal_anbncn"):
            assert first.input_ids.shape != other.input_ids.shape or not np.array_equal(first.input_ids, other.input_ids)
        assert 0 <= first.input_ids.min() and first.input_ids.max() < task.vocab_size
        targets = first.targets[first.answer_mask]
        assert targets.size and 0 <= targets.min() and targets.max() < task.vocab_size
        assert (first.answer_mask.sum(axis=1) > 0).all()
        if "length" in overrides and overrides["length"] is not None:
            assert first.input_ids.shape[1] == overrides["length"]


def test_families_and_table():
    assert {spec.family for spec in TASKS.values()} == set(FAMILIES)
    table = task_table()
    assert all(name in table for name in TASKS)
    assert sum(spec.family == "formal" for spec in TASKS.values()) == 8
    assert sum(spec.family == "mad" for spec in TASKS.values()) == 6


def test_continual_specs_build_streams(tmp_path):
    stream = get_task("continual_clinc150").build(data_dir=str(tmp_path))
    assert isinstance(stream, ClassIncrementalStream)
    with pytest.raises(HopeError, match="--data-dir"):
        stream.stages()
    assert isinstance(get_task("continual_sotu_eras").build(), DomainStream)


def test_stream_specs_read_carried_and_reset():
    for name, kind in (("stream_cipher", CipherStream), ("stream_long_document", LongDocumentStream)):
        spec = get_task(name)
        streams = {label: spec.build(**overrides) for label, overrides in spec.evals.items()}
        assert all(isinstance(s, kind) for s in streams.values())
        assert {label: s.carry_state for label, s in streams.items()} == {"carried": True, "reset": False}


def test_unknown_names_and_options_fail_clearly():
    with pytest.raises(HopeError, match="hope tasks list"):
        get_task("mqar2")
    with pytest.raises(HopeError, match="bad option for task mqar"):
        get_task("mqar").build(num_pairs=3)

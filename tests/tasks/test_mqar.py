"""MQAR: keys, values and queries are consistent, checked by reading the row back."""

import numpy as np
import pytest

from hope.errors import HopeError
from hope.tasks.base import IGNORE_INDEX
from hope.tasks.mqar import MQARTask


@pytest.mark.parametrize("power_a,random_fill", [(0.01, True), (1.0, False)])
def test_every_key_is_queried_once_with_its_value(power_a, random_fill):
    task = MQARTask(length=128, num_kv_pairs=8, vocab_size=64, power_a=power_a, random_non_queries=random_fill)
    batch = task.sample(0, 16)
    assert batch.input_ids.shape == (16, 128)
    half = task.vocab_size // 2
    for b in range(16):
        ids, targets = batch.input_ids[b], batch.targets[b]
        keys, values = ids[0:16:2], ids[1:16:2]
        assert len(set(keys.tolist())) == 8 and len(set(values.tolist())) == 8
        assert ((keys >= 1) & (keys < half)).all() and ((values >= half) & (values < 64)).all()
        table = dict(zip(keys.tolist(), values.tolist()))
        queried = np.flatnonzero(targets != IGNORE_INDEX)
        assert sorted(ids[queried].tolist()) == sorted(table)
        assert all(targets[p] == table[int(ids[p])] for p in queried)
        assert ((queried >= 16) & ((queried - 16) % 2 == 0)).all()
        assert len(set(batch.groups[b, queried].tolist())) == 8
        if not random_fill:
            rest = np.ones(128, dtype=bool)
            rest[:16] = False
            rest[queried] = False
            assert (ids[rest] == 0).all()


def test_power_law_puts_queries_early():
    near = MQARTask(length=512, num_kv_pairs=8, power_a=0.01).sample(1, 32)
    uniform = MQARTask(length=512, num_kv_pairs=8, power_a=1.0).sample(1, 32)
    mean_position = lambda batch: np.mean([np.flatnonzero(t != IGNORE_INDEX).mean() for t in batch.targets])
    assert mean_position(near) < mean_position(uniform)


def test_deterministic_by_seed():
    task = MQARTask()
    assert np.array_equal(task.sample(5, 4).input_ids, task.sample(5, 4).input_ids)
    assert not np.array_equal(task.sample(5, 4).input_ids, task.sample(6, 4).input_ids)


def test_bad_options_fail_clearly():
    with pytest.raises(HopeError, match="4 \\* num_kv_pairs"):
        MQARTask(length=32, num_kv_pairs=16)
    with pytest.raises(HopeError, match="even"):
        MQARTask(length=101)
    with pytest.raises(HopeError, match="too few keys"):
        MQARTask(length=256, num_kv_pairs=16, vocab_size=16)

"""benchmarks/memory_capacity.py scores what a memory stores against closed forms of the matrix memory."""

import importlib.util
from pathlib import Path

import pytest
import torch

from hope.models.hope.config import HopeConfig
from hope.models.hope.memory_bank import MemoryBank

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "memory_capacity.py"
_SPEC = importlib.util.spec_from_file_location("memory_capacity", _PATH)
capacity = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(capacity)

TRIALS, DIM = 8, 6


def _bank(**overrides):
    torch.manual_seed(0)
    config = HopeConfig(d_model=DIM * TRIALS, n_heads=TRIALS, n_layers=1, vocab_size=2, **overrides)
    return MemoryBank(config, ("mem",), read="previous").double()


def test_the_keys_are_orthonormal_while_they_fit_and_every_vector_has_unit_norm():
    keys, values = capacity.unit_pairs(torch.Generator().manual_seed(0), TRIALS, DIM, DIM)
    torch.testing.assert_close(keys @ keys.mT, torch.eye(DIM, dtype=torch.float64).expand(TRIALS, DIM, DIM))
    torch.testing.assert_close(values.norm(dim=-1), torch.ones(TRIALS, DIM, dtype=torch.float64))
    keys, _ = capacity.unit_pairs(torch.Generator().manual_seed(0), TRIALS, DIM + 2, DIM)
    torch.testing.assert_close(keys.norm(dim=-1), torch.ones(TRIALS, DIM + 2, dtype=torch.float64))


@pytest.mark.parametrize("eta", [0.3, 0.9, 1000.0])
@pytest.mark.parametrize("chunk", [1, 3, 16])
def test_a_matrix_learning_orthonormal_keys_by_gd_misses_one_minus_its_proximal_step(eta, chunk):
    """From the identity, one GD step per key with the curvature-counting proximal step ``eta / (1 + 2 eta)``
    leaves ``W k_i = (1 - eta') k_i + eta' v_i`` for orthonormal keys, whatever the order and the chunking: the change
under each key points exactly to its value."""
    keys, values = capacity.unit_pairs(torch.Generator().manual_seed(1), TRIALS, 5, DIM)
    scores = capacity.store_and_recall(_bank(memory="linear", dgd=False), keys, values, eta, chunk)
    assert scores["missing"] == pytest.approx(1 - eta / (1 + 2 * eta), rel=1e-9)
    assert scores["direction"] == 1.0


def test_a_memory_that_never_moves_recalls_only_by_chance_and_misses_everything():
    keys, values = capacity.unit_pairs(torch.Generator().manual_seed(2), TRIALS, 4, DIM)
    scores = capacity.store_and_recall(_bank(memory="deep"), keys, values, 1e-12, 4)
    assert scores["missing"] == pytest.approx(1.0, abs=1e-9)
    assert scores["recall"] < 0.6

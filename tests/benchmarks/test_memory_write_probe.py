"""benchmarks/memory_write_probe.py: each token's own write, against the closed form of a matrix memory."""

import importlib.util
from pathlib import Path

import pytest
import torch

from hope.models.hope.config import HopeConfig
from hope.models.hope.memory_bank import MemoryBank
from hope.tasks.config import TaskRunConfig
from hope.tasks.runner import QUICK_MODEL, run_task

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "memory_write_probe.py"
_SPEC = importlib.util.spec_from_file_location("memory_write_probe", _PATH)
write_probe = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(write_probe)


def test_one_gd_step_of_a_matrix_memory_leaves_one_minus_its_proximal_step_unwritten():
    """``W' k = W k - eta' (W k - v_hat)`` for a unit key, with ``eta' = eta / (1 + 2 eta)`` (the proximal step with
    the l2 objective's curvature): whatever ``W``, ``v`` and the token's place in the chunk."""
    torch.manual_seed(0)
    bank = MemoryBank(HopeConfig(d_model=12, n_heads=3, n_layers=1, vocab_size=2, memory="linear", dgd=False),
                      ("mem",), read="previous").double()
    weights = {"w": torch.randn(2, 3, 4, 4, dtype=torch.float64)}
    chunk = {"k": torch.nn.functional.normalize(torch.randn(2, 5, 3, 4, dtype=torch.float64), dim=-1),
             "v": torch.randn(2, 5, 3, 4, dtype=torch.float64), "alpha": torch.ones(2, 5, 3, dtype=torch.float64),
             "eta": torch.rand(2, 5, 3, dtype=torch.float64)}
    missing = write_probe.own_write_missing(bank, weights, chunk)
    torch.testing.assert_close(missing, 1 - chunk["eta"] / (1 + 2 * chunk["eta"]))


def test_the_probe_reads_a_saved_mqar_run_layer_by_layer(tmp_path):
    run = tmp_path / "run"
    run_task(TaskRunConfig(task="mqar", arch="hope", out=str(run), steps=1, batch_size=2, eval_examples=2,
                           lengths=(32,), options={"length": 32, "num_kv_pairs": 2, "vocab_size": 16},
                           model=dict(QUICK_MODEL), save_model=True, progress=False))
    result = write_probe.probe(run, rows=2, seed=0)
    assert len(result["layers"]) == QUICK_MODEL["n_layers"] and result["memory"] == "deep"
    for layer in result["layers"]:
        assert 0 < layer["eta_pairs"] < 1 and 0 < layer["eta_rest"] < 1 and layer["missing_pairs"] > 0
    transformer = tmp_path / "transformer"
    run_task(TaskRunConfig(task="mqar", arch="transformer", out=str(transformer), steps=1, batch_size=2,
                           eval_examples=2, lengths=(32,), options={"length": 32, "num_kv_pairs": 2, "vocab_size": 16},
                           model=dict(QUICK_MODEL), save_model=True, progress=False))
    with pytest.raises(SystemExit, match="this measures Hope's self-modifying Titans"):
        write_probe.probe(transformer, rows=2, seed=0)

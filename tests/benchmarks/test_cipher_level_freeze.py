"""benchmarks/cipher_level_freeze.py keeps exactly the levels it names out of one segment's steps."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import torch

from hope.models import build
from hope.tasks.config import TaskRunConfig
from hope.tasks.runner import QUICK_MODEL, run_task, stream_losses

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "cipher_level_freeze.py"
_SPEC = importlib.util.spec_from_file_location("cipher_level_freeze", _PATH)
freeze = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(freeze)

SEGMENTS = (("A1", 0, 16), ("B1", 16, 32), ("A2", 32, 48))
WINDOW = 4


def _model(periods=(4, 8)):
    torch.manual_seed(0)
    return build("hope", "tiny", vocab_size=17, d_model=16, n_layers=2, n_heads=2, chunk_size=4, memory_chunk_size=4,
                 cms_periods=periods, cms_lr=0.5).double().eval()


def _ids(length=48, rows=2):
    return np.random.default_rng(0).integers(0, 17, (rows, length + 1))


def _levels(state, level):
    return [w for block in state.layers for w in block.channel.levels[level]]


def test_the_calls_kept_out_are_those_that_step_on_the_segments_targets():
    assert list(freeze.frozen_calls(SEGMENTS, "B1", WINDOW)) == [20, 24, 28, 32]


def test_freezing_nothing_reads_as_the_task_runner_does():
    model, ids = _model(), _ids()
    losses, _ = freeze.read(model, ids, WINDOW)
    np.testing.assert_allclose(losses, stream_losses(model, ids, WINDOW, True, torch.device("cpu")), rtol=1e-12)


def test_freezing_every_level_everywhere_reads_as_static_levels():
    model, ids = _model(), _ids()
    static = _model((None, None))
    static.load_state_dict(model.state_dict())
    losses, _ = freeze.read(model, ids, WINDOW, (0, 1), range(0, 48, WINDOW))
    np.testing.assert_allclose(losses, stream_losses(static, ids, WINDOW, True, torch.device("cpu")), rtol=1e-12)
    learning, _ = freeze.read(model, ids, WINDOW)
    assert not np.allclose(losses, learning)


def test_a_level_kept_out_of_b_returns_to_a_with_the_weights_a_left_it():
    model, ids = _model(), _ids()
    calls = freeze.frozen_calls(SEGMENTS, "B1", WINDOW)
    full, _ = freeze.read(model, ids, WINDOW, (1,), calls)
    _, after_a = freeze.read(model, ids[:, :21], WINDOW, (1,), calls)  # calls 0..16: A's last step (at 16) taken
    _, before_a2 = freeze.read(model, ids[:, :37], WINDOW, (1,), calls)  # calls 0..32: every step on B's targets
    for kept, left in zip(_levels(before_a2, 1), _levels(after_a, 1)):
        torch.testing.assert_close(kept, left, rtol=0, atol=0)
    assert not all(torch.equal(a, b) for a, b in zip(_levels(before_a2, 0), _levels(after_a, 0)))
    unfrozen, _ = freeze.read(model, ids, WINDOW)
    np.testing.assert_array_equal(full[:, :20], unfrozen[:, :20])  # A and B's first call read as before
    assert not np.allclose(full[:, 32:], unfrozen[:, 32:])
    for memory in (m for m in model.modules() if isinstance(m, freeze.CMS)):
        assert torch.isfinite(memory.log_lr).all()  # the learning rates are put back


def test_a_learning_rate_scale_reads_as_a_model_with_those_learning_rates():
    model, ids = _model(), _ids()
    scaled = _model()
    for memory in (m for m in scaled.modules() if isinstance(m, freeze.CMS)):
        memory.log_lr.data += torch.tensor([1.0, 4.0], dtype=torch.float64).log()
    losses, _ = freeze.read(model, ids, WINDOW, lr_scale=(1.0, 4.0))
    np.testing.assert_allclose(losses, stream_losses(scaled, ids, WINDOW, True, torch.device("cpu")), rtol=1e-12)


def test_the_script_reads_a_saved_run_as_it_was_scored_and_writes_its_tables(tmp_path, monkeypatch):
    rng = np.random.default_rng(7)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz ABC.,"))
    for k in range(60):
        (tmp_path / f"doc{k:03d}.txt").write_text("".join(rng.choice(letters, size=int(rng.integers(150, 300)))))
    run = tmp_path / "run"
    run_task(TaskRunConfig(task="stream_cipher", arch="hope", out=str(run), steps=2, batch_size=2, seq_len=16,
                           stream=True, eval_examples=2, eval_batch_size=2, save_model=True, progress=False,
                           options={"segment": 48, "alphabet": "letters", "data": str(tmp_path)},
                           model={**QUICK_MODEL, "cms_periods": (16, 32), "chunk_size": 16, "memory_chunk_size": 16}))
    for extra in ([], ["--equal-token-rate"]):
        monkeypatch.setattr(sys, "argv", ["cipher_level_freeze.py", "--run", str(run), "--docs", str(tmp_path / "docs"),
                                          "--name", "probe", *extra])
        freeze.main()
        written = json.loads((tmp_path / "docs" / "probe.json").read_text())
        assert list(written["results"]) == ["none", "L0", "L1", "all"]
        assert written["lr_scale"] == ([1.0, 2.0] if extra else None)
        table = (tmp_path / "docs" / "probe.md").read_text()
        assert "| none (as read) |" in table and "| level 1 (period 32) |" in table and "| all |" in table

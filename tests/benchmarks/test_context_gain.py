"""benchmarks/context_gain.py splits the carried-minus-reset loss by window offset and by stream position, and
reads a saved run (and a --steps 0 reading of it) as the task runner scored it."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from hope.errors import HopeError
from hope.tasks.config import TaskRunConfig
from hope.tasks.runner import QUICK_MODEL, run_task

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "context_gain.py"
_SPEC = importlib.util.spec_from_file_location("context_gain", _PATH)
context_gain = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(context_gain)


def test_gains_by_offset_and_by_late_position_by_hand():
    """Window 4 over 16 positions: the reset reading is worse by 3 - offset nats at offsets 0-2 and by 0.5 at
    offset 3 from the second window on; the first window reads the same both ways."""
    reset = np.zeros((2, 16))
    for position in range(4, 16):
        reset[:, position] = [3.0, 2.0, 1.0, 0.5][position % 4]
    result = context_gain.gains(np.zeros((2, 16)), reset, window=4, min_offset=3)
    assert context_gain.offset_bins(4) == [(0, 1), (1, 4)]
    assert result["by_offset"] == [[0, 1, -3.0], [1, 4, pytest.approx(-3.5 / 3)]]
    assert result["mean"] == pytest.approx(-6.5 / 4)
    assert result["by_position"] == [[0, 16, -0.5]]  # offset 3 only, from the second window on
    with pytest.raises(HopeError, match="no second window"):
        context_gain.gains(np.zeros((1, 4)), np.zeros((1, 4)), window=4, min_offset=1)


def test_the_script_reads_a_run_and_its_probe_as_they_were_scored(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz ."))
    for k in range(60):
        (tmp_path / f"doc{k:03d}.txt").write_text("".join(rng.choice(letters, size=int(rng.integers(150, 300)))))
    common = {"task": "stream_long_document", "seq_len": 16, "eval_examples": 2, "eval_batch_size": 1,
              "progress": False, "options": {"length": 64, "data": str(tmp_path)}}
    run = tmp_path / "run"
    trained = run_task(TaskRunConfig(**common, arch="gated-deltanet", out=str(run), steps=2, batch_size=2,
                                     save_model=True, model=QUICK_MODEL))
    probe = tmp_path / "probe"
    run_task(TaskRunConfig(**common, out=str(probe), steps=0, checkpoint=str(run / "model")))
    monkeypatch.setattr(sys, "argv", ["context_gain.py", "--runs", str(run), str(probe), "--min-offset", "4",
                                      "--docs", str(tmp_path / "docs"), "--name", "gain"])
    context_gain.main()
    written = json.loads((tmp_path / "docs" / "gain.json").read_text())
    assert list(written) == ["gated-deltanet (d_model=32, n_heads=2, n_layers=2)", "gated-deltanet (from run)"]
    runs = [gain for pooled in written.values() for gain in pooled]
    assert runs[0] == runs[1]  # the probe reads the same model on the same rows
    carried, reset = trained["evals"]["carried"]["loss"], trained["evals"]["reset"]["loss"]
    for gain in runs:
        assert gain["carried"] == pytest.approx(carried, rel=1e-5) and gain["reset"] == pytest.approx(reset, rel=1e-5)
        assert gain["mean"] * 48 / 64 == pytest.approx(carried - reset, abs=1e-6)  # the first window reads alike
        assert [b[:2] for b in gain["by_position"]] == [[0, 64]]
    table = (tmp_path / "docs" / "gain.md").read_text()
    assert "| model | seeds | all | 0 | 1-3 | 4-15 |" in table
    if importlib.util.find_spec("matplotlib"):
        assert "![gain by position](gain.png)" in table and (tmp_path / "docs" / "gain.png").stat().st_size > 0

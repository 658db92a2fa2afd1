"""benchmarks/length_states.py measures how far a state moves along a language's cycle, and reads a saved (abab)*
model's labels as the task runner scored them."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from hope.errors import HopeError
from hope.tasks.config import TaskRunConfig
from hope.tasks.runner import QUICK_MODEL, run_task

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "length_states.py"
_SPEC = importlib.util.spec_from_file_location("length_states", _PATH)
length_states = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(length_states)


def test_cycle_change_and_novelty_by_hand():
    """Period 2, longest training prefix 3: a state that settles into a 2-cycle from t = 2 on, then leaves it."""
    cycle = {0: [1.0, 0.0], 1: [0.0, 1.0]}
    hidden = np.array([[2.0, 0.0], [0.0, 2.0]] + [cycle[t % 2] for t in range(2, 6)] + [[1.0, 0.5]])
    found = length_states.cycle_measures(hidden, period=2, longest=3)
    assert found["cycle_change"] == pytest.approx([0.5, 0.5, 0.0, 0.0, 0.5])  # t = 2 .. 6
    # t = 4, 5 meet a state of their phase at a training prefix (t = 2, 3); t = 6 is 0.5 from [1, 0] (t = 2)
    assert found["novelty"] == pytest.approx([0.0, 0.0, 0.5])


def test_the_script_reads_a_saved_run_as_the_runner_scored_it(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run_task(TaskRunConfig(task="formal_abab_star", arch="gated-deltanet", steps=3, batch_size=2, eval_examples=4,
                           eval_batch_size=4, answer_rows=4, progress=False, save_model=True, model=QUICK_MODEL,
                           out=str(run)))
    monkeypatch.setattr(sys, "argv", ["length_states.py", "--runs", str(run), "--docs", str(tmp_path / "docs"),
                                      "--name", "states"])
    length_states.main()
    written = json.loads((tmp_path / "docs" / "states.json").read_text())
    assert (written["longest_training_string"], written["period"], written["length"]) == (48, 4, 100)
    [[scores]] = written["models"].values()
    assert scores["member"] == [t % 4 == 0 for t in range(101)]
    assert len(scores["cycle_change"]) == 97 and len(scores["novelty"]) == 52
    for line in (run / "answers.jsonl").read_text().splitlines():  # every scored string is a prefix of the one read
        [answer] = json.loads(line)["answers"]
        right = [e == p for e, p in zip(answer["expected"], answer["predicted"])]
        assert right == scores["right"][: len(right)]
    monkeypatch.setattr(sys, "argv", ["length_states.py", "--runs", str(run), "--length", "40", "--docs",
                                      str(tmp_path / "docs"), "--name", "states"])
    with pytest.raises(HopeError, match="longest training string"):
        length_states.main()

"""benchmarks/length_errors.py finds where each scored string first goes wrong and reads a formal-language run's
answers back as the runner scored them."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from hope.errors import HopeError
from hope.tasks.config import TaskRunConfig
from hope.tasks.runner import QUICK_MODEL, run_task

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "length_errors.py"
_SPEC = importlib.util.spec_from_file_location("length_errors", _PATH)
length_errors = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(length_errors)


def test_first_errors_and_accuracy_by_prefix_by_hand():
    strings = [(np.array([1, 0, 1, 0]), np.array([1, 0, 1, 0])),  # right throughout
               (np.array([1, 0, 1, 0, 1, 0]), np.array([1, 0, 0, 0, 0, 0])),  # first wrong at prefix 2
               (np.array([1, 0, 1]), np.array([1, 1, 1]))]  # first wrong at prefix 1
    assert length_errors.first_errors(strings) == [None, 2, 1]
    assert length_errors.by_prefix(strings) == [1.0, pytest.approx(2 / 3), pytest.approx(2 / 3), 1.0, 0.0, 1.0]
    found = length_errors.summary(strings, longest=1)
    assert (found["item_accuracy"], found["failed"]) == (pytest.approx(1 / 3), 2)
    assert (found["first_error_within"], found["first_error_past"], found["first_error_median"]) == (1, 1, 1.5)


def test_the_script_reads_a_runs_answers_and_refuses_a_partial_record(tmp_path, monkeypatch):
    common = {"task": "formal_dyck1", "arch": "gated-deltanet", "steps": 2, "batch_size": 2, "eval_examples": 6,
              "eval_batch_size": 4, "progress": False, "model": QUICK_MODEL}
    run = tmp_path / "run"
    result = run_task(TaskRunConfig(**common, out=str(run), answer_rows=6))
    monkeypatch.setattr(sys, "argv", ["length_errors.py", "--runs", str(run), "--docs", str(tmp_path / "docs"),
                                      "--name", "errors"])
    length_errors.main()
    written = json.loads((tmp_path / "docs" / "errors.json").read_text())
    assert written["longest_training_string"] == 50  # Dyck-1's longest even length in bin0 (1-50)
    [scores] = [runs[0] for runs in written["models"].values()]
    for setting in ("bin0", "bin1"):
        assert scores[setting]["strings"] == 6
        assert scores[setting]["item_accuracy"] == pytest.approx(result["evals"][setting]["item_accuracy"])
        assert scores[setting]["first_error_within"] + scores[setting]["first_error_past"] == scores[setting]["failed"]
    assert len(scores["bin1"]["by_prefix"]) > 51  # bin1 strings are 51-100 symbols long
    partial = tmp_path / "partial"
    run_task(TaskRunConfig(**common, out=str(partial), answer_rows=2))
    with pytest.raises(HopeError, match="answer-rows"):
        length_errors.read_answers(partial)

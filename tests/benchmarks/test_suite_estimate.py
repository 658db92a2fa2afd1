"""benchmarks/suite_estimate.py's ``--speeds``: an earlier estimate's runs are rescaled to the suite's rows per step,
and a file that is not an estimate is refused in one line."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from hope.tasks.suites import get_suite, plan

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "suite_estimate.py"
_SPEC = importlib.util.spec_from_file_location("suite_estimate", _PATH)
estimate = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(estimate)


def _earlier(tmp_path: Path) -> Path:
    """An estimate of ``quick`` where every seed-0 run took 0.5 s per row at half its rows and 7 s to evaluate."""
    runs = []
    for run in plan(get_suite("quick"), "/nonexistent", [0], None):
        _, length, _ = estimate.shapes(run.config)
        rows = max(1, run.config.batch_size // 2)
        runs.append({"entry": run.entry.name, "experiment": run.entry.experiment, "arch": run.arch, "steps": 1,
                     "batch": [rows, length], "step_s": 0.5 * rows, "train_s": 0.5 * rows, "eval_s": 7.0,
                     "stream": run.entry.stream, "timed": "here"})
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps({"runs_seed0": runs}))
    return path


def test_every_run_reuses_its_seconds_per_row_at_the_suites_rows_and_steps(tmp_path, monkeypatch):
    earlier = _earlier(tmp_path)
    monkeypatch.setattr(sys, "argv", ["suite_estimate.py", "quick", "--seeds", "2", "--speeds", str(earlier),
                                      "--docs", str(tmp_path / "docs")])
    estimate.main()
    report = json.loads((tmp_path / "docs" / "suite_estimate_quick.json").read_text())
    runs = plan(get_suite("quick"), "/nonexistent", [0], None)
    assert len(report["runs_seed0"]) == len(runs)
    for row, run in zip(report["runs_seed0"], runs):
        assert row["timed"] == "earlier estimate"
        assert row["batch"][0] == run.config.batch_size
        assert row["train_s"] == pytest.approx(run.config.steps * run.config.batch_size * 0.5, abs=0.05)
        assert row["eval_s"] == 7.0
    total = sum(2 * (r.config.steps * r.config.batch_size * 0.5 + 7.0) for r in runs)
    assert report["hours_one_process"] * 3600 == pytest.approx(total, rel=1e-4)
    assert "reuse the speeds" in (tmp_path / "docs" / "suite_estimate_quick.md").read_text()


def test_a_file_that_is_not_an_estimate_is_refused_in_one_line(tmp_path, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text('{"runs": 3}')
    monkeypatch.setattr(sys, "argv", ["suite_estimate.py", "quick", "--speeds", str(bad), "--docs", str(tmp_path)])
    with pytest.raises(SystemExit, match="not an estimate written by this script"):
        estimate.main()

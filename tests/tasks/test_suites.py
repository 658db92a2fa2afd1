"""hope tasks suite: the suite definitions, a quick suite run through the CLI, resume, and the suite report."""

import dataclasses
import json

import pytest

from hope.cli import main
from hope.errors import HopeError
from hope.tasks.config import TaskRunConfig
from hope.data.tokenizer import BytesTokenizer
from hope.tasks.formal_languages import LANGUAGES
from hope.tasks.registry import get_task
from hope.tasks.runner import eval_settings
from hope.tasks.suites import (ARCHS, CPU_MODEL, MQAR_GRID, MQAR_LENGTHS, MQAR_PAIRS, MQAR_WIDTHS, PAPER_CPU, PAPER_SMALL,
                               SUITES,
                               get_suite, plan, run_suite)

STREAMING = "stream" in {f.name for f in dataclasses.fields(TaskRunConfig)}


def test_paper_cpu_runs_the_same_experiments_at_its_own_budget():
    """``paper-cpu`` has every experiment of ``paper-small`` (same tasks and Hope ablations), cut to its budget."""
    small, cpu = get_suite("paper-small"), get_suite("paper-cpu")
    experiments = lambda suite: {(e.experiment, e.task, e.archs, e.stream) for e in suite.runs}
    assert experiments(cpu) == experiments(small)
    assert {e.name for e in cpu.runs if e.experiment != "mqar"} <= {e.name for e in small.runs}
    grid = lambda suite: {(e.settings["model"]["d_model"], e.settings["options"]["length"],
                           e.settings["options"]["num_kv_pairs"]) for e in suite.runs if e.experiment == "mqar"}
    assert grid(cpu) == {(w, n, p) for w in (32, 64) for n, p in ((64, 4), (64, 16), (128, 4), (128, 8), (256, 4), (256, 16))}
    for entry in cpu.runs:
        steps = {"formal": PAPER_CPU.formal_steps, "niah": PAPER_CPU.niah_steps,
                 "mqar": PAPER_CPU.mqar_steps}.get(entry.experiment, PAPER_CPU.steps)
        assert entry.settings["steps"] == steps
        if entry.experiment != "mqar":
            assert {**CPU_MODEL, **entry.settings["model"]} == entry.settings["model"]
    cipher = [e for e in cpu.runs if e.experiment == "cipher"]
    assert sorted(e.settings["model"].get("cms_levels", 0) for e in cipher) == [0, 1, 2]  # 0: all three levels


@pytest.mark.parametrize("budget", [PAPER_SMALL, PAPER_CPU])
def test_mqar_entries_read_the_same_tokens_per_step_at_every_length(budget):
    """Rows x length is the budget's tokens per step; on ``paper-cpu``'s diagonal (one pair per 16 tokens) every
    step also holds the same number of queries."""
    suite = get_suite("paper-small" if budget is PAPER_SMALL else "paper-cpu")
    mqar = [e for e in suite.runs if e.experiment == "mqar"]
    assert {e.settings["batch_size"] * e.settings["options"]["length"] for e in mqar} == {budget.mqar_tokens}
    assert all(e.settings["lengths"] == (e.settings["options"]["length"],) for e in mqar)
    diagonal = [e for e in mqar if e.settings["options"]["length"] == 16 * e.settings["options"]["num_kv_pairs"]]
    assert {e.settings["batch_size"] * e.settings["options"]["num_kv_pairs"] for e in diagonal} == \
        {budget.mqar_tokens // 16}
    assert {e.settings["options"]["length"] for e in diagonal} == set(MQAR_LENGTHS)


@pytest.mark.parametrize("suite_name, budget", [("paper-small", PAPER_SMALL), ("paper-cpu", PAPER_CPU)])
def test_letter_cipher_entries_step_every_cms_level_several_times_per_segment(suite_name, budget):
    entries = [e for e in get_suite(suite_name).runs if e.experiment == "cipher_letters"]
    assert sorted(a for e in entries if e.name in ("cipher_letters/base", "cipher_letters/cms") for a in e.archs) == \
        sorted(ARCHS)
    window = budget.letter_cipher_seq_len
    for entry in entries:
        settings = entry.settings
        assert entry.stream and settings["seq_len"] == window
        assert settings["batch_size"] * window == budget.stream_rows * budget.stream_seq_len  # tokens per step
        assert settings["options"]["alphabet"] == ("none" if entry.name.endswith("plain") else "letters")
        periods = settings.get("model", {}).get("cms_periods")
        assert (periods is None) == (entry.name == "cipher_letters/base")
        if periods:
            assert all(p % window == 0 for p in periods) and settings["options"]["segment"] >= 4 * max(periods)
    hope = {e.name.removeprefix("cipher_letters/hope_"): e.settings["model"] for e in entries if e.archs == ("hope",)}
    assert {name: {k: v for k, v in m.items() if k not in ("cms_periods", *CPU_MODEL)} for name, m in hope.items()} == {
        "cms1": {"cms_levels": 1}, "cms2": {"cms_levels": 2}, "frozen": {"test_time_learning": False}, "plain": {}}


@pytest.mark.parametrize("suite_name", sorted(SUITES))
def test_every_sequence_entry_builds_its_task_at_its_training_and_evaluation_lengths(suite_name):
    """A row too short for its task fails only when its run starts, so every entry is built here first."""
    for entry in get_suite(suite_name).runs:
        spec = get_task(entry.task)
        if spec.family not in ("recall", "niah", "formal"):
            continue
        options = {**spec.train, **entry.settings.get("options", {})}
        tokenizer = BytesTokenizer() if spec.text else None
        for overrides in [{}, *eval_settings(spec, entry.settings.get("lengths", ())).values()]:
            spec.build(tokenizer, **{**options, **overrides})


def test_paper_small_lists_every_experiment_of_issue_17(tmp_path):
    suite = get_suite("paper-small")
    by_experiment = {}
    for entry in suite.runs:
        by_experiment.setdefault(entry.experiment, []).append(entry)
    assert set(by_experiment) == {"formal", "mqar", "cipher", "cipher_letters", "long_document", "niah", "in_context"}
    assert sorted(e.task for e in by_experiment["in_context"] if e.archs is None) == ["in_context_banking77",
                                                                                   "in_context_clinc150"]
    hope_levels = sorted((e.task, e.settings["model"]["cms_levels"]) for e in by_experiment["in_context"] if e.archs)
    assert hope_levels == [(f"in_context_{d}", k) for d in ("banking77", "clinc150") for k in (1, 2)]
    assert sorted(e.task for e in by_experiment["formal"]) == sorted(f"formal_{name}" for name in LANGUAGES)
    assert all(e.settings["steps"] >= 2000 for e in suite.runs)
    grid = {(e.settings["model"]["d_model"], e.settings["options"]["length"], e.settings["options"]["num_kv_pairs"])
            for e in by_experiment["mqar"]}
    assert grid == {(w, n, p) for w in MQAR_WIDTHS for n, p in MQAR_GRID}
    assert {(n, p) for n, p in MQAR_GRID} == {(n, p) for n in MQAR_LENGTHS for p in MQAR_PAIRS if 4 * p <= n}
    assert all(e.settings["model"]["tie_embeddings"] is False for e in by_experiment["mqar"])
    assert {p for _, _, p in grid} == {4, 8, 16, 32, 64} and {n for _, n, _ in grid} == {64, 128, 256}
    assert sorted(e.settings.get("model", {}).get("cms_levels", 0) for e in by_experiment["cipher"]) == [0, 1, 2]
    assert all(e.stream for e in by_experiment["cipher"] + by_experiment["long_document"])
    for entry in by_experiment["niah"]:
        train = entry.settings["options"]["length"]
        assert entry.settings["lengths"] == tuple(train * k for k in (1, 2, 4, 8, 16))
        assert entry.settings["eval_chunk"] == train  # the state carried past the training length
    runs = plan(suite, tmp_path, [0, 1, 2])
    assert len(runs) == 3 * sum(len(e.archs or ARCHS) for e in suite.runs)
    for run in runs:
        assert run.config.task == run.entry.task and run.out == tmp_path / run.entry.name / run.arch / f"seed-{run.seed}"
        if run.entry.stream:  # streams where this build can, else says why
            assert getattr(run.config, "stream", False) != run.reason.startswith("needs streaming training")
            assert STREAMING or run.reason
        else:
            assert run.reason == ""


def test_quick_suite_runs_resumes_and_reports(tmp_path, capsys):
    out = tmp_path / "suite"
    assert 0 == main(["tasks", "suite", "quick", "--seeds", "0", "--archs", "transformer", "--out", str(out), "--no-progress"])
    printed = capsys.readouterr().out
    runs = len(SUITES["quick"].runs)
    assert f"suite quick: {runs} of {runs} runs finished (0 already done), 0 skipped" in printed
    record = json.loads((out / "suite.json").read_text())
    assert record["finished"] == runs and record["seconds"] > 0 and record["skipped"] == []
    results = {e.name: json.loads((out / e.name / "transformer" / "seed-0" / "result.json").read_text())
               for e in SUITES["quick"].runs}
    assert results["mqar/L64/kv8"]["task_options"]["num_kv_pairs"] == 8
    assert set(results["cipher"]["evals"]) == {"carried", "reset"}
    assert "A2" in results["cipher"]["evals"]["carried"]["returns"]
    report = (out / "report.md").read_text()
    for section in ("## formal", "## mqar", "## cipher", "## long_document", "## niah", "## in_context", "| L64 kv4 | L64 kv8 | L128 kv8 |",
                    "Loss by position, long_document"):
        assert section in report
    assert (out / "report_mqar.png").is_file()

    redo = out / "mqar/L64/kv4/transformer/seed-0"
    before = json.loads((redo / "result.json").read_text())
    (redo / "result.json").unlink()  # as if interrupted there
    kept = (out / "formal/parity/transformer/seed-0/result.json").stat().st_mtime_ns
    record = run_suite("quick", out, [0], ["transformer"], progress=False)
    assert record["resumed"] == runs - 1 and record["finished"] == runs
    again = json.loads((redo / "result.json").read_text())
    assert again["evals"] == before["evals"] and again["loss_curve"] == before["loss_curve"]  # same seed, same run
    assert record["seconds"] > record["this_call_seconds"]  # time adds up over calls
    assert (out / "formal/parity/transformer/seed-0/result.json").stat().st_mtime_ns == kept
    assert len((redo / "metrics.jsonl").read_text().splitlines()) == len(
        (out / "mqar/L64/kv8/transformer/seed-0/metrics.jsonl").read_text().splitlines())

    assert main(["tasks", "report", str(out)]) == 0
    assert "wrote " + str(out / "report.md") in capsys.readouterr().out

    changed = json.loads((redo / "result.json").read_text())
    changed["config"]["steps"] = 400  # as if the suite's budget was changed after this run
    (redo / "result.json").write_text(json.dumps(changed))
    with pytest.raises(HopeError, match=r"made with steps=400 but entry mqar/L64/kv4 now asks steps=3"):
        run_suite("quick", out, [0], ["transformer"], progress=False)
    assert json.loads((redo / "result.json").read_text()) == changed  # nothing rerun or removed


@pytest.mark.slow
def test_suite_jobs_run_in_parallel_processes_and_resume(tmp_path):
    out = tmp_path / "suite"
    first = run_suite("quick", out, [0], ["transformer"], jobs=2, progress=False)
    runs = len(SUITES["quick"].runs)
    assert first["finished"] == runs and first["skipped"] == [] and first["resumed"] == 0
    assert run_suite("quick", out, [0], ["transformer"], jobs=2, progress=False)["resumed"] == runs


def test_bad_suite_input_raises_one_line_errors(tmp_path, capsys):
    with pytest.raises(HopeError, match="unknown suite"):
        run_suite("nope", tmp_path, [0])
    with pytest.raises(HopeError, match="unknown arch 'mamba'"):
        run_suite("quick", tmp_path, [0], ["hope", "mamba"])
    with pytest.raises(HopeError, match="jobs"):
        run_suite("quick", tmp_path, [0], jobs=0)
    with pytest.raises(HopeError, match="no entry of suite quick starts with 'mqar/L256'"):
        run_suite("quick", tmp_path, [0], entries=["formal", "mqar/L256"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "suite.json").write_text(json.dumps({"suite": "paper-small"}))
    with pytest.raises(HopeError, match="holds suite 'paper-small'"):
        run_suite("quick", tmp_path / "other", [0])
    assert main(["tasks", "report", str(tmp_path / "other"), str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "hope: error: give --out FILE (only a suite directory has a default report file)"


def test_entries_runs_only_the_named_entries_and_counts_the_whole_suite(tmp_path):
    out = tmp_path / "suite"
    record = run_suite("quick", out, [0], ["transformer"], progress=False, entries=["mqar", "formal/parity"])
    done = sorted(str(p.relative_to(out).parent.parent.parent) for p in out.rglob("result.json"))
    assert done == ["formal/parity", "mqar/L128/kv8", "mqar/L64/kv4", "mqar/L64/kv8"]
    assert record["runs"] == len(SUITES["quick"].runs) and record["finished"] == 4
    assert run_suite("quick", out, [0], ["transformer"], progress=False, entries=["niah"])["resumed"] == 4


def test_the_record_is_written_before_and_after_every_run(tmp_path, monkeypatch):
    """A suite killed without warning (no ``finally``) still leaves suite.json counting the runs done."""
    import hope.tasks.suites as suites

    out, seen = tmp_path / "suite", []
    real = suites._run_one

    def run_one(config):
        seen.append(json.loads((out / "suite.json").read_text())["finished"])
        return real(config)

    monkeypatch.setattr(suites, "_run_one", run_one)
    run_suite("quick", out, [0], ["transformer"], progress=False, entries=["mqar"])
    assert seen == [0, 1, 2]
    assert json.loads((out / "suite.json").read_text())["finished"] == 3


def test_suite_workers_end_with_the_suite_process(tmp_path):
    """A killed suite leaves no worker running the runs queued to it (they went on for an hour before)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "suite_parent.py"
    script.write_text("import os, time\n"
                      "from hope.tasks.suites import worker_pool\n"
                      "if __name__ == '__main__':\n"
                      "    pool = worker_pool(1)\n"
                      "    print(pool.submit(os.getpid).result(), flush=True)\n"
                      "    pool.submit(time.sleep, 60)\n"
                      "    time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    time.sleep(1.0)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.kill(worker, signal.SIGKILL)
    raise AssertionError(f"worker {worker} outlived its suite process by 15 s")

import json
import subprocess
import sys

import pytest

from hope.cli import build_parser, main
from hope.cli import tasks as tasks_cli
from hope.cli.train import config_from_args as train_config_from_args
from hope.tasks import runner as tasks_runner


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def train_args(tmp_path, text_folder, *extra):
    return ("train", "--out", str(tmp_path / "run"), "--data", str(text_folder), "--tokenizer", "bytes",
            "--seq-len", "32", "--batch-size", "4", "--max-steps", "3", "--warmup-steps", "1",
            "--eval-windows", "2", "--no-progress", "--model", "d_model=32", "--model", "n_layers=1",
            "--model", "n_heads=2", *extra)


def test_train_eval_generate_end_to_end(tmp_path, text_folder, capsys):
    code, out, err = run(capsys, *train_args(tmp_path, text_folder))
    assert code == 0, err
    assert json.loads(out)["step"] == 3
    checkpoint = str(tmp_path / "run" / "checkpoint")
    code, out, err = run(capsys, "eval", "--checkpoint", checkpoint, "--data", str(text_folder), "--max-windows", "3")
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "eval_test.json").read_text())
    assert report["bits_per_byte"] > 0 and report["perplexity"] > 1 and report["seq_len"] == 32
    code, out, err = run(capsys, "generate", "--checkpoint", checkpoint, "--prompt", "Fellow", "--max-new-tokens", "5",
                         "--state", str(tmp_path / "state.safetensors"))
    assert code == 0, err
    assert out.startswith("Fellow") and (tmp_path / "state.safetensors").exists()
    code, out, err = run(capsys, "generate", "--checkpoint", checkpoint, "--prompt", " and", "--max-new-tokens", "2",
                         "--state", str(tmp_path / "state.safetensors"))
    assert code == 0, err
    assert "state after 17 tokens" in err


def test_yaml_config_gives_defaults_that_flags_override(tmp_path, text_folder, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("seq_len: 64\nlr: 0.01\nmodel:\n  d_model: 48\n")
    args = build_parser().parse_args(["train", "--config", str(path), "--lr", "0.02"])
    config = train_config_from_args(args)
    assert (config.seq_len, config.lr, config.model) == (64, 0.02, {"d_model": 48})


@pytest.mark.parametrize("argv, message", [
    (["train", "--arch", "gpt5", "--max-steps", "1"], "unknown arch"),
    (["train", "--size", "huge", "--max-steps", "1"], "unknown size"),
    (["train", "--max-steps", "1", "--model", "colour=blue"], "unknown config field"),
    (["train", "--data", "/nonexistent/corpus.txt"], "does not exist"),
    (["train", "--colour", "blue"], "unrecognized arguments"),
    (["eval", "--checkpoint", "/nonexistent/ckpt"], "does not exist"),
    (["train", "--config", "/nonexistent.yaml"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, text_folder, capsys, argv, message):
    if argv[0] == "train" and "--data" not in argv and "--config" not in argv and "--colour" not in argv:
        argv = argv + ["--data", str(text_folder), "--tokenizer", "bytes", "--out", str(tmp_path / "x")]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_yaml_config(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("seq_len: [unclosed\n")
    code, _, err = run(capsys, "train", "--config", str(path))
    assert code == 2 and "not valid YAML" in err and len(err.strip().splitlines()) == 1
    path.write_text("sequence_length: 12\n")
    code, _, err = run(capsys, "train", "--config", str(path))
    assert code == 2 and "unknown option(s) sequence_length" in err


def test_corrupt_checkpoint_on_the_command_line(tmp_path, text_folder, capsys):
    assert run(capsys, *train_args(tmp_path, text_folder))[0] == 0
    weights = tmp_path / "run" / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    code, _, err = run(capsys, "generate", "--checkpoint", str(tmp_path / "run" / "checkpoint"), "--prompt", "x")
    assert code == 2 and "corrupt or truncated" in err and len(err.strip().splitlines()) == 1


def test_state_from_another_model_is_refused(tmp_path, text_folder, capsys):
    assert run(capsys, *train_args(tmp_path, text_folder))[0] == 0
    ckpt = str(tmp_path / "run" / "checkpoint")
    state = str(tmp_path / "s.safetensors")
    assert run(capsys, "generate", "--checkpoint", ckpt, "--prompt", "a", "--max-new-tokens", "1", "--state", state)[0] == 0
    other = tmp_path / "other"
    assert run(capsys, *train_args(other, text_folder, "--seed", "1"))[0] == 0
    code, _, err = run(capsys, "generate", "--checkpoint", str(other / "run" / "checkpoint"), "--prompt", "a", "--state", state)
    assert code == 2 and "another model" in err


def test_python_dash_m_hope_help():
    result = subprocess.run([sys.executable, "-m", "hope", "train", "--help"], capture_output=True, text=True, check=True)
    assert "--max-steps" in result.stdout and "Optimizer steps in all" in result.stdout
    assert "(default: 1000)" in result.stdout and "--model KEY=VALUE" in result.stdout


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["tasks", "run", "--help"], ["train", "--lr"]])
def test_help_and_argument_errors_do_not_import_torch(argv):
    code = ("import sys\nfrom hope.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch imported'" % argv)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_compile_flag_reaches_train_and_task_configs(monkeypatch):
    assert train_config_from_args(build_parser().parse_args(["train", "--compile"])).compile is True
    assert train_config_from_args(build_parser().parse_args(["train"])).compile is False
    seen = []
    monkeypatch.setattr(tasks_runner, "run_task", lambda config: seen.append(config) or {
        "family": "formal", "task": config.task, "arch": config.arch, "evals": {}})
    args = build_parser().parse_args(["tasks", "run", "formal_parity", "--out", "x", "--compile"])
    tasks_cli.cmd_run(args)
    assert seen[0].compile is True


def test_cms_outer_periods_reach_train_and_task_configs(monkeypatch):
    args = build_parser().parse_args(["train", "--cms-outer-periods", "1", "4", "16"])
    assert train_config_from_args(args).cms_outer_periods == (1, 4, 16)
    assert train_config_from_args(build_parser().parse_args(["train"])).cms_outer_periods is None
    seen = []
    monkeypatch.setattr(tasks_runner, "run_task", lambda config: seen.append(config) or {
        "family": "formal", "task": config.task, "arch": config.arch, "evals": {}})
    tasks_cli.cmd_run(build_parser().parse_args(["tasks", "run", "formal_parity", "--out", "x",
                                                 "--cms-outer-periods", "1", "8"]))
    assert seen[0].cms_outer_periods == (1, 8)


def test_the_run_summary_adds_the_answer_tokens_right_where_they_differ_from_exact_match():
    scores = {"1x": {"item_accuracy": 0.5, "token_accuracy": 0.855}, "2x": {"item_accuracy": 1.0, "token_accuracy": 1.0}}
    line = tasks_cli._summary({"family": "niah", "task": "niah_single_2", "arch": "hope", "evals": scores})
    assert line == "niah_single_2 hope: 1x 50.0% (85.5% of answer tokens), 2x 100.0%"

"""Bad input on the command line: one line on stderr, exit code 2, no traceback, nothing on disk changed.

Each case runs ``python -m hope`` in a subprocess, as a user would.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MODEL = ["--model", "d_model=16", "--model", "n_layers=1", "--model", "n_heads=2"]


def hope(*argv, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "hope", *map(str, argv)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def train_args(out, data, *extra):
    return ["train", "--out", out, "--data", data, "--tokenizer", "bytes", "--seq-len", "16", "--batch-size", "2",
            "--max-steps", "2", "--warmup-steps", "1", "--eval-windows", "1", "--no-progress", *MODEL, *extra]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the sha256 of its bytes (but the run lock, which records its last holder)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def assert_one_line_error(result, *words):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, text_folder):
    out = tmp_path_factory.mktemp("bad-input") / "run"
    result = hope(*train_args(out, text_folder))
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.parametrize("argv, words", [
    (["--temperature", "-1"], ["temperature"]),
    (["--top-p", "2"], ["top-p"]),
    (["--top-k", "-5"], ["top-k"]),
    (["--max-new-tokens", "-1"], ["max-new-tokens"]),
])
def test_generate_refuses_bad_sampling_options(run_dir, argv, words):
    before = snapshot(run_dir)
    assert_one_line_error(hope("generate", "--checkpoint", run_dir / "checkpoint", "--prompt", "a", *argv), *words)
    assert snapshot(run_dir) == before


def test_generate_refuses_a_prompt_file_that_is_not_utf8(run_dir, tmp_path):
    prompt = tmp_path / "prompt.txt"
    prompt.write_bytes(b"\xff\xfe\x00 not text")
    assert_one_line_error(hope("generate", "--checkpoint", run_dir / "checkpoint", "--prompt-file", prompt),
                          "UTF-8")


def test_generate_checks_the_state_path_before_generating(run_dir, tmp_path):
    result = hope("generate", "--checkpoint", run_dir / "checkpoint", "--prompt", "a",
                  "--state", tmp_path / "no" / "such" / "folder" / "state.safetensors")
    assert_one_line_error(result, "folder")
    assert result.stdout == ""


def test_generate_says_when_the_state_path_is_a_folder(run_dir, tmp_path):
    assert_one_line_error(hope("generate", "--checkpoint", run_dir / "checkpoint", "--prompt", "a",
                               "--state", tmp_path), "folder")


def test_checkpoint_may_be_the_run_folder(run_dir):
    result = hope("generate", "--checkpoint", run_dir, "--prompt", "a", "--max-new-tokens", "2")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("argv, words", [
    (["--max-windows", "0"], ["max-windows"]),
    (["--seq-len", "-4"], ["seq-len"]),
    (["--seq-len", "0"], ["seq-len"]),
])
def test_eval_refuses_bad_numbers(run_dir, text_folder, argv, words):
    before = snapshot(run_dir)
    assert_one_line_error(hope("eval", "--checkpoint", run_dir / "checkpoint", "--data", text_folder, *argv), *words)
    assert snapshot(run_dir) == before


def test_eval_refuses_an_out_that_is_a_folder(run_dir, text_folder):
    before = snapshot(run_dir)
    assert_one_line_error(hope("eval", "--checkpoint", run_dir / "checkpoint", "--data", text_folder,
                               "--out", run_dir), "folder")
    assert snapshot(run_dir) == before


def test_train_refuses_an_out_that_is_a_file(tmp_path, text_folder):
    out = tmp_path / "notes.txt"
    out.write_text("keep me")
    assert_one_line_error(hope(*train_args(out, text_folder)), "not a folder")
    assert out.read_text() == "keep me"


def test_model_override_of_the_wrong_type(tmp_path, text_folder):
    assert_one_line_error(hope(*train_args(tmp_path / "r", text_folder, "--model", "d_model=abc")), "d_model", "integer")


def test_resume_with_another_optimizer_is_refused_before_anything_is_written(run_dir, text_folder):
    before = snapshot(run_dir)
    result = hope(*train_args(run_dir, text_folder, "--resume", "--optimizer", "muon", "--max-steps", "4"))
    assert_one_line_error(result, "optimizer")
    assert snapshot(run_dir) == before


def test_a_corrupt_trainer_state_behind_a_valid_manifest(run_dir, text_folder, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    checkpoint = copy / "checkpoint"
    (checkpoint / "trainer.json").write_text(json.dumps({"__dict__": [[1, {"__tensor__": "nowhere"}]]}))
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    manifest["trainer.json"] = hashlib.sha256((checkpoint / "trainer.json").read_bytes()).hexdigest()
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(copy)
    assert_one_line_error(hope(*train_args(copy, text_folder, "--resume", "--max-steps", "4")), "trainer state")
    assert snapshot(copy) == before


def test_resuming_a_finished_run_reports_its_last_loss(run_dir, text_folder, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    result = hope(*train_args(copy, text_folder, "--resume"))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["step"] == 2 and report["train_loss"] == report["train_loss"]  # not NaN

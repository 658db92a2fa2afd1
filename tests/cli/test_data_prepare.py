"""``hope data prepare`` then ``hope train --data DIR`` / ``hope eval --data DIR`` on the token shards."""

import json
import os
import subprocess
import sys

import pytest

from hope.cli import main


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def train_args(out, data, *extra):
    return ("train", "--out", out, "--data", data, "--seq-len", "16", "--batch-size", "4", "--warmup-steps", "1",
            "--eval-windows", "2", "--eval-every", "2", "--no-progress", "--model", "d_model=16",
            "--model", "n_layers=1", "--model", "n_heads=2", *extra)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, text_folder):
    folder = tmp_path_factory.mktemp("prepared")
    source = folder / "docs.jsonl"
    texts = [line for path in sorted(text_folder.glob("*.txt")) for line in path.read_text().split("\n\n")]
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts if t.strip()))
    result = subprocess.run([sys.executable, "-m", "hope", "data", "prepare", "--source", source, "--tokenizer", "bpe",
                             "--vocab-size", "300", "--out", folder / "shards", "--shard-tokens", "2000",
                             "--no-progress"], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["dtype"] == "uint16" and summary["vocab_size"] == 300
    assert all(split["tokens"] > 100 for split in summary["splits"].values())
    return folder / "shards"


def test_train_resume_and_eval_on_token_shards(tmp_path, shards, capsys, monkeypatch):
    """An interrupted run on shards resumes into the same final loss and validation as the uninterrupted one."""
    import hope.train.lm as train_module

    code, out, err = run(capsys, *train_args(tmp_path / "full", shards, "--max-steps", "4"))
    assert code == 0, err
    full = json.loads(out)
    real_batch_at = train_module.batch_at

    def interrupt_at_step_2(tokens, step, **kwargs):
        if step == 2:
            raise KeyboardInterrupt
        return real_batch_at(tokens, step, **kwargs)

    monkeypatch.setattr(train_module, "batch_at", interrupt_at_step_2)
    code, out, err = run(capsys, *train_args(tmp_path / "cut", shards, "--max-steps", "4"))
    assert code == 130 and "checkpoint of step 2" in out
    monkeypatch.setattr(train_module, "batch_at", real_batch_at)
    code, out, err = run(capsys, *train_args(tmp_path / "cut", shards, "--max-steps", "4", "--resume"))
    assert code == 0, err
    resumed = json.loads(out)
    assert resumed["step"] == 4 and resumed["train_loss"] == full["train_loss"]
    assert resumed["validation"] == full["validation"]
    code, out, err = run(capsys, "eval", "--checkpoint", tmp_path / "full", "--data", shards, "--max-windows", "2")
    assert code == 0, err
    assert json.loads((tmp_path / "full" / "eval_test.json").read_text())["bits_per_byte"] > 0


def test_train_refuses_a_tokenizer_that_is_not_the_shards(tmp_path, shards, capsys):
    code, out, err = run(capsys, *train_args(tmp_path / "run", shards, "--max-steps", "1", "--tokenizer", "bytes"))
    assert code == 2 and "another tokenizer" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_a_pretrained_tokenizer_offline_is_one_line_error(tmp_path):
    source = tmp_path / "a.txt"
    source.write_text("some text\n" * 300)
    result = subprocess.run([sys.executable, "-m", "hope", "data", "prepare", "--source", source, "--tokenizer",
                             "no-such-org/no-such-tokenizer", "--out", tmp_path / "out", "--no-progress"],
                            capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "loading it from the Hugging Face Hub failed" in result.stderr
    assert not (tmp_path / "out").exists()


def test_data_prepare_help_does_not_import_torch():
    code = ("import sys\nfrom hope.cli import main\ntry:\n    main(['data', 'prepare', '--help'])\n"
            "except SystemExit:\n    pass\nassert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--tokenizer TOK" in result.stdout

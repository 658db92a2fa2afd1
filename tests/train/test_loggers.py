"""``--logger jsonl tensorboard wandb`` on ``hope train`` and ``hope tasks run``: every logger gets the same records,
a resume drops what came after the checkpoint, bad or unavailable loggers are one-line errors (exit 2).

W&B runs offline into a temporary ``WANDB_DIR``; its history is read back from the run's ``.wandb`` file."""

import json
import os
import struct
import subprocess
import sys
import time

import pytest

import hope.train.lm as train_module
from hope.cli import build_parser, main
from hope.cli.train import config_from_args
from hope.train.config import TrainConfig
from hope.train.lm import train

pytest.importorskip("tensorboard", reason="needs the loggers extra: pip install 'hope[loggers]'")
pytest.importorskip("wandb", reason="needs the loggers extra: pip install 'hope[loggers]'")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from wandb.proto import wandb_internal_pb2  # noqa: E402

MODEL = ["--model", "d_model=16", "--model", "n_layers=1", "--model", "n_heads=2"]
TRAIN_KEYS = {"loss", "lr", "grad_norm", "tokens_per_s", "peak_memory_mb"}


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    folder = tmp_path / "wandb-dir"
    folder.mkdir()
    for name, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(folder), "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(name, value)
    return folder


def jsonl(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def tensorboard_scalars(out):
    """``{tag: [(step, value), ...]}`` of the event files in ``out/tensorboard``."""
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def wandb_history(folder, timeout=30.0):
    """The history rows of the one offline run under ``folder``, once its ``exit`` record is on disk (``finish``
    can return a moment before wandb-core has written the run's records: seen after 0.1 s)."""
    (path,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    deadline = time.monotonic() + timeout
    while True:
        kinds, rows = _wandb_records(path)
        if "exit" in kinds or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def _wandb_records(path):
    """The record types and history rows of a ``.wandb`` file: LevelDB's log format (32 KiB blocks of chunks:
    crc32c, length, type) after a 7-byte header, each record a ``wandb_internal_pb2.Record``."""
    raw, pos, pending, rows, kinds = path.read_bytes(), 7, b"", [], []
    while pos + 7 <= len(raw):
        if 32768 - pos % 32768 < 7:
            pos += 32768 - pos % 32768
            continue
        length, kind = struct.unpack("<HB", raw[pos + 4: pos + 7])
        pending, pos = pending + raw[pos + 7: pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            kinds.append(record.WhichOneof("record_type"))
            if kinds[-1] == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return kinds, rows


def assert_same_records(records, scalars, history):
    """Every jsonl number is in TensorBoard (float32) and in the W&B history, at its step."""
    by_step = {row["_step"]: row for row in history}
    for record in records:
        for name, value in record.items():
            if name != "step":
                assert (record["step"], pytest.approx(value, rel=1e-6)) in scalars[name], name
                assert by_step[record["step"]][name] == pytest.approx(value), name


def test_train_writes_the_same_metrics_to_every_logger(tmp_path, text_folder, offline_wandb):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--data", str(text_folder), "--tokenizer", "bytes", "--seq-len", "16",
                 "--batch-size", "2", "--max-steps", "4", "--warmup-steps", "1", "--eval-every", "2",
                 "--eval-windows", "1", "--log-every", "1", "--no-progress", *MODEL,
                 "--logger", "jsonl", "tensorboard", "wandb"]) == 0
    records = jsonl(out)
    assert [set(r) - {"step"} for r in records if "loss" in r] == [TRAIN_KEYS] * 4
    assert [r["step"] for r in records if "val_bits_per_byte" in r] == [2, 4]
    assert all(r["peak_memory_mb"] > 10 for r in records if "loss" in r)
    scalars = tensorboard_scalars(out)
    assert TRAIN_KEYS | {"val_bits_per_byte", "val_loss"} <= set(scalars)
    history = wandb_history(offline_wandb)
    assert [row["_step"] for row in history] == [1, 2, 3, 4]
    assert_same_records(records, scalars, history)


def test_task_run_writes_the_same_metrics_to_every_logger(tmp_path, offline_wandb, monkeypatch, capsys):
    """A class-incremental run on the shipped Banking77 (no --data-dir): steps and each stage's accuracies."""
    monkeypatch.delenv("HOPE_DATA_DIR", raising=False)
    out = tmp_path / "task"
    assert main(["tasks", "run", "continual_banking77", "--out", str(out), "--steps", "2", "--batch-size", "4",
                 "--eval-examples", "2", "--warmup-steps", "1", "--option", "num_stages=2",
                 "--option", "max_train_per_class=2", "--option", "max_test_per_class=2", "--log-every", "1",
                 "--no-progress", *MODEL, "--logger", "jsonl", "tensorboard", "wandb"]) == 0
    assert "continual_banking77 transformer: average" in capsys.readouterr().out
    records = jsonl(out)
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert all(set(r) - {"step"} == TRAIN_KEYS for r in records if "loss" in r)
    stages = [r for r in records if "eval_accuracy_stage0" in r]
    assert [(r["step"], sorted(r)) for r in stages] == [(s, ["eval_accuracy_stage0", "eval_accuracy_stage1", "step"])
                                                        for s in (2, 4)]
    assert_same_records(records, tensorboard_scalars(out), wandb_history(offline_wandb))


def config(tmp_path, text_folder, name, **overrides):
    values = dict(out=str(tmp_path / name), data=str(text_folder), tokenizer="bytes", seq_len=16, batch_size=2,
                  max_steps=8, warmup_steps=1, eval_every=4, eval_windows=1, save_every=4, log_every=1,
                  progress=False, model={"d_model": 16, "n_layers": 1, "n_heads": 2},
                  logger=("jsonl", "tensorboard"))
    return TrainConfig(**{**values, **overrides})


def test_resume_drops_the_records_after_the_checkpoint(tmp_path, text_folder, monkeypatch):
    """A run whose checkpoint (step 4) lags its logs (interrupted at step 6) resumes into the curves of an
    uninterrupted run, each step once, in metrics.jsonl and in TensorBoard."""
    train(config(tmp_path, text_folder, "full"))
    real_save, real_batch_at = train_module._save, train_module.batch_at

    def save_until_step_4(cfg, model, dataset, trainer, streamed):
        if trainer.step <= 4:
            real_save(cfg, model, dataset, trainer, streamed)

    def interrupt_at_step_7(tokens, step, **kwargs):
        if step == 6:
            raise KeyboardInterrupt
        return real_batch_at(tokens, step, **kwargs)

    monkeypatch.setattr(train_module, "_save", save_until_step_4)
    monkeypatch.setattr(train_module, "batch_at", interrupt_at_step_7)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path, text_folder, "cut"))
    assert max(r["step"] for r in jsonl(tmp_path / "cut")) == 6
    monkeypatch.undo()
    train(config(tmp_path, text_folder, "cut", resume=True))
    full, cut = tensorboard_scalars(tmp_path / "full"), tensorboard_scalars(tmp_path / "cut")
    assert [step for step, _ in cut["loss"]] == list(range(1, 9))
    assert cut["loss"] == full["loss"] and cut["val_bits_per_byte"] == full["val_bits_per_byte"]
    drop_speed = lambda records: [{k: v for k, v in r.items() if k not in ("tokens_per_s", "peak_memory_mb")}
                                  for r in records]
    assert drop_speed(jsonl(tmp_path / "cut")) == drop_speed(jsonl(tmp_path / "full"))


def test_logger_flags_and_yaml(tmp_path):
    assert config_from_args(build_parser().parse_args(["train"])).logger == ("jsonl",)
    args = build_parser().parse_args(["train", "--logger", "jsonl", "tensorboard", "jsonl"])
    assert config_from_args(args).logger == ("jsonl", "tensorboard")
    (tmp_path / "c.yaml").write_text("logger: wandb\n")
    assert config_from_args(build_parser().parse_args(["train", "--config", str(tmp_path / "c.yaml")])).logger == \
        ("wandb",)
    args = build_parser().parse_args(["tasks", "run", "mqar", "--out", "x", "--logger", "tensorboard"])
    assert args.logger == ["tensorboard"]


@pytest.mark.parametrize("argv", [["train", "--max-steps", "1"], ["tasks", "run", "mqar", "--steps", "1"]])
def test_an_unknown_logger_is_one_line_and_exit_2(tmp_path, argv):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "hope", *argv, "--out", str(out), "--logger", "jsonl", "nope"],
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "hope: error: unknown logger 'nope'; expected some of jsonl, tensorboard, wandb"]
    assert not out.exists()


def test_a_missing_logger_package_names_the_extra(tmp_path, text_folder, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    out = tmp_path / "run"
    for argv in (["train", "--data", str(text_folder)], ["tasks", "run", "mqar"]):
        assert main([*argv, "--out", str(out), "--logger", "wandb"]) == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            "hope: error: --logger wandb needs the wandb package: pip install 'hope[loggers]'"]
        assert not out.exists()

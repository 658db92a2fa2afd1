import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

import hope.train.lm as train_module
from hope.checkpoint import load_checkpoint
from hope.errors import HopeError
from hope.train.config import TrainConfig
from hope.train.lm import train

SMALL_MODEL = {"d_model": 32, "n_layers": 2, "n_heads": 2}


def config(tmp_path, text_folder, name="run", **overrides):
    values = dict(arch="transformer", size="tiny", out=str(tmp_path / name), data=str(text_folder),
                  tokenizer="bytes", seq_len=32, batch_size=4, max_steps=8, warmup_steps=2, eval_every=4,
                  eval_windows=4, save_every=4, log_every=1, progress=False, model=dict(SMALL_MODEL))
    values.update(overrides)
    return TrainConfig(**values)


def losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines) if "loss" in r]


def test_training_lowers_the_loss_and_writes_a_checkpoint(tmp_path, text_folder):
    result = train(config(tmp_path, text_folder, max_steps=30, lr=1e-2))
    curve = losses(tmp_path / "run")
    assert curve[-1][1] < curve[0][1] - 0.5
    assert result.step == 30 and result.validation["bits_per_byte"] > 0
    model, tokenizer, state = load_checkpoint(tmp_path / "run" / "checkpoint", with_trainer_state=True)
    assert state["step"] == 30 and tokenizer.kind == "bytes"


def test_seeded_runs_are_reproducible(tmp_path, text_folder):
    train(config(tmp_path, text_folder, "a"))
    train(config(tmp_path, text_folder, "b"))
    assert losses(tmp_path / "a") == losses(tmp_path / "b")


def train_interrupted_at_step_5(run_config, monkeypatch):
    """``train(run_config)`` with a KeyboardInterrupt raised when step 5's batch is drawn."""
    real_batch_at = train_module.batch_at

    def interrupt_at_step_5(tokens, step, **kwargs):
        if step == 5:
            raise KeyboardInterrupt
        return real_batch_at(tokens, step, **kwargs)

    monkeypatch.setattr(train_module, "batch_at", interrupt_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(run_config)
    monkeypatch.setattr(train_module, "batch_at", real_batch_at)


def test_interrupt_saves_and_resume_continues_the_same_curve(tmp_path, text_folder, monkeypatch):
    train(config(tmp_path, text_folder, "full"))
    train_interrupted_at_step_5(config(tmp_path, text_folder, "cut"), monkeypatch)
    _, _, state = load_checkpoint(tmp_path / "cut" / "checkpoint", with_trainer_state=True)
    assert state["step"] == 5
    train(config(tmp_path, text_folder, "cut", resume=True))
    assert losses(tmp_path / "cut") == losses(tmp_path / "full")
    full = load_file(str(tmp_path / "full" / "checkpoint" / "model.safetensors"))
    cut = load_file(str(tmp_path / "cut" / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(full[k], cut[k]) for k in full)


def test_gradient_accumulation_matches_one_big_batch(tmp_path, text_folder):
    train(config(tmp_path, text_folder, "one", max_steps=3))
    train(config(tmp_path, text_folder, "acc", max_steps=3, grad_accum=2))
    for (_, a), (_, b) in zip(losses(tmp_path / "one"), losses(tmp_path / "acc")):
        assert a == pytest.approx(b, rel=1e-5)


def _poison(monkeypatch, bad_calls):
    """Make the final norm of every model the trainer builds or loads output NaN at the given calls."""
    calls = {"n": 0}

    def hook(module, inputs, output):
        calls["n"] += 1
        return output * float("nan") if calls["n"] in bad_calls else output

    real_build, real_load = train_module.build, train_module.load_checkpoint

    def build_with_nan(*args, **kwargs):
        model = real_build(*args, **kwargs)
        model.norm.register_forward_hook(hook)
        return model

    def load_with_nan(*args, **kwargs):
        model, tokenizer, state = real_load(*args, **kwargs)
        model.norm.register_forward_hook(hook)
        return model, tokenizer, state

    monkeypatch.setattr(train_module, "build", build_with_nan)
    monkeypatch.setattr(train_module, "load_checkpoint", load_with_nan)


def test_non_finite_steps_are_skipped_with_a_warning(tmp_path, text_folder, monkeypatch):
    _poison(monkeypatch, bad_calls={2, 3})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(config(tmp_path, text_folder, max_steps=5, eval_every=100, save_every=100))
    assert sum("non-finite" in str(w.message) for w in caught) == 2
    model, _, _ = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_too_many_non_finite_steps_abort_without_touching_the_checkpoint(tmp_path, text_folder, monkeypatch):
    train(config(tmp_path, text_folder, max_steps=4))
    before = (tmp_path / "run" / "checkpoint" / "model.safetensors").read_bytes()
    _poison(monkeypatch, bad_calls=set(range(1, 100)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(HopeError, match="diverged"):
            train(config(tmp_path, text_folder, max_steps=8, resume=True, max_bad_steps=3))
    assert (tmp_path / "run" / "checkpoint" / "model.safetensors").read_bytes() == before


def test_refuses_to_overwrite_a_run_and_to_resume_a_different_one(tmp_path, text_folder):
    train(config(tmp_path, text_folder, max_steps=2))
    before = (tmp_path / "run" / "checkpoint" / "manifest.json").read_text()
    with pytest.raises(HopeError, match="already holds a run"):
        train(config(tmp_path, text_folder, max_steps=2))
    with pytest.raises(HopeError, match="holds a run with seq_len=32, not 16"):
        train(config(tmp_path, text_folder, max_steps=4, resume=True, seq_len=16))
    assert (tmp_path / "run" / "checkpoint" / "manifest.json").read_text() == before


@pytest.mark.parametrize("bad", [{"batch_size": 0}, {"lr": -1.0}, {"batch_size": 5, "grad_accum": 2}, {"min_lr_ratio": 2.0}])
def test_bad_train_configs(bad, tmp_path, text_folder):
    with pytest.raises(HopeError):
        config(tmp_path, text_folder, **bad)


def test_cms_outer_periods_resume_mid_period_continues_the_same_curve(tmp_path, text_folder, monkeypatch):
    """Interrupted at step 5 of a level with period 3 (two gradients held), resumed: the same curve and weights."""
    hope = dict(arch="hope", size=None, model={"d_model": 16, "n_layers": 1, "n_heads": 2, "cms_periods": (8, 16)},
                cms_outer_periods=(1, 3))
    train(config(tmp_path, text_folder, "full", **hope))
    train_interrupted_at_step_5(config(tmp_path, text_folder, "cut", **hope), monkeypatch)
    _, _, state = load_checkpoint(tmp_path / "cut" / "checkpoint", with_trainer_state=True)
    assert state["cms_outer"]["steps"] == 5 and any(s is not None for s in state["cms_outer"]["sums"])
    with pytest.raises(HopeError, match="cms_outer_periods"):
        train(config(tmp_path, text_folder, "cut", resume=True, **{**hope, "cms_outer_periods": None}))
    train(config(tmp_path, text_folder, "cut", resume=True, **hope))
    assert losses(tmp_path / "cut") == losses(tmp_path / "full")
    full = load_file(str(tmp_path / "full" / "checkpoint" / "model.safetensors"))
    cut = load_file(str(tmp_path / "cut" / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(full[k], cut[k]) for k in full)

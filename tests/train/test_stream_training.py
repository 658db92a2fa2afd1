"""``hope train --stream`` (docs/training.md, streaming): rows restart at document ends, ``--resume`` mid-document
reproduces the uninterrupted loss curve bit for bit (streamed states in the checkpoint), bad options are refused."""

import contextlib
import json
import math
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hope.checkpoint import load_checkpoint
from hope.data.stream import DocumentStream
from hope.errors import HopeError, HopeWarning
from hope.models import build
from hope.train.config import TrainConfig
from hope.train.lm import train
from hope.train.loop import StepResult
from hope.train.stream import StreamedBatches

WORDS = "the of and to in a is that for it as was with be by on not he this are or his from at which".split()
HOPE = {"d_model": 16, "n_layers": 2, "n_heads": 2, "chunk_size": 4, "memory_chunk_size": 4,
        "cms_periods": (None, 8, 16), "cms_lr": 0.5}


@pytest.fixture(scope="module")
def short_documents(tmp_path_factory):
    """80 documents of 40 to 120 characters: rows finish several documents in a few steps of 16 bytes."""
    folder = tmp_path_factory.mktemp("short")
    rng = random.Random(0)
    for i in range(80):
        text = " ".join(rng.choice(WORDS) for _ in range(40))[: rng.randint(40, 120)]
        (folder / f"doc{i:03d}.txt").write_text(text, encoding="utf-8")
    return folder


def config(tmp_path, folder, name, **overrides):
    values = dict(arch="hope", size="tiny", out=str(tmp_path / name), data=str(folder), tokenizer="bytes",
                  seq_len=16, batch_size=4, grad_accum=2, max_steps=10, warmup_steps=2, eval_every=5,
                  eval_windows=8, save_every=5, log_every=1, progress=False, stream=True, model=dict(HOPE))
    values.update(overrides)
    return TrainConfig(**values)


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


WINDOW_ALIGNED = dict(HOPE, cms_periods=(None, 32, 64))
"""CMS periods that the 16-token window divides: window-aligned steps (docs/cms.md)."""


@pytest.mark.parametrize("model", [HOPE, WINDOW_ALIGNED], ids=["in-context", "window-aligned"])
def test_resume_mid_document_reproduces_the_curve_bit_for_bit(tmp_path, short_documents, monkeypatch, model):
    train(config(tmp_path, short_documents, "full", model=dict(model)))
    real_batch_at = DocumentStream.batch_at

    def interrupt_at_step_5(self, step, **kwargs):
        if step == 5:
            raise KeyboardInterrupt
        return real_batch_at(self, step, **kwargs)

    monkeypatch.setattr(DocumentStream, "batch_at", interrupt_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path, short_documents, "cut", model=dict(model)))
    monkeypatch.setattr(DocumentStream, "batch_at", real_batch_at)
    _, _, saved = load_checkpoint(tmp_path / "cut" / "checkpoint", with_trainer_state=True)
    assert saved["step"] == 5 and len(saved["stream"]) == 2
    assert int(saved["stream"][0]["meta"]["position"]) == 5 * 16
    train(config(tmp_path, short_documents, "cut", model=dict(model), resume=True))
    full, cut = records(tmp_path / "full"), records(tmp_path / "cut")
    assert [(r["step"], r.get("loss"), r.get("val_loss")) for r in full] == \
        [(r["step"], r.get("loss"), r.get("val_loss")) for r in cut]
    steps = [r for r in full if "loss" in r]
    assert steps[-1]["stream_resets"] > 0 and steps[-1]["stream_documents"] > steps[0]["stream_documents"]
    a = load_file(str(tmp_path / "full" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_streaming_is_not_sampling_random_windows(tmp_path, short_documents):
    streamed = train(config(tmp_path, short_documents, "streamed", max_steps=3, grad_accum=1))
    sampled = train(config(tmp_path, short_documents, "sampled", max_steps=3, grad_accum=1, stream=False))
    assert streamed.train_loss != sampled.train_loss


def test_bad_streaming_options_are_refused(tmp_path, short_documents):
    with pytest.raises(HopeError, match="multiple of 16"):
        train(config(tmp_path, short_documents, "misaligned", seq_len=24))
    assert not (tmp_path / "misaligned" / "train_config.json").exists()
    train(config(tmp_path, short_documents, "run", max_steps=2, grad_accum=1))
    with pytest.raises(HopeError, match="stream"):
        train(config(tmp_path, short_documents, "run", max_steps=4, grad_accum=1, stream=False, resume=True))



def test_window_aligned_levels_step_and_their_learning_rates_train(tmp_path, short_documents):
    """Periods of 32 and 64 tokens over 16-token windows: the carried states are the period sums of
    window-aligned steps (per-row token counts included), and each level's learning rate gets the gradient of
    the windows after its first step."""
    train(config(tmp_path, short_documents, "aligned", model=dict(WINDOW_ALIGNED), grad_accum=1))
    _, _, saved = load_checkpoint(tmp_path / "aligned" / "checkpoint", with_trainer_state=True)
    names = saved["stream"][0]["tensors"]
    assert any(name.endswith(".tokens") for name in names) and any(".sum." in name for name in names)
    sums = [t for name, t in names.items() if ".sum." in name]
    assert any(t.abs().max() > 0 for t in sums)
    weights = load_file(str(tmp_path / "aligned" / "checkpoint" / "model.safetensors"))
    log_lrs = [t for name, t in weights.items() if name.endswith("log_lr")]
    assert log_lrs and all(not torch.allclose(t, torch.full_like(t, math.log(0.5))) for t in log_lrs)


def test_windows_that_never_reach_a_cms_period_warn_unless_streamed(tmp_path, short_documents, recwarn):
    """Without --stream a level of period 32 never steps in 16-token windows (its learning rate never trains):
    the run says so; streamed, the state carries it past its period and nothing is said."""
    with pytest.warns(HopeWarning, match=r"CMS periods \[16, 32\] are not shorter than the training rows \(16 "
                      r"tokens\).*--stream"):
        train(config(tmp_path, short_documents, "windows", stream=False, max_steps=1,
                     model=dict(HOPE, cms_periods=(None, 16, 32))))
    recwarn.clear()
    train(config(tmp_path, short_documents, "streamed", max_steps=1, model=dict(HOPE, cms_periods=(None, 16, 32))))
    assert not [w for w in recwarn if issubclass(w.category, HopeWarning)]


def test_a_skipped_step_leaves_the_carried_states_where_they_were():
    """A non-finite step (skipped by the trainer) must not carry its windows' states on: the rows read on from
    their last finite state, so one bad window cannot poison a stream."""
    torch.manual_seed(0)
    model = build("hope", None, vocab_size=32, **HOPE)
    tokens = np.random.default_rng(0).integers(0, 31, 400)
    tokens[[99, 249, 399]] = 31
    stream = DocumentStream(tokens, np.array([0, 100, 250]), seq_len=16, eot_id=31)
    streamed = StreamedBatches(model, stream, batch_size=2, grad_accum=1, seed=0, device=torch.device("cpu"),
                               autocast=contextlib.nullcontext())

    def step(number, loss_value):
        for micro_batch in streamed.batches(number):
            streamed.loss(model, micro_batch).backward()
        model.zero_grad()
        streamed.advance(StepResult(number + 1, torch.tensor(loss_value), torch.tensor(1.0), 0.0))

    step(0, 1.0)
    kept = {k: t.clone() for k, t in streamed.states[0].tensors().items()}
    step(1, float("nan"))
    assert all(torch.equal(kept[k], t) for k, t in streamed.states[0].tensors().items())
    step(2, 1.0)
    assert any(not torch.equal(kept[k], t) for k, t in streamed.states[0].tensors().items())

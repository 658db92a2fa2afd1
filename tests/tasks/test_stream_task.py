"""``hope tasks run --stream`` on the tasks that train a language model on a corpus (continual_sotu_eras and the
stream tasks)."""

import dataclasses

import numpy as np
import pytest

from hope.errors import HopeError
from hope.tasks.config import TaskRunConfig
from hope.tasks.runner import quick_config, run_task


def test_streamed_eras_train_and_differ_from_sampled_windows(tmp_path):
    base = dataclasses.replace(quick_config("continual_sotu_eras", "gated-deltanet", str(tmp_path / "sampled")),
                               steps=2, seq_len=64)
    sampled = run_task(base)
    streamed = run_task(dataclasses.replace(base, out=str(tmp_path / "streamed"), stream=True))
    assert len(streamed["loss_curve"]) == len(sampled["loss_curve"]) == len(streamed["stages"])
    assert streamed["loss_curve"] != sampled["loss_curve"]
    assert streamed["config"]["stream"] is True


def test_stream_is_refused_for_tasks_without_a_corpus(tmp_path):
    with pytest.raises(HopeError, match="--stream applies"):
        TaskRunConfig(task="mqar", out=str(tmp_path / "x"), stream=True)


def test_streamed_pretraining_of_a_stream_task(tmp_path):
    """stream_long_document pretrains on the corpus's training documents read whole, window after window."""
    rng = np.random.default_rng(3)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz "))
    for k in range(60):
        (tmp_path / f"doc{k:03d}.txt").write_text("".join(rng.choice(letters, size=int(rng.integers(100, 300)))))
    base = dataclasses.replace(quick_config("stream_long_document", "gated-deltanet", str(tmp_path / "sampled")),
                               steps=3, seq_len=32, options={"length": 64, "data": str(tmp_path)})
    sampled = run_task(base)
    streamed = run_task(dataclasses.replace(base, out=str(tmp_path / "streamed"), stream=True))
    assert streamed["config"]["stream"] is True and sampled["config"]["stream"] is False
    assert streamed["loss_curve"] != sampled["loss_curve"]
    assert np.isfinite(streamed["evals"][next(iter(streamed["evals"]))]["loss"])

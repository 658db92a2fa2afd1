"""``hope tasks run --stream`` on the task that trains a language model on a corpus (continual_sotu_eras)."""

import dataclasses

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

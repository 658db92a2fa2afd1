"""``hope demo``: the README's main job, at a few steps; streamed (the default) Hope's CMS levels step in training
and their learning rates train, with --no-stream they never step and the run says so."""

import json
import math

import pytest
import torch

from hope.checkpoint import load_checkpoint
from hope.cli import main

INITIAL = torch.tensor(math.log(0.1))
"""The CMS levels' initial log learning rate (``cms_lr`` 0.1) in float32."""


@pytest.mark.slow
def test_the_demo_trains_compares_and_streamed_trains_the_cms_learning_rates(tmp_path, capsys):
    common = ["demo", "--archs", "hope", "--seq-len", "64", "--batch-size", "2", "--eval-windows", "2"]
    assert main(common + ["--max-steps", "1", "--no-stream", "--out", str(tmp_path / "windows")]) == 0
    captured = capsys.readouterr()
    assert "hope: warning: CMS periods [512, 2048, 8192] are not shorter than the training rows (64 tokens)" in captured.err
    assert "[hope] The state of the Union is" in captured.out
    assert math.isfinite(json.loads((tmp_path / "windows" / "results.json").read_text())["hope"]["val_bpb"])
    model, _, _ = load_checkpoint(tmp_path / "windows" / "hope" / "checkpoint")
    assert all(block.channel.log_lr[0] == INITIAL for block in model.blocks)  # untouched, to the bit

    assert main(common + ["--max-steps", "9", "--out", str(tmp_path / "streamed")]) == 0
    assert "warning" not in capsys.readouterr().err
    model, _, _ = load_checkpoint(tmp_path / "streamed" / "hope" / "checkpoint")
    assert all(block.channel.log_lr[0] != INITIAL for block in model.blocks)  # period 512: 8 windows of 64
    assert math.isfinite(json.loads((tmp_path / "streamed" / "results.json").read_text())["hope"]["test_bpb"])

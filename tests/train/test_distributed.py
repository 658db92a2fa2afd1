"""Two CPU processes under torchrun (gloo) train exactly like one process on the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

COMMON = ["--data", None, "--tokenizer", "bytes", "--seq-len", "32", "--batch-size", "4", "--max-steps", "4",
          "--warmup-steps", "1", "--eval-windows", "2", "--log-every", "1", "--no-progress",
          "--model", "d_model=32", "--model", "n_layers=2", "--model", "n_heads=2"]


def _run(cmd, env):
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path, text_folder):
    common = [str(text_folder) if a is None else a for a in COMMON]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    _run([sys.executable, "-m", "hope", "train", "--out", str(tmp_path / "single"), *common], env)
    printed = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                    "-m", "hope", "train", "--out", str(tmp_path / "ddp"), *common], env)
    assert printed.count('"step"') == 1  # the result, printed by rank 0 only

    def records(name):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if "loss" in r]

    single, ddp = records("single"), records("ddp")
    assert [r["step"] for r in single] == [r["step"] for r in ddp] == [1, 2, 3, 4]
    for a, b in zip(single, ddp):
        assert abs(a["loss"] - b["loss"]) < 1e-5 and abs(a["grad_norm"] - b["grad_norm"]) < 1e-5
    w1 = load_file(str(tmp_path / "single" / "checkpoint" / "model.safetensors"))
    w2 = load_file(str(tmp_path / "ddp" / "checkpoint" / "model.safetensors"))
    # Adam turns float-rounding differences of near-zero gradients into steps of up to lr, hence atol.
    for key in w1:
        torch.testing.assert_close(w1[key], w2[key], rtol=0, atol=1e-4)

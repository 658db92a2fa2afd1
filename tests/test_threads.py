import os
import subprocess
import sys
from pathlib import Path

import pytest

from hope.errors import HopeError
from hope.threads import WIDE, ThreadPlan, apply_threads, plan_threads


def test_explicit_request_wins_over_environment_and_rule():
    plan = plan_threads(3, d_model=64, environ={"OMP_NUM_THREADS": "2"}, cpus=8)
    assert plan.threads == 3 and plan.env == {"OMP_NUM_THREADS": "3"}


def test_users_omp_num_threads_is_kept():
    plan = plan_threads(d_model=4096, environ={"OMP_NUM_THREADS": "2"}, cpus=8)
    assert plan.threads == 2 and plan.env == {}


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_request_is_a_hope_error(bad):
    with pytest.raises(HopeError, match="--threads must be at least 1"):
        plan_threads(bad, environ={})


def test_bad_environment_is_a_hope_error():
    with pytest.raises(HopeError, match="OMP_NUM_THREADS must be a positive integer"):
        plan_threads(environ={"OMP_NUM_THREADS": "two"})


@pytest.mark.parametrize(("d_model", "cpus", "threads"), [
    (128, 2, 1), (WIDE - 1, 16, 1), (None, 16, 1), (WIDE, 2, 2), (2048, 16, 16),
])
def test_rule_one_thread_for_narrow_cpu_models(d_model, cpus, threads):
    plan = plan_threads(d_model=d_model, environ={}, cpus=cpus)
    assert plan.threads == threads and plan.env["OMP_NUM_THREADS"] == str(threads)


def test_gpu_runs_feed_the_device_with_one_thread():
    assert plan_threads(d_model=4096, device="cuda", environ={}, cpus=16).threads == 1


def test_apply_sets_torch_threads_and_exports_before_torch_loads():
    src = str(Path(__file__).resolve().parents[1] / "src")
    code = ("import os, sys; from hope.threads import ThreadPlan, apply_threads; "
            "apply_threads(ThreadPlan(1, 'test', {'OMP_NUM_THREADS': '1'})); assert 'torch' not in sys.modules; "
            "import torch; print(torch.get_num_threads(), os.environ['OMP_NUM_THREADS'])")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"PYTHONPATH": src}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]
    import torch

    before = torch.get_num_threads()
    try:
        apply_threads(ThreadPlan(2, "test"))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)

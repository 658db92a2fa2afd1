"""How many CPU threads a run uses (no torch import here).

A tiny model's step is thousands of small ops, and every op that torch splits over threads ends at an OpenMP
barrier. Beside one busy process on a machine with as many cores as threads, each barrier waits for a thread
that the scheduler has parked: on 2 cores, Hope tiny trained at 505 tokens/s with 2 threads idle and 151 beside
a busy process, against 527 and 422 with one thread (``benchmarks/threads_under_load.py``,
docs/threads_under_load.md). Hence the rule of :func:`plan_threads`: an explicit request wins (``--threads N``,
else ``OMP_NUM_THREADS`` set by the user); otherwise a CPU model narrower than ``WIDE`` runs on one thread and a
wider one on every core (where each op is large enough to pay for its barrier; that width is not measured here).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

from hope.errors import HopeError

WIDE = 1024
"""Model width (``d_model``) from which a CPU run uses every core; narrower models run on one thread."""


@dataclass(frozen=True)
class ThreadPlan:
    """``threads`` for torch's intra-op pool, ``env`` to export before torch loads, and why (one line)."""

    threads: int
    reason: str
    env: dict[str, str] = field(default_factory=dict)


def plan_threads(requested: int | None = None, *, d_model: int | None = None, device: str = "cpu",
                 environ: Mapping[str, str] = os.environ, cpus: int | None = None) -> ThreadPlan:
    """The thread plan of a run: ``requested`` (``--threads``), else ``OMP_NUM_THREADS`` from ``environ``, else
    one thread for a CPU model narrower than ``WIDE`` (or of unknown width) and every core otherwise. On a GPU
    (``device`` not ``"cpu"``) the CPU only feeds the device: one thread unless asked."""
    cpus = cpus or os.cpu_count() or 1
    if requested is not None:
        if requested < 1:
            raise HopeError(f"--threads must be at least 1, got {requested}")
        return ThreadPlan(requested, f"--threads {requested}", {"OMP_NUM_THREADS": str(requested)})
    if environ.get("OMP_NUM_THREADS"):
        value = environ["OMP_NUM_THREADS"]
        if not value.isdigit() or int(value) < 1:
            raise HopeError(f"OMP_NUM_THREADS must be a positive integer, got {value!r}")
        return ThreadPlan(int(value), f"OMP_NUM_THREADS={value}")
    if device != "cpu":
        return ThreadPlan(1, f"device {device}: the CPU only feeds it", {"OMP_NUM_THREADS": "1"})
    if d_model is not None and d_model >= WIDE:
        return ThreadPlan(cpus, f"d_model {d_model} >= {WIDE}: all {cpus} cores", {"OMP_NUM_THREADS": str(cpus)})
    return ThreadPlan(1, f"d_model {d_model} < {WIDE}: one thread (small ops pay for every thread barrier)",
                      {"OMP_NUM_THREADS": "1"})


def apply_threads(plan: ThreadPlan) -> None:
    """Export ``plan.env`` (read by OpenMP when torch loads, so call this before the first ``import torch``)
    and set torch's intra-op threads if torch is already loaded."""
    os.environ.update(plan.env)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(plan.threads)

"""Training on recall data (MQAR, 32-128 tokens) keeps every arch's loss and gradients finite and its memories
bounded.

The recipe that took Titans tiny to a NaN (AdamW, one-cycle, clip 1.0) at ten times its learning rate, so that the
outer optimiser saturates Titans' gates (``theta -> 1``, ``beta -> 1``, ``forget -> 1``) within a few dozen steps
instead of a few hundred. Before the fix of ``hope.ops.mlp_memory.titans.clip_factor``, the saturated memory's
per-token gradients fell below ~5e-20 and the clip's derivative overflowed: Titans' gradients were NaN at step 70
(docs/results.md, "Titans on recall data: where the memory overflowed").
"""

import math

import numpy as np
import pytest
import torch

from hope.models import build
from hope.tasks.mqar import MQARTask

ARCHS = ["transformer", "hope", "hope-attention", "titans", "gated-deltanet", "bdh"]
STEPS = {"hope": 24}
"""Training steps per arch, 80 unless listed (Hope's step costs about three times Titans'): the first 40% of a
one-cycle schedule, up to past its peak learning rate (at 30%)."""
LR = 3e-2
BOUND = 1e3
"""Largest absolute value allowed in any state tensor (memory weights, momenta, caches) after a sequence."""
TOKEN_BOUND = {"bdh": 1e3}
"""Archs whose state is a sum over the tokens read, with no forgetting by design (BDH's Hebbian synapses,
``S = sum_t v_t k_t^T``): the bound is per token read, so the state may grow linearly with the sequence but not
faster."""


def state_max(state) -> float:
    return max((t.detach().abs().max().item() for t in state.tensors().values()
                if t.is_floating_point() and t.numel()), default=0.0)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_recall_training_stays_finite_and_bounded(arch):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build(arch, "tiny", vocab_size=146, d_model=64, n_layers=2, n_heads=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    steps = STEPS.get(arch, 80)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LR, total_steps=steps * 5 // 2)
    for step in range(steps):
        length = int(rng.choice([32, 64, 128]))
        batch = MQARTask(length=length, num_kv_pairs=length // 8, vocab_size=146).batch(rng, 16)
        out = model(torch.from_numpy(batch.input_ids), targets=torch.from_numpy(batch.targets))
        assert math.isfinite(out.loss.item()), f"{arch}: loss {out.loss.item()} at step {step}"
        largest = state_max(out.state)
        bound = TOKEN_BOUND[arch] * length if arch in TOKEN_BOUND else BOUND
        assert largest < bound, f"{arch}: a state value reached {largest:.3g} at step {step}"
        optimizer.zero_grad()
        out.loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        assert math.isfinite(norm.item()), f"{arch}: gradient norm {norm.item()} at step {step}"
        optimizer.step()
        schedule.step()

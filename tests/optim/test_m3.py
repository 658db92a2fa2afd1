"""M3 (NL Algorithm 1): hand-computed steps in both accumulation modes, the slow refresh every
slow_period steps, update_rms, and the AdamW half."""

import pytest
import torch

from hope.ops.newton_schulz import CUBIC
from hope.optim import M3

DT = torch.float64


def ortho(u):
    """One cubic Newton-Schulz step after Frobenius normalisation (zero stays zero)."""
    n = u.norm()
    if n == 0:
        return torch.zeros_like(u)
    x = u / n
    return 1.5 * x - 0.5 * x @ x.T @ x


def _make(accumulate, **kw):
    p = torch.nn.Parameter(torch.randn(3, 4, dtype=DT))
    opt = M3([p], ns_steps=1, ns_coefficients=CUBIC, ns_dtype=None, accumulate=accumulate, **kw)
    return p, opt


@pytest.mark.parametrize("accumulate", ["sum", "ema"])
def test_hand_computed_steps_over_two_slow_chunks(accumulate):
    lr, (b1, b2, b3), alpha, eps, wd, period = 0.05, (0.8, 0.9, 0.7), 0.5, 1e-6, 0.1, 2
    p, opt = _make(accumulate, lr=lr, betas=(b1, b2, b3), alpha=alpha, eps=eps, weight_decay=wd, slow_period=period)
    w = p.detach().clone()
    m1, v, m2, chunk = (torch.zeros(3, 4, dtype=DT) for _ in range(4))
    o2 = torch.zeros(3, 4, dtype=DT)
    for t in range(1, 6):
        g = torch.randn(3, 4, dtype=DT)
        p.grad = g.clone()
        opt.step()
        if accumulate == "sum":
            m1, v = m1 + b1 * g, v + b2 * g**2
            v_hat = v
        else:
            m1, v = b1 * m1 + (1 - b1) * g, b2 * v + (1 - b2) * g**2
            v_hat = v / (1 - b2**t)
        chunk = chunk + g
        w = (1 - lr * wd) * w - lr * (ortho(m1) + alpha * o2) / (v_hat.sqrt() + eps)
        if t % period == 0:
            m2 = m2 + b3 * chunk if accumulate == "sum" else b3 * m2 + (1 - b3) * chunk
            o2, chunk = ortho(m2), torch.zeros_like(chunk)
        torch.testing.assert_close(p.detach(), w, rtol=1e-11, atol=1e-12)


def test_slow_momentum_refreshes_exactly_every_slow_period_steps():
    p, opt = _make("sum", slow_period=3, betas=(0.9, 0.99, 1 / 3))
    grads = [torch.randn(3, 4, dtype=DT) for _ in range(9)]
    seen = []
    for t, g in enumerate(grads, start=1):
        p.grad = g.clone()
        before = opt.state[p]["slow_update"].clone() if opt.state[p] else torch.zeros(3, 4, dtype=DT)
        opt.step()
        state = opt.state[p]
        seen.append(not torch.equal(state["slow_update"], before))
        if t % 3 == 0:
            expected = sum(grads[:t]) / 3
            torch.testing.assert_close(state["slow"], expected, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(state["slow_update"], ortho(expected), rtol=1e-12, atol=1e-12)
            assert torch.equal(state["chunk_grad_sum"], torch.zeros(3, 4, dtype=DT))
        else:
            torch.testing.assert_close(state["chunk_grad_sum"], sum(grads[t - t % 3: t]), rtol=1e-12, atol=1e-12)
    assert seen == [False, False, True] * 3


def test_first_chunk_uses_no_slow_momentum():
    """alpha has no effect before the first refresh; it does after."""
    torch.manual_seed(1)
    grads = [torch.randn(3, 4, dtype=DT) for _ in range(4)]
    runs = []
    for alpha in (0.0, 5.0):
        torch.manual_seed(2)
        p, opt = _make("ema", alpha=alpha, slow_period=2)
        trajectory = []
        for g in grads:
            p.grad = g.clone()
            opt.step()
            trajectory.append(p.detach().clone())
        runs.append(trajectory)
    assert torch.equal(runs[0][1], runs[1][1])
    assert not torch.allclose(runs[0][2], runs[1][2])


def test_update_rms_sets_the_rms_of_each_update():
    p, opt = _make("sum", lr=1.0, update_rms=0.2, weight_decay=0.0)
    for _ in range(3):
        before = p.detach().clone()
        p.grad = torch.randn(3, 4, dtype=DT) * 1e-4
        opt.step()
        rms = (p.detach() - before).pow(2).mean().sqrt()
        torch.testing.assert_close(rms, torch.tensor(0.2, dtype=DT), rtol=1e-12, atol=0)


def test_vectors_and_closed_groups_get_adamw():
    head, bias = torch.nn.Parameter(torch.randn(6, 3, dtype=DT)), torch.nn.Parameter(torch.randn(6, dtype=DT))
    refs = [torch.nn.Parameter(t.detach().clone()) for t in (head, bias)]
    opt = M3([{"params": [head], "orthogonal": False, "lr": 1e-2}, {"params": [bias], "lr": 1e-2}],
             adamw_betas=(0.9, 0.95), weight_decay=0.1)
    adamw = torch.optim.AdamW(refs, lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    for _ in range(4):
        grads = [torch.randn(6, 3, dtype=DT), torch.randn(6, dtype=DT)]
        for p, r, g in zip((head, bias), refs, grads):
            p.grad, r.grad = g.clone(), g.clone()
        opt.step()
        adamw.step()
    for p, r in zip((head, bias), refs):
        torch.testing.assert_close(p.detach(), r.detach(), rtol=1e-12, atol=1e-14)


def test_foreach_batching_changes_nothing():
    init = [torch.randn(5, 4, dtype=DT) for _ in range(3)]
    results = []
    for foreach in (True, False):
        params = [torch.nn.Parameter(t.clone()) for t in init]
        opt = M3(params, slow_period=2, ns_dtype=None, accumulate="ema", update_rms=0.2, foreach=foreach)
        torch.manual_seed(3)
        for _ in range(5):
            for p in params:
                p.grad = torch.randn(5, 4, dtype=DT)
            opt.step()
        results.append(params)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_bad_arguments():
    p = torch.nn.Parameter(torch.randn(3, 3))
    for kwargs, match in [({"accumulate": "mean"}, "accumulate"), ({"slow_period": 0}, "slow_period"),
                          ({"betas": (0.9, 0.9)}, "betas"), ({"update_rms": -1.0}, "update_rms")]:
        with pytest.raises(ValueError, match=match):
            M3([p], **kwargs)

"""M3 (NL Algorithm 1): hand-computed steps in both accumulation modes, the slow refresh every
slow_period steps, update_rms, the AdamW half, and ``hope train --optimizer m3`` (through build_optimizer)
against Algorithm 1 step by step."""

import pytest
import torch

from hope.cli import build_parser
from hope.cli.train import config_from_args as train_config_from_args
from hope.models import build
from hope.ops.newton_schulz import CUBIC, QUINTIC, newton_schulz
from hope.optim import M3, build_optimizer

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


def test_cli_m3_is_algorithm_1_step_by_step():
    """``hope train --optimizer m3 --weight-decay 0``: the optimizer ``build_optimizer`` makes from the CLI's options
    steps every hidden matrix as NL Algorithm 1 prints it, here re-implemented with its defaults (betas 0.9, 0.999,
    0.9; alpha 1; eps 1e-8; slow chunk 100 steps; Newton-Schulz: 5 quintic steps in bfloat16), over 205 steps
    (two slow refreshes):

        M1 += beta1 g;  V += beta2 g^2;  W -= lr (NS(M1) + alpha O2) / (sqrt(V) + eps)
        every 100 steps:  M2 += beta3 (sum of the chunk's g);  O2 = NS(M2)
    """
    args = build_parser().parse_args(["train", "--optimizer", "m3", "--lr", "0.003", "--weight-decay", "0"])
    config = train_config_from_args(args)
    torch.manual_seed(0)
    model = build("transformer", None, vocab_size=11, d_model=16, n_layers=1, n_heads=2).double()
    optimizer = build_optimizer(config.optimizer, model, lr=config.lr, weight_decay=config.weight_decay)
    (group,) = [g for g in optimizer.param_groups if g["orthogonal"]]
    matrices = group["params"]
    assert len(matrices) >= 3 and all(p.ndim == 2 for p in matrices)

    def ns(m):
        return newton_schulz(m, steps=5, coefficients=QUINTIC, dtype=torch.bfloat16)

    lr, (b1, b2, b3), alpha, eps, period = 0.003, (0.9, 0.999, 0.9), 1.0, 1e-8, 100
    w = [p.detach().clone() for p in matrices]
    m1, v, m2, chunk, o2 = ([torch.zeros_like(p) for p in matrices] for _ in range(5))
    gen = torch.Generator().manual_seed(0)
    for t in range(1, 206):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        grads = [p.grad.clone() for p in matrices]
        optimizer.step()
        for i, g in enumerate(grads):
            m1[i] = m1[i] + b1 * g
            v[i] = v[i] + b2 * g * g
            chunk[i] = chunk[i] + g
            w[i] = w[i] - lr * (ns(m1[i]) + alpha * o2[i]) / (v[i].sqrt() + eps)
            if t % period == 0:
                m2[i] = m2[i] + b3 * chunk[i]
                o2[i], chunk[i] = ns(m2[i]), torch.zeros_like(g)
            torch.testing.assert_close(matrices[i].detach(), w[i], rtol=1e-6, atol=1e-9, msg=f"step {t}, matrix {i}")
    assert all(o.abs().sum() > 0 for o in o2)


def test_old_m3_checkpoints_resume_as_they_were_trained():
    """A checkpoint from before ``m3`` meant Algorithm 1 holds the tuned options in its param groups; resumed with
    ``--optimizer m3`` (same name, so ``hope train --resume`` accepts it), torch's ``load_state_dict`` restores them,
    so the run continues with the variant it was trained with (docs/optimizers.md)."""
    torch.manual_seed(0)
    model = build("transformer", None, vocab_size=11, d_model=16, n_layers=1, n_heads=2)
    saved = build_optimizer("m3-ema", model, lr=1e-3).state_dict()
    resumed = build_optimizer("m3", model, lr=1e-3)
    assert {g["accumulate"] for g in resumed.param_groups} == {"sum"}
    resumed.load_state_dict(saved)
    assert {(g["accumulate"], g["update_rms"]) for g in resumed.param_groups} == {("ema", 0.2)}

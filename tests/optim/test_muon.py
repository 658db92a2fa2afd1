"""Muon: a hand-computed step, torch.optim.Muon where both apply, the AdamW half against torch.optim.AdamW."""

import math

import pytest
import torch

from hope.ops.newton_schulz import CUBIC
from hope.optim import Muon

DT = torch.float64


def _run(optimizer, params, grads):
    for grad in grads:
        for p, g in zip(params, grad):
            p.grad = g.clone()
        optimizer.step()


def test_hand_computed_steps():
    """Two steps on a 3x2 matrix, cubic NS with one step, float64: every formula written out."""
    lr, mu, wd = 0.1, 0.9, 0.05
    w0 = torch.randn(3, 2, dtype=DT)
    p = torch.nn.Parameter(w0.clone())
    opt = Muon([p], lr=lr, momentum=mu, weight_decay=wd, ns_steps=1, ns_coefficients=CUBIC, ns_dtype=None)
    g1, g2 = torch.randn(3, 2, dtype=DT), torch.randn(3, 2, dtype=DT)
    _run(opt, [p], [[g1], [g2]])

    def ortho(u):
        x = u / u.norm()
        return 1.5 * x - 0.5 * x @ x.T @ x

    scale = math.sqrt(3 / 2)
    b1 = (1 - mu) * g1
    w1 = (1 - lr * wd) * w0 - lr * scale * ortho((1 - mu) * g1 + mu * b1)
    b2 = mu * b1 + (1 - mu) * g2
    w2 = (1 - lr * wd) * w1 - lr * scale * ortho((1 - mu) * g2 + mu * b2)
    torch.testing.assert_close(p.detach(), w2, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("foreach", [True, False])
def test_matches_torch_muon(nesterov, foreach):
    """Same shapes twice (so foreach batches them), tall and wide; bf16 Newton-Schulz as torch's."""
    shapes = [(16, 8), (16, 8), (8, 24)]
    init = [torch.randn(*s) for s in shapes]
    ours = [torch.nn.Parameter(t.clone()) for t in init]
    theirs = [torch.nn.Parameter(t.clone()) for t in init]
    kw = dict(lr=0.02, momentum=0.9, weight_decay=0.1, nesterov=nesterov)
    a = Muon(ours, foreach=foreach, **kw)
    b = torch.optim.Muon(theirs, **kw)
    grads = [[torch.randn(*s) for s in shapes] for _ in range(4)]
    _run(a, ours, grads)
    _run(b, theirs, grads)
    for p, q in zip(ours, theirs):
        if foreach:
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)
        else:
            assert torch.equal(p, q)


def test_match_rms_adamw_matches_torch_option():
    init = torch.randn(12, 20)
    p, q = torch.nn.Parameter(init.clone()), torch.nn.Parameter(init.clone())
    a = Muon([p], lr=1e-3, adjust_lr="match_rms_adamw", foreach=False)
    b = torch.optim.Muon([q], lr=1e-3, weight_decay=0.0, adjust_lr_fn="match_rms_adamw")
    grads = [[torch.randn(12, 20)] for _ in range(3)]
    _run(a, [p], grads)
    _run(b, [q], grads)
    assert torch.equal(p, q)


def test_vectors_get_adamw_like_torch_adamw():
    matrix, vector = torch.nn.Parameter(torch.randn(4, 4, dtype=DT)), torch.nn.Parameter(torch.randn(5, dtype=DT))
    ref = torch.nn.Parameter(vector.detach().clone())
    opt = Muon([matrix, vector], lr=0.02, adamw_lr=3e-3, adamw_betas=(0.8, 0.9), weight_decay=0.1, ns_dtype=None)
    assert [g["orthogonal"] for g in opt.param_groups] == [True, False]
    assert opt.param_groups[1]["lr"] == 3e-3
    adamw = torch.optim.AdamW([ref], lr=3e-3, betas=(0.8, 0.9), eps=1e-8, weight_decay=0.1)
    for _ in range(5):
        g = torch.randn(5, dtype=DT)
        matrix.grad, vector.grad, ref.grad = torch.randn(4, 4, dtype=DT), g.clone(), g.clone()
        opt.step()
        adamw.step()
    torch.testing.assert_close(vector.detach(), ref.detach(), rtol=1e-12, atol=1e-14)


def test_bad_arguments():
    p = torch.nn.Parameter(torch.randn(3, 3))
    with pytest.raises(ValueError, match="adjust_lr"):
        Muon([p], adjust_lr="bogus")
    with pytest.raises(ValueError, match="ns_dtype"):
        Muon([p], ns_dtype="float8")
    with pytest.raises(ValueError, match="momentum"):
        Muon([p], momentum=1.0)

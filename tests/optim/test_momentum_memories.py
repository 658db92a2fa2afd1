"""Delta momentum (NL Eq. 49) and deep momentum (DMGD, NL Eq. 50): hand-computed steps and the
linear special cases that are ordinary momentum."""

import pytest
import torch
import torch.nn.functional as F

from hope.optim import DeepMomentum, DeltaMomentum

DT = torch.float64


def _feed(optimizer, params, grads):
    for grad in grads:
        for p, g in zip(params, grad):
            p.grad = g.clone()
        optimizer.step()


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4,)])
def test_delta_momentum_hand_computed(shape):
    lr, alpha, delta, wd = 0.1, 0.8, 2.0, 0.05
    w = torch.randn(*shape, dtype=DT)
    p = torch.nn.Parameter(w.clone())
    opt = DeltaMomentum([p], lr=lr, momentum=alpha, delta=delta, weight_decay=wd)
    m = torch.zeros(*shape, dtype=DT)
    for _ in range(4):
        g = torch.randn(*shape, dtype=DT)
        _feed(opt, [p], [[g]])
        gm, mm = g.reshape(shape[0], -1) if g.ndim > 1 else g[None], m.reshape(shape[0], -1) if m.ndim > 1 else m[None]
        step = delta / (1 + delta * (g**2).sum())
        m = (mm @ (alpha * torch.eye(gm.shape[1], dtype=DT) - step * gm.T @ gm) - lr * gm).reshape(shape)
        w = (1 - lr * wd) * w + m
        torch.testing.assert_close(p.detach(), w, rtol=1e-12, atol=1e-12)


def test_delta_momentum_without_delta_is_torch_sgd_momentum():
    init = [torch.randn(4, 6, dtype=DT), torch.randn(6, dtype=DT)]
    ours = [torch.nn.Parameter(t.clone()) for t in init]
    theirs = [torch.nn.Parameter(t.clone()) for t in init]
    a = DeltaMomentum(ours, lr=0.05, momentum=0.9, delta=0.0)
    b = torch.optim.SGD(theirs, lr=0.05, momentum=0.9)
    grads = [[torch.randn_like(t) for t in init] for _ in range(5)]
    _feed(a, ours, grads)
    _feed(b, theirs, grads)
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-13)


def test_delta_momentum_forgets_along_the_current_gradient():
    """A repeated gradient saturates the memory (delta rule) where plain momentum keeps adding it."""
    g = torch.tensor([[1.0, 0.0]], dtype=DT)
    memories = []
    for delta in (0.0, 1e6):
        p = torch.nn.Parameter(torch.zeros(1, 2, dtype=DT))
        opt = DeltaMomentum([p], lr=1.0, momentum=1.0, delta=delta)
        _feed(opt, [p], [[g]] * 5)
        memories.append(opt.state[p]["momentum_buffer"])
    torch.testing.assert_close(memories[0], -5 * g)
    torch.testing.assert_close(memories[1], -g, rtol=1e-5, atol=1e-5)


def test_deep_momentum_without_mlp_is_ema_momentum():
    lr, inner = 0.1, 0.2
    w = torch.randn(3, 4, dtype=DT)
    p = torch.nn.Parameter(w.clone())
    opt = DeepMomentum([p], lr=lr, inner_lr=inner, hidden=0, weight_decay=0.1)
    buffer = torch.zeros(3, 4, dtype=DT)
    for _ in range(4):
        g = torch.randn(3, 4, dtype=DT)
        _feed(opt, [p], [[g]])
        buffer = (1 - inner) * buffer + inner * g
        w = (1 - lr * 0.1) * w - lr * buffer
        torch.testing.assert_close(p.detach(), w, rtol=1e-12, atol=1e-13)


def test_deep_momentum_hand_computed_with_mlp():
    lr, inner, mlp_lr, alpha, hidden = 0.1, 0.3, 0.5, 0.95, 3
    p = torch.nn.Parameter(torch.randn(4, 5, dtype=DT))
    opt = DeepMomentum([p], lr=lr, inner_lr=inner, mlp_lr=mlp_lr, retention=alpha, hidden=hidden, seed=7)
    first, g = torch.randn(4, 5, dtype=DT), torch.randn(4, 5, dtype=DT)
    g[1] = 0.0  # a row without gradient: left out of the MLP's objective
    _feed(opt, [p], [[first]])
    state = opt.state[p]
    b, w1, w2 = (state[k].clone() for k in ("linear", "mlp_out", "mlp_in"))
    w = p.detach().clone()
    _feed(opt, [p], [[g]])

    mean_square = (1 - inner) * inner * first.pow(2).mean(1, keepdim=True) + inner * g.pow(2).mean(1, keepdim=True)
    s = (mean_square / (1 - (1 - inner) ** 2)).sqrt()
    k = g / s
    active = [0, 2, 3]

    def readout(w1, w2):
        return s * F.silu(k @ w2.T) @ w1.T

    def objective(w1, w2):
        return 0.5 * ((b + readout(w1, w2) + g) / s).pow(2).sum(1)[active].mean()

    grad_w1, grad_w2 = torch.func.grad(objective, argnums=(0, 1))(w1, w2)
    hidden_norm = F.silu(k @ w2.T).pow(2).sum(1)[active].mean()
    w1_step = mlp_lr / (1 + mlp_lr * hidden_norm)
    w2_step = mlp_lr / (1 + mlp_lr * 1.21 * k.pow(2).sum(1)[active].mean() * w1.pow(2).sum())
    new_b = alpha * b - inner * (b + readout(w1, w2) + g)
    new_w1, new_w2 = alpha * w1 - w1_step * grad_w1, alpha * w2 - w2_step * grad_w2
    torch.testing.assert_close(state["row_mean_square"], mean_square, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(state["linear"], new_b, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(state["mlp_out"], new_w1, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(state["mlp_in"], new_w2, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(p.detach(), w + lr * (new_b + readout(new_w1, new_w2)), rtol=1e-12, atol=1e-13)
    assert state["mlp_out"].abs().sum() > 0


def test_bad_arguments():
    p = torch.nn.Parameter(torch.randn(3))
    with pytest.raises(ValueError, match="momentum in"):
        DeltaMomentum([p], momentum=1.5)
    with pytest.raises(ValueError, match="inner_lr"):
        DeepMomentum([p], inner_lr=0.0)

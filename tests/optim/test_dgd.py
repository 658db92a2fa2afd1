"""DGD (NL Eq. 57): hand-computed step, the exact proximal solution for one token, SGD as its
decay-free case, and which forwards it records (no_grad evaluation, gradient accumulation)."""

import pytest
import torch
from torch import nn

from hope.optim import DGD

DT = torch.float64


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2, bias=False)).to(DT)


def _loss(model, x):
    return model(x).pow(2).sum(-1).mean()


@pytest.mark.parametrize("unit_inputs", [False, True])
def test_hand_computed_step(unit_inputs):
    model, lr, wd = _model(), 0.3, 0.1
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = DGD(model.parameters(), lr=lr, model=model, weight_decay=wd, unit_inputs=unit_inputs)
    x = torch.randn(2, 5, 3, dtype=DT)
    _loss(model, x).backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    hidden = torch.tanh(x @ before["0.weight"].T + before["0.bias"])
    opt.step()
    for name, inputs in (("0.weight", x), ("2.weight", hidden)):
        rows = inputs.reshape(-1, inputs.shape[-1])
        if unit_inputs:
            rows = rows / rows.norm(dim=-1, keepdim=True)
        c = rows.T @ rows / rows.shape[0]
        step = lr / (1 + lr * c.trace())
        w = (1 - lr * wd) * before[name]
        expected = w - step * w @ c - step * grads[name]
        torch.testing.assert_close(model.state_dict()[name], expected, rtol=1e-12, atol=1e-12)
    expected_bias = (1 - lr * wd) * before["0.bias"] - lr * grads["0.bias"]
    torch.testing.assert_close(model.state_dict()["0.bias"], expected_bias, rtol=1e-12, atol=1e-12)


def test_one_token_step_is_the_exact_proximal_regression_eq56():
    """argmin_W 1/2 ||W x - u||^2 + 1/(2 eta) ||W - W_t||^2 with u = -dL/dy, for x of any norm."""
    eta = 0.7
    layer = nn.Linear(4, 3, bias=False).to(DT)
    w_t = layer.weight.detach().clone()
    opt = DGD(layer.parameters(), lr=eta, model=layer)
    x = 2.5 * torch.randn(4, dtype=DT)
    y = layer(x)
    target = torch.randn(3, dtype=DT)
    (0.5 * (y - target).pow(2).sum()).backward()
    u = -(w_t @ x - target)
    exact = (torch.outer(u, x) + w_t / eta) @ torch.linalg.inv(torch.outer(x, x) + torch.eye(4, dtype=DT) / eta)
    opt.step()
    torch.testing.assert_close(layer.weight.detach(), exact, rtol=1e-12, atol=1e-12)


def test_decay_scale_zero_is_sgd():
    model, ref = _model(), _model()
    opt = DGD(model.parameters(), lr=0.2, model=model, decay_scale=0.0)
    sgd = torch.optim.SGD(ref.parameters(), lr=0.2)
    for _ in range(3):
        x = torch.randn(6, 3, dtype=DT)
        for m, o in ((model, opt), (ref, sgd)):
            o.zero_grad()
            _loss(m, x).backward()
            o.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_decay_term_changes_the_step():
    model, ref = _model(), _model()
    x = torch.randn(6, 3, dtype=DT)
    for m, scale in ((model, 1.0), (ref, 0.0)):
        opt = DGD(m.parameters(), lr=0.2, model=m, decay_scale=scale)
        _loss(m, x).backward()
        opt.step()
    assert not torch.allclose(model[0].weight, ref[0].weight)


def test_no_grad_forwards_are_not_recorded():
    model, ref = _model(), _model()
    x = torch.randn(4, 3, dtype=DT)
    for m, evaluate in ((model, True), (ref, False)):
        opt = DGD(m.parameters(), lr=0.5, model=m)
        _loss(m, x).backward()
        if evaluate:
            with torch.no_grad():
                m(10 * torch.randn(7, 3, dtype=DT))
            with torch.inference_mode():
                m(torch.randn(7, 3, dtype=DT))
        opt.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        assert torch.equal(a, b)


def test_gradient_accumulation_uses_every_micro_batch():
    model, ref = _model(), _model()
    x = torch.randn(8, 3, dtype=DT)
    opt = DGD(model.parameters(), lr=0.5, model=model)
    for half in x.chunk(2):
        (_loss(model, half) / 2).backward()
    opt.step()
    ref_opt = DGD(ref.parameters(), lr=0.5, model=ref)
    _loss(ref, x).backward()
    ref_opt.step()
    for a, b in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-13)


def _sgd_reference(model, lr):
    return [p.detach() - lr * p.grad for p in model.parameters()]


def test_step_clears_the_recorded_inputs_and_unrecorded_weights_take_sgd_steps():
    model = _model()
    opt = DGD(model.parameters(), lr=0.1, model=model)
    _loss(model, torch.randn(3, 3, dtype=DT)).backward()
    opt.step()
    expected = _sgd_reference(model, 0.1)
    opt.step()
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-14)


def test_remove_hooks_and_bad_arguments():
    model = _model()
    opt = DGD(model.parameters(), lr=0.1, model=model)
    opt.remove_hooks()
    _loss(model, torch.randn(3, 3, dtype=DT)).backward()
    expected = _sgd_reference(model, 0.1)
    opt.step()
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="model must be"):
        DGD(model.parameters(), lr=0.1, model=None)
    with pytest.raises(ValueError, match="no nn.Linear"):
        DGD([model[0].bias], lr=0.1, model=model)

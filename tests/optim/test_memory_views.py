"""The paper's equivalences (NL Secs. 3-4, App. B), each checked in float64: the memory's own objective,
solved generically, gives the familiar update."""

import pytest
import torch

from hope.ops.newton_schulz import CUBIC, newton_schulz
from hope.optim import memory

DT = torch.float64


def test_momentum_is_the_proximal_argmin_of_eq13():
    previous, grad = torch.randn(3, 4, dtype=DT), torch.randn(3, 4, dtype=DT)
    argmin = memory.quadratic_argmin(lambda m: memory.momentum_objective(m, previous, grad, lr=0.3), torch.zeros_like(grad))
    torch.testing.assert_close(argmin, memory.momentum_buffer(previous, grad, lr=0.3), rtol=1e-12, atol=1e-12)


def test_momentum_with_l2_penalty_is_decayed_momentum_eq33():
    previous, grad = torch.randn(5, dtype=DT), torch.randn(5, dtype=DT)
    lr, l2 = 0.5, 0.4
    argmin = memory.quadratic_argmin(lambda m: memory.momentum_objective(m, previous, grad, lr, l2), torch.zeros(5, dtype=DT))
    decay = 1 / (1 + lr * l2)
    torch.testing.assert_close(argmin, memory.momentum_buffer(previous, grad, lr * decay, decay), rtol=1e-12, atol=1e-12)


def test_momentum_memory_reproduces_torch_sgd_momentum():
    """W_{t+1} = W_t - m_{t+1}, m_{t+1} = argmin Eq. 13 with decay: the trajectory of torch.optim.SGD(momentum)."""
    lr, beta = 0.1, 0.9
    weight = torch.nn.Parameter(torch.randn(4, dtype=DT))
    sgd = torch.optim.SGD([weight], lr=lr, momentum=beta)
    w, m = weight.detach().clone(), torch.zeros(4, dtype=DT)
    for _ in range(6):
        grad = torch.randn(4, dtype=DT)
        weight.grad = grad.clone()
        sgd.step()
        m = memory.momentum_buffer(m, grad, lr, decay=beta)
        w = w - m
        torch.testing.assert_close(weight.detach(), w, rtol=1e-12, atol=1e-12)


def test_optimal_elementwise_memory_is_the_argmin_of_eq101():
    steps, shape = 5, (2, 3)
    grads, target = torch.randn(steps, *shape, dtype=DT), torch.rand(*shape, dtype=DT) + 0.5
    f, s = torch.rand(steps, dtype=DT), torch.rand(steps, dtype=DT)
    l2 = torch.rand(*shape, dtype=DT)
    argmin = memory.quadratic_argmin(
        lambda m: memory.elementwise_memory_objective(m, grads, target, f, s, l2), torch.zeros(*shape, dtype=DT))
    first = (f.reshape(-1, 1, 1) * grads).sum(0)
    second = (s.reshape(-1, 1, 1) * grads**2).sum(0)
    torch.testing.assert_close(argmin, memory.optimal_elementwise_memory(first, second, target, l2), rtol=1e-10, atol=1e-12)


def test_adam_is_the_optimal_elementwise_memory_eq105():
    """Every step of torch.optim.Adam == -lr * m* with P = sqrt(V), lambda = eps sqrt(V) (bias-corrected EMAs)."""
    lr, betas, eps = 0.01, (0.9, 0.99), 1e-3
    weight = torch.nn.Parameter(torch.randn(6, dtype=DT))
    adam = torch.optim.Adam([weight], lr=lr, betas=betas, eps=eps)
    grads = []
    for t in range(1, 8):
        grads.append(torch.randn(6, dtype=DT))
        before = weight.detach().clone()
        weight.grad = grads[-1].clone()
        adam.step()
        stacked = torch.stack(grads)
        f, s = memory.adam_moment_weights(t, betas[0]), memory.adam_moment_weights(t, betas[1])
        first = (f[:, None] * stacked).sum(0)
        second = (s[:, None] * stacked**2).sum(0)
        target = second.sqrt()
        closed = memory.optimal_elementwise_memory(first, second, target, eps * target)
        argmin = memory.quadratic_argmin(
            lambda m: memory.elementwise_memory_objective(m, stacked, target, f, s, eps * target), torch.zeros(6, dtype=DT))
        torch.testing.assert_close(argmin, closed, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(weight.detach() - before, -lr * closed, rtol=1e-10, atol=1e-13)


def test_momentum_is_the_optimal_elementwise_memory_with_p_equal_h_eq104():
    grads = torch.randn(4, 3, dtype=DT)
    first, second = grads.sum(0), (grads**2).sum(0)
    torch.testing.assert_close(memory.optimal_elementwise_memory(first, second, second), first, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("length", [1, 7])
def test_linear_attention_is_one_gd_step_per_token_on_the_dot_objective(length):
    q, k, v = torch.randn(length, 4, dtype=DT), torch.randn(length, 4, dtype=DT), torch.randn(length, 3, dtype=DT)
    scanned = memory.memory_scan(memory.dot_objective, q, k, v, lr=1.0)
    torch.testing.assert_close(scanned, memory.linear_attention(q, k, v), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("length", [1, 7])
def test_delta_rule_is_one_gd_step_per_token_on_the_l2_objective(length):
    q, k = torch.randn(length, 4, dtype=DT), torch.nn.functional.normalize(torch.randn(length, 4, dtype=DT), dim=-1)
    v = torch.randn(length, 3, dtype=DT)
    scanned = memory.memory_scan(memory.l2_objective, q, k, v, lr=0.7)
    torch.testing.assert_close(scanned, memory.delta_rule(q, k, v, beta=0.7), rtol=1e-12, atol=1e-12)


def test_delta_rule_differs_from_linear_attention():
    """The two objectives give different memories (the equivalence tests above can fail)."""
    q, k, v = torch.randn(5, 4, dtype=DT), torch.randn(5, 4, dtype=DT), torch.randn(5, 3, dtype=DT)
    assert not torch.allclose(memory.delta_rule(q, k, v, beta=1.0), memory.linear_attention(q, k, v))


@pytest.mark.parametrize("shape", [(4, 4), (3, 5), (6, 2)])
def test_gd_step_on_the_orthogonality_objective_is_a_cubic_newton_schulz_step(shape):
    g = torch.randn(*shape, dtype=DT) / 3
    stepped = memory.orthogonality_gd_step(g, step_size=0.25)
    torch.testing.assert_close(stepped, 1.5 * g - 0.5 * g @ g.T @ g, rtol=1e-12, atol=1e-12)
    ns = newton_schulz(g, steps=1, coefficients=CUBIC, normalize=False)
    torch.testing.assert_close(stepped, ns, rtol=1e-12, atol=1e-12)

"""Titans (LMM) mixer against a per-token reference written from the Titans equations."""

import pytest
import torch
import torch.nn.functional as F

from hope.errors import HopeError
from hope.models import make_config
from hope.models.titans import Titans

D_MODEL, HEADS = 16, 2
BASE = dict(step_init=0.02, max_grad_norm=None, memory_read="start")
"""The layer these tests were written for: the rule as printed (no clipping), reads at the chunk start."""


def titans(**fields) -> Titans:
    return Titans(make_config("titans", None, d_model=D_MODEL, n_heads=HEADS, **{**BASE, **fields}))


def reference(layer: Titans, x: torch.Tensor) -> torch.Tensor:
    """One token at a time: ``S <- beta S - theta grad``, ``M <- (1 - forget) M + S`` per layer, gradients of
    ``0.5 ||M(k) - v||^2`` at the weights from the start of the token's chunk; reads there too
    (``memory_read="start"``) or after the token's update (``"running"``)."""
    b, t, d = x.shape
    h, dh = layer.n_heads, layer.head_dim
    projected = layer.qkv(x)
    w1, w2 = (w.expand(b, *w.shape) for w in (layer.w1, layer.w2))
    s1, s2 = torch.zeros_like(w1), torch.zeros_like(w2)
    outputs = []
    for i in range(t):
        if i % layer.chunk_size == 0:
            c1, c2 = w1, w2
        window = [projected[:, i - 3 + j] if i - 3 + j >= 0 else projected.new_zeros(b, 3 * d) for j in range(4)]
        q, k, v = F.silu(sum(layer.conv.weight[:, j] * window[j] for j in range(4))).view(b, 3, h, dh).unbind(1)
        q, k = (u / (u.square().sum(-1, keepdim=True) + 1e-6).sqrt() for u in (q, k))
        theta, beta, forget = (g[..., None, None] for g in torch.sigmoid(layer.gates(x[:, i])).split(h, -1))
        if layer.memory_read == "start":
            outputs.append(q + (c1 @ F.silu(c2 @ q[..., None]))[..., 0])
        z = (c2 @ k[..., None])[..., 0]
        hidden = F.silu(z)
        error = k + (c1 @ hidden[..., None])[..., 0] - v
        sig = torch.sigmoid(z)
        error2 = (c1.transpose(-1, -2) @ error[..., None])[..., 0] * sig * (1 + z * (1 - sig))
        grad1, grad2 = error[..., :, None] * hidden[..., None, :], error2[..., :, None] * k[..., None, :]
        if layer.max_grad_norm is not None:
            grad1, grad2 = (g * torch.clamp(layer.max_grad_norm / g.square().sum((-2, -1), keepdim=True).sqrt(), max=1)
                            for g in (grad1, grad2))
        s1 = beta * s1 - theta * grad1
        s2 = beta * s2 - theta * grad2
        w1, w2 = (1 - forget) * w1 + s1, (1 - forget) * w2 + s2
        if layer.memory_read == "running":
            outputs.append(q + (w1 @ F.silu(w2 @ q[..., None]))[..., 0])
    reads = torch.stack(outputs, 1)
    return layer.output.out(layer.output.norm(reads).flatten(2) * F.silu(layer.output.gate(x)))


def make(**kwargs):
    torch.manual_seed(3)
    layer = titans(**kwargs).double()
    layer.init_weights()
    for module in (layer.qkv, layer.output.gate, layer.output.out):
        torch.nn.init.normal_(module.weight, std=0.3)
    torch.nn.init.normal_(layer.gates.weight, std=0.3)
    torch.nn.init.normal_(layer.w1, std=0.3)
    return layer


@pytest.mark.parametrize("memory_read", ["start", "running"])
@pytest.mark.parametrize("max_grad_norm", [None, 0.5])
@pytest.mark.parametrize("length,chunk_size", [(1, 4), (13, 4), (12, 1), (21, 8)])
def test_matches_per_token_reference_outputs_and_gradients(length, chunk_size, max_grad_norm, memory_read):
    layer = make(chunk_size=chunk_size, max_grad_norm=max_grad_norm, memory_read=memory_read)
    x = torch.randn(2, length, D_MODEL, dtype=torch.float64, requires_grad=True)
    y, _ = layer(x)
    expected = reference(layer, x)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
    weight = torch.randn_like(y)
    params = [x] + list(layer.parameters())
    for got, want in zip(torch.autograd.grad((y * weight).sum(), params, allow_unused=True),
                         torch.autograd.grad((expected * weight).sum(), params, allow_unused=True)):
        if want is None or got is None:  # a single token read before any update: the gates are unused
            assert length == 1 and memory_read == "start" and (got is None or not got.any()) and (want is None or not want.any())
        else:
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("memory_read", ["start", "running"])
@pytest.mark.parametrize("cut", [1, 3, 4, 10])
def test_prefill_then_decode_equals_one_forward(cut, memory_read):
    layer = make(chunk_size=4, max_grad_norm=0.5, memory_read=memory_read)
    x = torch.randn(2, 19, D_MODEL, dtype=torch.float64)
    full, _ = layer(x)
    y, state = layer(x[:, :cut])
    pieces, start = [y], cut
    while start < 19:  # pieces of 1, 2 and 6 tokens, crossing chunk boundaries
        end = min(19, start + (1, 2, 6)[start % 3])
        y, state = layer(x[:, start:end], state, start)
        pieces.append(y)
        start = end
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("memory_read", ["start", "running"])
def test_causal_and_batch_isolated(memory_read):
    layer = make(chunk_size=4, memory_read=memory_read)
    x = torch.randn(2, 12, D_MODEL, dtype=torch.float64)
    base, _ = layer(x)
    changed = x.clone()
    changed[0, 6] += 1.0
    out, _ = layer(changed)
    assert torch.equal(out[0, :6], base[0, :6]) and not torch.allclose(out[0, 6:], base[0, 6:])
    assert torch.equal(out[1], base[1])


def test_gradients_reach_the_memory_initial_state():
    layer = make(chunk_size=2)
    y, _ = layer(torch.randn(2, 9, D_MODEL, dtype=torch.float64))
    y.square().sum().backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_bad_arguments():
    layer = titans(chunk_size=4)
    with pytest.raises(ValueError, match="multiple of chunk_size=4"):
        layer(torch.randn(1, 3, D_MODEL), None, 6)
    with pytest.raises(ValueError, match=r"x must be \[batch, time, 16\]"):
        layer(torch.randn(1, 3, 8))
    with pytest.raises(HopeError, match="divisible"):
        make_config("titans", None, d_model=15, n_heads=2)
    with pytest.raises(HopeError, match="memory_read must be"):
        titans(memory_read="end")

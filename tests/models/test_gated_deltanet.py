"""Gated DeltaNet mixer against a per-token reference written from the gated delta rule."""

import pytest
import torch
import torch.nn.functional as F

from hope.errors import HopeError
from hope.models import make_config
from hope.models.gated_deltanet import GatedDeltaNet

D_MODEL, HEADS = 16, 2


def gated_deltanet(n_heads: int = HEADS, **fields) -> GatedDeltaNet:
    return GatedDeltaNet(make_config("gated-deltanet", None, d_model=D_MODEL, n_heads=n_heads, **fields))


def reference(layer: GatedDeltaNet, x: torch.Tensor) -> torch.Tensor:
    """One token at a time: conv, unit q/k, ``S <- S (alpha I - eta k k^T) + eta v k^T``, ``o = S q``."""
    b, t, d = x.shape
    h, dh = layer.n_heads, layer.head_dim
    projected = layer.qkv(x)
    memory = x.new_zeros(b, h, dh, dh)
    outputs = []
    for i in range(t):
        window = [projected[:, i - 3 + j] if i - 3 + j >= 0 else projected.new_zeros(b, 3 * d) for j in range(4)]
        q, k, v = F.silu(sum(layer.conv.weight[:, j] * window[j] for j in range(4))).view(b, 3, h, dh).unbind(1)
        q, k = (u / (u.square().sum(-1, keepdim=True) + 1e-6).sqrt() for u in (q, k))
        gates = torch.sigmoid(layer.gates(x[:, i]))
        alpha, eta = gates[:, :h, None, None], gates[:, h:, None, None]
        eye = torch.eye(dh, dtype=x.dtype)
        memory = memory @ (alpha * eye - eta * k[..., :, None] * k[..., None, :]) + eta * v[..., :, None] * k[..., None, :]
        outputs.append((memory @ q[..., None])[..., 0])
    reads = torch.stack(outputs, 1)
    y = layer.output.norm(reads).flatten(2) * F.silu(layer.output.gate(x))
    return layer.output.out(y)


def make(**kwargs):
    torch.manual_seed(2)
    layer = gated_deltanet(**kwargs).double()
    for p in layer.parameters():  # random everything (LM-style init is tested through the model)
        torch.nn.init.normal_(p, std=0.3)
    return layer


@pytest.mark.parametrize("length,chunk_size", [(1, 4), (13, 4), (16, 16), (21, 64)])
def test_matches_per_token_reference_outputs_and_gradients(length, chunk_size):
    layer = make(chunk_size=chunk_size)
    x = torch.randn(2, length, D_MODEL, dtype=torch.float64, requires_grad=True)
    y, state = layer(x)
    expected = reference(layer, x)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
    weight = torch.randn_like(y)
    params = [x] + list(layer.parameters())
    for got, want in zip(torch.autograd.grad((y * weight).sum(), params),
                         torch.autograd.grad((expected * weight).sum(), params)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    assert state.memory.shape == (2, HEADS, 8, 8) and state.conv.shape == (2, 3, 3 * D_MODEL)


@pytest.mark.parametrize("cut", [1, 3, 8, 19])
def test_prefill_then_decode_equals_one_forward(cut):
    layer = make(chunk_size=4)
    x = torch.randn(2, 20, D_MODEL, dtype=torch.float64)
    full, _ = layer(x)
    y, state = layer(x[:, :cut])
    pieces = [y]
    for t in range(cut, 20):
        y, state = layer(x[:, t:t + 1], state)
        pieces.append(y)
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=1e-12, atol=1e-12)


def test_causal_and_batch_isolated():
    layer = make()
    x = torch.randn(2, 12, D_MODEL, dtype=torch.float64)
    base, _ = layer(x)
    changed = x.clone()
    changed[0, 5] += 1.0
    out, _ = layer(changed)
    assert torch.equal(out[0, :5], base[0, :5]) and not torch.allclose(out[0, 5:], base[0, 5:])
    assert torch.equal(out[1], base[1])


def test_initial_gates():
    layer = gated_deltanet(4, retention_init=(0.9, 0.99))
    layer.init_weights()
    retention = torch.sigmoid(layer.gates.bias[:4])
    torch.testing.assert_close(retention, torch.linspace(0.9, 0.99, 4))
    assert torch.all(layer.gates.bias[4:] == 0)


def test_bad_arguments():
    with pytest.raises(HopeError, match="divisible"):
        make_config("gated-deltanet", None, d_model=15, n_heads=2)
    with pytest.raises(ValueError, match=r"x must be \[batch, time, d_model\]"):
        gated_deltanet()(torch.randn(3, 16))

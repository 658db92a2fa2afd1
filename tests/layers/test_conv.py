"""Causal depthwise short convolution: per-token formula, streaming with a tail, gradients, bad input."""

import pytest
import torch
import torch.nn.functional as F

from hope.layers.conv import ShortConv


def per_token(conv: ShortConv, x: torch.Tensor) -> torch.Tensor:
    """``y[t, c] = act(sum_j w[c, j] x[t - W + 1 + j, c])``, zeros before the start."""
    outputs = []
    for t in range(x.shape[1]):
        y = sum(conv.weight[:, j] * x[:, t - conv.width + 1 + j] for j in range(conv.width)
                if t - conv.width + 1 + j >= 0)
        outputs.append(F.silu(y) if conv.activation else y)
    return torch.stack(outputs, dim=1)


@pytest.mark.parametrize("width", [1, 2, 4])
@pytest.mark.parametrize("activation", [True, False])
def test_matches_formula_outputs_and_gradients(width, activation):
    conv = ShortConv(6, width, activation).double()
    x = torch.randn(2, 9, 6, dtype=torch.float64, requires_grad=True)
    y, tail = conv(x)
    expected = per_token(conv, x)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(tail, x[:, 9 - (width - 1):].detach() if width > 1 else x[:, :0], rtol=0, atol=0)
    weight = torch.randn_like(y)
    got = torch.autograd.grad((y * weight).sum(), (x, conv.weight))
    want = torch.autograd.grad((expected * weight).sum(), (x, conv.weight))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pieces", [[1] * 9, [2, 1, 3, 3], [5, 4], [1, 8]])
def test_streaming_pieces_equal_one_call(pieces):
    conv = ShortConv(5, 4).double()
    x = torch.randn(3, 9, 5, dtype=torch.float64)
    full, full_tail = conv(x)
    outputs, tail, start = [], None, 0
    for n in pieces:
        y, tail = conv(x[:, start:start + n], tail)
        outputs.append(y)
        start += n
    torch.testing.assert_close(torch.cat(outputs, 1), full, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(tail, full_tail, rtol=0, atol=0)


def test_bad_input():
    conv = ShortConv(4, 4)
    with pytest.raises(ValueError, match=r"x must have shape \[B, T, 4\]"):
        conv(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match=r"tail must have shape \[B, W - 1, C\]"):
        conv(torch.randn(2, 3, 4), torch.zeros(2, 2, 4))
    with pytest.raises(ValueError, match="positive"):
        ShortConv(0, 4)

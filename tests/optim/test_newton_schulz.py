"""hope.ops.newton_schulz: the polar factor, Muon's bf16 arithmetic, batching, bad input."""

import pytest
import torch
from torch.optim._muon import _zeropower_via_newtonschulz as torch_newton_schulz

from hope.ops.newton_schulz import CUBIC, QUINTIC, newton_schulz


@pytest.mark.parametrize("shape", [(6, 6), (4, 9), (9, 4)])
def test_cubic_iteration_converges_to_the_polar_factor(shape):
    g = torch.randn(*shape, dtype=torch.float64)
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    torch.testing.assert_close(newton_schulz(g, steps=60, coefficients=CUBIC), u @ vh, rtol=0, atol=1e-9)


def test_quintic_five_steps_leave_singular_values_near_one():
    s = torch.linalg.svdvals(newton_schulz(torch.randn(64, 32), dtype=torch.float32))
    assert s.min() > 0.6 and s.max() < 1.25


@pytest.mark.parametrize("shape", [(8, 5), (5, 8), (32, 32)])
def test_bf16_quintic_is_bitwise_torch_muons(shape):
    g = torch.randn(*shape)
    expected = torch_newton_schulz(g, QUINTIC, 5, 1e-7).float()
    assert torch.equal(newton_schulz(g, dtype=torch.bfloat16), expected)


def test_batched_equals_one_by_one_and_keeps_dtype():
    g = torch.randn(3, 2, 5, 4, dtype=torch.float64)
    batched = newton_schulz(g)
    assert batched.shape == g.shape and batched.dtype == torch.float64
    for idx in [(0, 0), (2, 1)]:
        torch.testing.assert_close(batched[idx], newton_schulz(g[idx]), rtol=1e-12, atol=1e-12)


def test_scale_invariant_and_zero_safe():
    g = torch.randn(5, 7, dtype=torch.float64)
    torch.testing.assert_close(newton_schulz(1e3 * g), newton_schulz(g), rtol=1e-10, atol=1e-12)
    assert torch.equal(newton_schulz(torch.zeros(3, 4)), torch.zeros(3, 4))


def test_bad_input():
    with pytest.raises(ValueError, match="matrix must have at least 2 dims"):
        newton_schulz(torch.randn(5))
    with pytest.raises(ValueError, match="coefficients"):
        newton_schulz(torch.randn(3, 3), coefficients=(1.0, 2.0))

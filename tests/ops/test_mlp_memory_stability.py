"""hope.ops.mlp_memory over 100k tokens of random inputs at step sizes up to 10 (float32, no grad,
small memory, C = 64; the chunk form, which the tests in test_mlp_memory.py tie to the reference).

With the proximal step ``eta' = eta / (1 + eta ||u||^2)`` every layer's fold is non-expansive in the
layer's own (linear) problem. Under the "dot" objective the errors do not grow with the weights, so
the weights stay bounded. Under "l2" the W2 error ``silu'(W2 k) * (W1^T (M(k) - v_hat))`` grows with
``W2`` itself; the weights stay finite (silu saturates) but not small, so only finiteness is checked.
Without the proximal step the same inputs blow up within a few thousand tokens.
"""

from __future__ import annotations

import pytest
import torch

from hope.ops.mlp_memory import mlp_memory

B, H, D, E = 1, 2, 4, 8
LENGTH, SEGMENT, CHUNK = 100_000, 10_000, 64


def random_stream(length: int) -> list[torch.Tensor]:
    """Unnormalised q, k, v_hat ~ N(0, 1), retention alpha in (0.9, 1), step eta in (0, 10)."""
    gen = torch.Generator().manual_seed(0)
    q, k, v_hat = (torch.randn(B, length, H, D, generator=gen) for _ in range(3))
    alpha = 0.9 + 0.1 * torch.rand(B, length, H, generator=gen)
    eta = 10.0 * torch.rand(B, length, H, generator=gen)
    return [q, k, v_hat, alpha, eta]


def largest_weights(objective: str, proximal: bool, length: int) -> list[float]:
    """Run in segments (whole chunks, so exactly one pass) and return ``max |W|`` after each."""
    gen = torch.Generator().manual_seed(1)
    w1, w2 = 0.5 * torch.randn(H, D, E, generator=gen), 0.5 * torch.randn(H, E, D, generator=gen)
    stream = random_stream(length)
    largest = []
    with torch.no_grad():
        for start in range(0, length, SEGMENT):
            segment = [x[:, start : start + SEGMENT] for x in stream]
            _, (w1, w2) = mlp_memory(*segment, w1, w2, objective=objective, proximal=proximal, chunk_size=CHUNK,
                                     curvature=False, read="start")
            largest.append(max(w1.abs().max().item(), w2.abs().max().item()))
    return largest


def test_dot_objective_stays_bounded_for_100k_tokens() -> None:
    largest = largest_weights("dot", proximal=True, length=LENGTH)
    assert all(torch.isfinite(torch.tensor(largest))), largest
    assert max(largest) < 10.0, largest


def test_l2_objective_stays_finite_for_100k_tokens() -> None:
    largest = largest_weights("l2", proximal=True, length=LENGTH)
    assert all(torch.isfinite(torch.tensor(largest))), largest


@pytest.mark.parametrize("objective", ["dot", "l2"])
def test_without_the_proximal_step_the_same_inputs_blow_up(objective: str) -> None:
    largest = largest_weights(objective, proximal=False, length=SEGMENT)
    assert not (largest[0] < 1e6), largest

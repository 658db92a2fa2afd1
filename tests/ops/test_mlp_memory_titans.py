"""hope.ops.mlp_memory.titans_memory (the Titans rule on the residual MLP memory): chunk and recurrent
forms against the per-token reference (float64; outputs, final weights and momentum, gradients w.r.t.
every input), C = 1 against the rule written from the formula with autograd gradients, prefill +
decoding, bad input; ``max_grad_norm`` (per-token gradient clipping) against the same references and over
20k tokens of random inputs on which the unclipped rule overflows."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hope.ops.mlp_memory import TitansMemoryState, titans_memory, titans_memory_prefill, titans_memory_step

B, H, D, E = 2, 2, 4, 8
SEQUENCE = ("q", "k", "v", "theta", "beta", "forget")


def make_inputs(t: int) -> dict:
    """Unit keys, values ~ N(0, 1), step theta in (0, 0.2), momentum beta in (0, 0.9), forget in
    (0, 0.02), initial weights ~ N(0, 0.25) and a non-zero initial momentum."""
    f64 = torch.float64
    return {
        "q": torch.randn(B, t, H, D, dtype=f64),
        "k": F.normalize(torch.randn(B, t, H, D, dtype=f64), dim=-1),
        "v": torch.randn(B, t, H, D, dtype=f64),
        "theta": 0.2 * torch.rand(B, t, H, dtype=f64),
        "beta": 0.9 * torch.rand(B, t, H, dtype=f64),
        "forget": 0.02 * torch.rand(B, t, H, dtype=f64),
        "W1": 0.5 * torch.randn(B, H, D, E, dtype=f64),
        "W2": 0.5 * torch.randn(B, H, E, D, dtype=f64),
        "S1": 0.1 * torch.randn(B, H, D, E, dtype=f64),
        "S2": 0.1 * torch.randn(B, H, E, D, dtype=f64),
    }


def run_with_grads(x: dict, **options) -> list[torch.Tensor]:
    """``[o, W1, W2, S1, S2, *gradients]`` for a fixed random scalar of all five outputs."""
    leaves = {name: value.detach().clone().requires_grad_() for name, value in x.items()}
    *args, s1, s2 = leaves.values()
    o, final = titans_memory(*args, initial_momentum=(s1, s2), **options)
    gen = torch.Generator().manual_seed(1)
    outputs = (o, *final)
    loss = sum((y * torch.randn(y.shape, generator=gen, dtype=y.dtype)).sum() for y in outputs)
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return [y.detach() for y in outputs] + list(grads)


def clipped(grad: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """``grad * min(1, max_grad_norm / ||grad||_F)`` per batch element and head."""
    norm = grad.square().sum((-2, -1), keepdim=True).sqrt()
    return grad * torch.clamp(max_grad_norm / norm, max=1.0)


def assert_all_close(got: list[torch.Tensor], want: list[torch.Tensor], tol: float = 1e-10) -> None:
    names = ["o", "W1_final", "W2_final", "S1_final", "S2_final", *(f"grad_{n}" for n in make_inputs(1))]
    for name, a, b in zip(names, got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("read", ["start", "running"])
@pytest.mark.parametrize("max_grad_norm", [None, 1.0])
@pytest.mark.parametrize("length", [1, 63, 64, 65, 130])
def test_chunk_matches_naive(length: int, max_grad_norm: float | None, read: str) -> None:
    x = make_inputs(length)
    for chunk_size in (1, 8, 64):
        options = dict(chunk_size=chunk_size, max_grad_norm=max_grad_norm, read=read)
        want = run_with_grads(x, mode="naive", **options)
        assert_all_close(run_with_grads(x, mode="chunk", **options), want)
        if length == 65:
            assert_all_close(run_with_grads(x, mode="recurrent", **options), want)


@pytest.mark.parametrize("read", ["start", "running"])
@pytest.mark.parametrize("max_grad_norm", [None, 1.0])
def test_chunk_size_one_is_the_per_token_titans_rule(max_grad_norm: float | None, read: str) -> None:
    """``S <- beta S - theta dL/dW``, ``W <- (1 - forget) W + S`` per layer, the gradient of
    ``0.5 ||M(k) - v||^2`` by autograd at the weights before the token (clipped to ``max_grad_norm`` in
    Frobenius norm when given), the read before the update (``start``) or after it (``running``, the
    Titans paper's ``y_t = M*_t(q_t)``)."""
    x = make_inputs(20)
    leaves = {name: value.clone().requires_grad_() for name, value in x.items()}
    w1, w2, s1, s2 = leaves["W1"], leaves["W2"], leaves["S1"], leaves["S2"]
    outputs, clipped_tokens = [], 0
    for t in range(20):
        q, k, v = (leaves[n][:, t, :, :, None] for n in ("q", "k", "v"))
        theta, beta, forget = (leaves[n][:, t, :, None, None] for n in ("theta", "beta", "forget"))
        if read == "start":
            outputs.append((q + w1 @ F.silu(w2 @ q)).squeeze(-1))
        loss = 0.5 * (k + w1 @ F.silu(w2 @ k) - v).square().sum()
        grad1, grad2 = torch.autograd.grad(loss, (w1, w2), create_graph=True)
        if max_grad_norm is not None:
            clipped_tokens += int((grad1.square().sum((-2, -1)) > max_grad_norm ** 2).sum())
            grad1, grad2 = clipped(grad1, max_grad_norm), clipped(grad2, max_grad_norm)
        s1, s2 = beta * s1 - theta * grad1, beta * s2 - theta * grad2
        w1, w2 = (1 - forget) * w1 + s1, (1 - forget) * w2 + s2
        if read == "running":
            outputs.append((q + w1 @ F.silu(w2 @ q)).squeeze(-1))
    if max_grad_norm is not None:
        assert 0 < clipped_tokens < 20 * B * H
    want = (torch.stack(outputs, dim=1), w1, w2, s1, s2)
    want_grads = torch.autograd.grad(sum(y.sum() for y in want), list(leaves.values()))
    for mode in ("naive", "chunk"):
        *args, m1, m2 = leaves.values()
        o, final = titans_memory(*args, initial_momentum=(m1, m2), chunk_size=1, mode=mode,
                                 max_grad_norm=max_grad_norm, read=read)
        grads = torch.autograd.grad(o.sum() + sum(y.sum() for y in final), list(leaves.values()))
        for got, ref in zip((o, *final, *grads), (*want, *want_grads), strict=True):
            torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("read", ["start", "running"])
@pytest.mark.parametrize("max_grad_norm", [None, 1.0])
def test_prefill_then_decode_equals_one_pass(max_grad_norm: float | None, read: str) -> None:
    length, chunk = 50, 8
    x = make_inputs(length)
    options = dict(chunk_size=chunk, max_grad_norm=max_grad_norm, read=read)
    o_ref, final_ref = titans_memory(*(x[n] for n in (*SEQUENCE, "W1", "W2")), initial_momentum=(x["S1"], x["S2"]),
                                     **options)
    sequence = [x[n] for n in SEQUENCE]
    state = TitansMemoryState.start(x["W1"], x["W2"], (x["S1"], x["S2"]))
    o_a, state = titans_memory_prefill(*(s[:, :11] for s in sequence), state, **options)
    o_b, state = titans_memory_prefill(*(s[:, 11:37] for s in sequence), state, **options)
    outputs = [o_a, o_b]
    for t in range(37, length):
        o_t, state = titans_memory_step(state, *(s[:, t] for s in sequence), **options)
        outputs.append(o_t.unsqueeze(1))
    torch.testing.assert_close(torch.cat(outputs, dim=1), o_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close((*state.weights, *state.momentum), final_ref, rtol=1e-10, atol=1e-10)


def test_zero_initial_momentum_is_the_default() -> None:
    x = make_inputs(12)
    args = [x[n] for n in (*SEQUENCE, "W1", "W2")]
    zeros = (torch.zeros_like(x["W1"]), torch.zeros_like(x["W2"]))
    got = titans_memory(*args, chunk_size=4)
    want = titans_memory(*args, initial_momentum=zeros, chunk_size=4)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"theta": lambda x: x["theta"][..., None]}, r"theta must have shape \[B, T, H\]"),
        ({"forget": lambda x: x["forget"][:, :3]}, r"forget must have shape \[B, T, H\]"),
        ({"v": lambda x: x["v"][..., :2]}, r"v must have shape \[B, T, H, D\]"),
        ({"S1": lambda x: x["S1"][..., :3]}, r"initial_momentum\[0\] must have shape"),
        ({"S2": lambda x: x["S2"].mT}, r"initial_momentum\[1\] must have shape"),
    ],
)
def test_bad_input_raises_value_error_naming_the_argument(change: dict, message: str) -> None:
    x = make_inputs(10)
    x.update({name: bad(x) for name, bad in change.items()})
    with pytest.raises(ValueError, match=message):
        titans_memory(*(x[n] for n in (*SEQUENCE, "W1", "W2")), initial_momentum=(x["S1"], x["S2"]))



@pytest.mark.parametrize("bad", [0, -1.0, True, "1"])
def test_bad_max_grad_norm(bad) -> None:
    x = make_inputs(5)
    with pytest.raises(ValueError, match="max_grad_norm"):
        titans_memory(*(x[n] for n in (*SEQUENCE, "W1", "W2")), max_grad_norm=bad)


def test_bad_read() -> None:
    x = make_inputs(5)
    with pytest.raises(ValueError, match="read must be one of"):
        titans_memory(*(x[n] for n in (*SEQUENCE, "W1", "W2")), read="end")


def test_running_read_sees_the_earlier_tokens_of_its_chunk() -> None:
    """With one chunk, a start read at token t does not depend on the keys and values before it; a running
    read does (this is what the running read is for)."""
    x = make_inputs(8)
    args = lambda y: [y[n] for n in (*SEQUENCE, "W1", "W2")]
    changed = {**x, "v": x["v"].clone()}
    changed["v"][:, 0] += 1.0
    for read, differs in (("start", False), ("running", True)):
        o, _ = titans_memory(*args(x), chunk_size=8, read=read)
        o_changed, _ = titans_memory(*args(changed), chunk_size=8, read=read)
        assert (o[:, 1:] - o_changed[:, 1:]).abs().max().item() > 1e-3 if differs else torch.equal(o, o_changed)


def largest_weights(max_grad_norm: float | None, length: int = 20_000, segment: int = 2_000) -> list[float]:
    """``max |W|`` after each segment of a float32 stream: unit keys, values ~ N(0, 4), theta in (0, 0.1),
    beta in (0.9, 0.95), forget in (0, 0.01), C = 16."""
    b, h, d, e = 1, 2, 8, 16
    gen = torch.Generator().manual_seed(0)
    q, v = torch.randn(b, length, h, d, generator=gen), 2 * torch.randn(b, length, h, d, generator=gen)
    k = F.normalize(torch.randn(b, length, h, d, generator=gen), dim=-1)
    theta = 0.1 * torch.rand(b, length, h, generator=gen)
    beta = 0.9 + 0.05 * torch.rand(b, length, h, generator=gen)
    forget = 0.01 * torch.rand(b, length, h, generator=gen)
    w1, w2 = 0.5 * torch.randn(h, d, e, generator=gen), 0.5 * torch.randn(h, e, d, generator=gen)
    momentum, largest = None, []
    with torch.no_grad():
        for start in range(0, length, segment):
            piece = [s[:, start : start + segment] for s in (q, k, v, theta, beta, forget)]
            _, (w1, w2, s1, s2) = titans_memory(*piece, w1, w2, initial_momentum=momentum, chunk_size=16,
                                                max_grad_norm=max_grad_norm)
            momentum = (s1, s2)
            largest.append(max(w1.abs().max().item(), w2.abs().max().item()))
    return largest


def test_clipping_keeps_the_memory_bounded_where_the_plain_rule_overflows() -> None:
    plain, clipped_run = largest_weights(None), largest_weights(1.0)
    assert not all(torch.isfinite(torch.tensor(plain))), plain
    assert all(torch.isfinite(torch.tensor(clipped_run))) and max(clipped_run) < 10.0, clipped_run


@pytest.mark.parametrize("read", ["start", "running"])
def test_clipping_has_finite_gradients_where_the_memory_saturates(read: str) -> None:
    """float32, ``W2 k = -50`` for every hidden unit: ``silu'(-50) ~ 1e-20`` makes every token's gradient of W2
    tiny. The clip's derivative stays finite (dividing by a norm floored at 1e-30 instead made it overflow to
    NaN, as in Titans trained on recall data: docs/results.md)."""
    t = 8
    k = torch.full((B, t, H, D), D ** -0.5)
    leaves = {
        "q": torch.randn(B, t, H, D), "k": k, "v": torch.randn(B, t, H, D),
        "theta": torch.full((B, t, H), 0.5), "beta": torch.full((B, t, H), 0.9), "forget": torch.full((B, t, H), 0.01),
        "W1": torch.randn(B, H, D, E), "W2": torch.full((B, H, E, D), -25.0),
    }
    leaves = {name: value.requires_grad_() for name, value in leaves.items()}
    o, final = titans_memory(*leaves.values(), chunk_size=4, max_grad_norm=1.0, read=read)
    sum(y.sum() for y in (o, *final)).backward()
    for name, value in leaves.items():
        assert torch.isfinite(value.grad).all(), name

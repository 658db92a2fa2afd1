"""hope.ops.mlp_memory (deep DGD memory): chunk and recurrent forms against the per-token reference
(float64; outputs, final weights and gradients w.r.t. every input), C = 1 against DGD written from the
formula with autograd gradients, every chunk's fold against hope.ops.dgd, the linear-memory case,
prefill + decoding, batch isolation, dtypes and bad input; the three read modes (``start``, ``previous``,
``running``); ``curvature=True`` (proximal steps that count the l2 objective's curvature) against the same
references and over 100k tokens of random inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hope.ops.dgd import dgd
from hope.ops import mlp_memory as op
from hope.ops.mlp_memory import MLPMemoryState
from hope.ops.mlp_memory.chunk import Decays, fold_layer, to_chunks

B, H, D, E = 2, 2, 4, 8
PLAIN = dict(objective="dot", chunk_size=64, curvature=False, read="start")
"""The options the op requires (no defaults: hope.ops.mlp_memory.api), at the values a test does not set."""


def mlp_memory(*args, **options):
    return op.mlp_memory(*args, **{**PLAIN, **options})


def mlp_memory_prefill(*args, **options):
    return op.mlp_memory_prefill(*args, **{**PLAIN, **options})


def mlp_memory_step(*args, **options):
    return op.mlp_memory_step(*args, **{**PLAIN, **options})
INPUTS = ("q", "k", "v_hat", "alpha", "eta", "W1", "W2")


def make_inputs(t: int, b: int = B, h: int = H, d: int = D, e: int = E, dtype=torch.float64) -> dict:
    """Random inputs: unit keys (as in the model), targets ~ N(0, 1), alpha in (0.5, 1), eta in (0, 1),
    per-sequence initial weights ~ N(0, 0.25)."""
    return {
        "q": torch.randn(b, t, h, d, dtype=dtype),
        "k": F.normalize(torch.randn(b, t, h, d, dtype=dtype), dim=-1),
        "v_hat": torch.randn(b, t, h, d, dtype=dtype),
        "alpha": 0.5 + 0.5 * torch.rand(b, t, h, dtype=dtype),
        "eta": torch.rand(b, t, h, dtype=dtype),
        "W1": 0.5 * torch.randn(b, h, d, e, dtype=dtype),
        "W2": 0.5 * torch.randn(b, h, e, d, dtype=dtype),
    }


def run_with_grads(x: dict, **options) -> list[torch.Tensor]:
    """``[o, W1, W2, *gradients]``: gradients of a fixed random scalar of (o, W1, W2) w.r.t. every input."""
    leaves = {name: value.detach().clone().requires_grad_() for name, value in x.items()}
    o, (w1, w2) = mlp_memory(*leaves.values(), **options)
    gen = torch.Generator().manual_seed(1)
    loss = sum((y * torch.randn(y.shape, generator=gen, dtype=y.dtype)).sum() for y in (o, w1, w2))
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return [o.detach(), w1.detach(), w2.detach(), *grads]


def assert_all_close(got: list[torch.Tensor], want: list[torch.Tensor], tol: float = 1e-10) -> None:
    names = ["o", "W1_final", "W2_final", *(f"grad_{n}" for n in INPUTS)]
    for name, a, b in zip(names, got, want):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("objective", ["dot", "l2"])
@pytest.mark.parametrize("length", [1, 63, 64, 65, 130])
def test_chunk_matches_naive(objective: str, length: int) -> None:
    x = make_inputs(length)
    for chunk_size in (1, 8, 64):
        options = dict(objective=objective, chunk_size=chunk_size)
        assert_all_close(run_with_grads(x, mode="chunk", **options), run_with_grads(x, mode="naive", **options))


@pytest.mark.parametrize("objective", ["dot", "l2"])
@pytest.mark.parametrize(("proximal", "use_dgd"), [(False, True), (True, False), (False, False)])
def test_chunk_matches_naive_ablations(objective: str, proximal: bool, use_dgd: bool) -> None:
    x = make_inputs(65)
    for chunk_size in (1, 8, 64):
        options = dict(objective=objective, proximal=proximal, dgd=use_dgd, chunk_size=chunk_size)
        assert_all_close(run_with_grads(x, mode="chunk", **options), run_with_grads(x, mode="naive", **options))


@pytest.mark.parametrize("objective", ["dot", "l2"])
def test_recurrent_matches_naive(objective: str) -> None:
    x = make_inputs(65)
    for chunk_size in (8, 64):
        options = dict(objective=objective, chunk_size=chunk_size)
        assert_all_close(run_with_grads(x, mode="recurrent", **options), run_with_grads(x, mode="naive", **options))


def test_long_sequence_float32_chunk_close_to_naive() -> None:
    x = make_inputs(1000, b=1, h=2, d=16, e=32, dtype=torch.float32)
    o_ref, (w1_ref, w2_ref) = mlp_memory(*x.values(), objective="l2", chunk_size=64, mode="naive")
    o, (w1, w2) = mlp_memory(*x.values(), objective="l2", chunk_size=64)
    for got, want in ((o, o_ref), (w1, w1_ref), (w2, w2_ref)):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def direct_dgd(x: dict, objective: str, proximal: bool, use_dgd: bool) -> tuple[torch.Tensor, ...]:
    """Per-token DGD written from the formula, independent of the package: the read uses the weights
    before the token, the layer gradients come from autograd of the inner loss, and each layer steps
    ``W <- W (alpha I - eta' u u^T) - eta' dL/dW`` with its input ``u`` (``k`` for W2, ``silu(W2 k)``
    for W1) as explicit matrices."""
    w1, w2 = x["W1"], x["W2"]
    eye_d, eye_e = torch.eye(D, dtype=w1.dtype), torch.eye(E, dtype=w1.dtype)
    outputs = []
    for t in range(x["q"].shape[1]):
        q, k, v = x["q"][:, t, :, :, None], x["k"][:, t, :, :, None], x["v_hat"][:, t, :, :, None]
        outputs.append((q + w1 @ F.silu(w2 @ q)).squeeze(-1))
        y = k + w1 @ F.silu(w2 @ k)
        loss = -(y * v).sum() if objective == "dot" else 0.5 * (y - v).square().sum()
        grad1, grad2 = torch.autograd.grad(loss, (w1, w2), create_graph=True)
        alpha, eta = x["alpha"][:, t, :, None, None], x["eta"][:, t, :, None, None]
        new = []
        for w, grad, u, eye in ((w1, grad1, F.silu(w2 @ k), eye_e), (w2, grad2, k, eye_d)):
            step = eta / (1.0 + eta * u.square().sum(-2, keepdim=True)) if proximal else eta
            retention = alpha * eye - (step * u @ u.mT if use_dgd else 0.0)
            new.append(w @ retention - step * grad)
        w1, w2 = new
    return torch.stack(outputs, dim=1), w1, w2


@pytest.mark.parametrize("objective", ["dot", "l2"])
@pytest.mark.parametrize(("proximal", "use_dgd"), [(True, True), (False, True), (True, False)])
def test_chunk_size_one_is_direct_per_token_dgd(objective: str, proximal: bool, use_dgd: bool) -> None:
    x = make_inputs(20)
    leaves = {name: value.clone().requires_grad_() for name, value in x.items()}
    want = direct_dgd(leaves, objective, proximal, use_dgd)
    want_grads = torch.autograd.grad(sum(y.sum() for y in want), list(leaves.values()))
    options = dict(objective=objective, proximal=proximal, dgd=use_dgd, chunk_size=1)
    for mode in ("naive", "chunk"):
        o, (w1, w2) = mlp_memory(*leaves.values(), mode=mode, **options)
        grads = torch.autograd.grad(o.sum() + w1.sum() + w2.sum(), list(leaves.values()))
        for got, ref in zip((o, w1, w2, *grads), (*want, *want_grads)):
            torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def layer_inputs_and_errors(w1, w2, k, v, objective):
    """``(u1, delta1, u2, delta2)`` per token (``[B, T, H, .]``) at fixed weights, the errors by
    autograd of the summed inner loss w.r.t. each layer's output (tokens are independent)."""
    z = torch.einsum("bhed,bthd->bthe", w2.detach(), k).requires_grad_()
    h = F.silu(z)
    w1_h = torch.einsum("bhde,bthe->bthd", w1.detach(), h).requires_grad_()
    y = k + w1_h
    loss = -(y * v).sum() if objective == "dot" else 0.5 * (y - v).square().sum()
    delta1, delta2 = torch.autograd.grad(loss, (w1_h, z))
    return h.detach(), delta1, k, delta2


@pytest.mark.parametrize("objective", ["dot", "l2"])
@pytest.mark.parametrize(("proximal", "use_dgd"), [(True, True), (False, False)])
def test_every_chunk_fold_is_linear_dgd_with_u_and_minus_delta(objective: str, proximal: bool, use_dgd: bool) -> None:
    """Each chunk's end state of each layer is hope.ops.dgd run over the chunk, from the chunk-start
    weights, with keys u and values -delta taken at those weights (proximal eta' per layer)."""
    c, length, x = 8, 40, make_inputs(40)
    sequence = [x[n] for n in INPUTS[:5]]
    options = dict(objective=objective, proximal=proximal, dgd=use_dgd, chunk_size=c)
    w1, w2 = x["W1"], x["W2"]
    for start in range(0, length, c):
        _, (w1_end, w2_end) = mlp_memory(*(s[:, : start + c] for s in sequence), x["W1"], x["W2"], **options)
        _, k, v_hat, alpha, eta = (s[:, start : start + c] for s in sequence)
        u1, delta1, u2, delta2 = layer_inputs_and_errors(w1, w2, k, v_hat, objective)
        for w, u, delta, w_end in ((w1, u1, delta1, w1_end), (w2, u2, delta2, w2_end)):
            step = eta / (1.0 + eta * u.square().sum(-1)) if proximal else eta
            _, want = dgd(u, u, -delta, alpha, step, rule="dgd" if use_dgd else "gd",
                          initial_state=w, output_final_state=True, mode="naive")
            torch.testing.assert_close(w_end, want, rtol=1e-10, atol=1e-10)
        w1, w2 = w1_end, w2_end


def linear_memory_chunked(x: dict, state: torch.Tensor, chunk: int, rule: str,
                          previous: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The chunk form's fold primitive applied to a *linear* memory ``M(x) = S x``.

    How the memory is made linear: a linear memory is one layer whose input is the key itself
    (``u = k``) and, under the "dot" objective ``-<S k, v_hat>``, whose error ``delta = -v_hat`` does
    not depend on ``S``. Feeding those ``(u, delta)`` and the queries to the fold that the chunk form uses for
    each MLP layer must give the gated delta rule exactly, outputs and states, for any chunk size. Returns the
    reads ``S_t q_t`` (``S_{t-1} q_t`` if ``previous``) and the end state of every chunk.
    """
    q, k, v = (to_chunks(x[n], chunk, 0.0) for n in ("q", "k", "v_hat"))
    alpha, eta = to_chunks(x["alpha"], chunk, 1.0), to_chunks(x["eta"], chunk, 0.0)
    decays = Decays.of(alpha)
    ends = []
    for n in range(k.shape[2]):
        q_n, k_n, v_n = q[:, :, n], k[:, :, n], v[:, :, n]
        decays_n = Decays(*(part[:, :, n] for part in decays))
        reads, state = fold_layer(state, k_n, k_n @ state.mT, -v_n, decays_n, eta[:, :, n], rule == "dgd",
                                  q_n, q_n @ state.mT, previous)
        ends.append((reads, state))
    return ends


@pytest.mark.parametrize("rule", ["dgd", "gd"])
@pytest.mark.parametrize("chunk", [1, 8, 16, 64])
@pytest.mark.parametrize("previous", [False, True])
def test_linear_memory_folds_equal_hope_ops_dgd(rule: str, chunk: int, previous: bool) -> None:
    length = 70
    x = make_inputs(length)
    state = torch.randn(B, H, D, D, dtype=torch.float64)
    sequence = [x[name] for name in ("q", "k", "v_hat", "alpha", "eta")]
    outputs, _ = dgd(*sequence, rule=rule, initial_state=state, mode="naive")
    if previous:  # S_{t-1} q_t: the initial state reads q_0, then the outputs of a run with queries one token later
        shifted, _ = dgd(x["q"][:, 1:], *(s[:, :-1] for s in sequence[1:]), rule=rule, initial_state=state,
                         mode="naive")
        outputs = torch.cat([(state @ x["q"][:, 0, :, :, None]).squeeze(-1)[:, None], shifted], dim=1)
    for n, (reads, s_fold) in enumerate(linear_memory_chunked(x, state, chunk, rule, previous)):
        stop = min((n + 1) * chunk, length)
        _, want = dgd(*(s[:, :stop] for s in sequence), rule=rule, initial_state=state, output_final_state=True,
                      mode="naive")
        torch.testing.assert_close(s_fold, want, rtol=1e-10, atol=1e-10)
        want_reads = outputs[:, n * chunk : stop].transpose(1, 2)
        torch.testing.assert_close(reads[:, :, : stop - n * chunk], want_reads, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("extra", [
    dict(objective="dot"), dict(objective="l2"), dict(objective="l2", curvature=True),
    dict(objective="l2", curvature=True, read="running"), dict(objective="dot", read="running"),
    dict(objective="l2", curvature=True, read="previous"), dict(objective="dot", read="previous"),
], ids=lambda e: ",".join(f"{k}={v}" for k, v in e.items()))
def test_prefill_then_decode_equals_one_pass(extra: dict) -> None:
    length, chunk = 70, 8
    x = make_inputs(length)
    options = dict(chunk_size=chunk, **extra)
    o_ref, weights_ref = mlp_memory(*x.values(), **options)
    sequence = [x[n] for n in INPUTS[:5]]

    _, (w1, w2) = mlp_memory(*(s[:, :32] for s in sequence), x["W1"], x["W2"], **options)
    o_rest, weights = mlp_memory(*(s[:, 32:] for s in sequence), w1, w2, mode="recurrent", **options)
    torch.testing.assert_close(o_rest, o_ref[:, 32:], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(weights, weights_ref, rtol=1e-10, atol=1e-10)

    state = MLPMemoryState.start(x["W1"], x["W2"])
    o_a, state = mlp_memory_prefill(*(s[:, :13] for s in sequence), state, **options)
    assert state.position == 13 % chunk
    o_b, state = mlp_memory_prefill(*(s[:, 13:43] for s in sequence), state, mode="naive", **options)
    outputs = [o_a, o_b]
    for t in range(43, length):
        o_t, state = mlp_memory_step(state, *(s[:, t] for s in sequence), **options)
        outputs.append(o_t.unsqueeze(1))
    torch.testing.assert_close(torch.cat(outputs, dim=1), o_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(state.weights, weights_ref, rtol=1e-10, atol=1e-10)


def test_sequences_never_share_memory_and_shared_init_gets_gradients() -> None:
    x = make_inputs(30)
    w1 = x["W1"][0].clone().requires_grad_()
    w2 = x["W2"][0].clone().requires_grad_()
    sequence = [x[n] for n in INPUTS[:5]]
    o, (w1_end, w2_end) = mlp_memory(*sequence, w1, w2, objective="l2", chunk_size=8)
    for b in range(B):
        o_b, (w1_b, w2_b) = mlp_memory(*(s[b : b + 1] for s in sequence), w1, w2, objective="l2", chunk_size=8)
        torch.testing.assert_close(o[b : b + 1], o_b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(w1_end[b : b + 1], w1_b, rtol=1e-12, atol=1e-12)
    (o.sum() + w1_end.sum() + w2_end.sum()).backward()
    assert w1.grad is not None and w1.grad.abs().sum() > 0 and w2.grad.abs().sum() > 0


def test_dtypes() -> None:
    x = make_inputs(20, dtype=torch.float32)
    o, (w1, w2) = mlp_memory(*x.values(), chunk_size=8)
    assert o.dtype == w1.dtype == w2.dtype == torch.float32
    low = {n: v.to(torch.bfloat16) if n in ("q", "k", "v_hat") else v for n, v in x.items()}
    o, (w1, w2) = mlp_memory(*low.values(), chunk_size=8)
    assert o.dtype == torch.bfloat16 and w1.dtype == torch.float32 and torch.isfinite(o.float()).all()


@pytest.mark.parametrize(
    ("name", "bad", "message"),
    [
        ("q", lambda x: x["q"][0], "q must be a 4-d tensor of shape [B, T, H, D]"),
        ("k", lambda x: x["k"][..., :3], "k must have shape [B, T, H, D]"),
        ("v_hat", lambda x: x["v_hat"][:, :5], "v_hat must have shape [B, T, H, D]"),
        ("alpha", lambda x: x["alpha"][..., None], "alpha must have shape [B, T, H]"),
        ("eta", lambda x: x["eta"][:1], "eta must have shape [B, T, H]"),
        ("W1", lambda x: x["W1"].mT, "W1 must have shape [B, H, D, E] or [H, D, E]"),
        ("W2", lambda x: x["W2"][..., :3], "W2 must have shape [B, H, E, D] or [H, E, D]"),
        ("W2", lambda x: x["W2"][0, 0], "W2 must have shape [B, H, E, D] or [H, E, D]"),
        ("k", lambda x: x["k"].float(), "k must have the dtype of q"),
    ],
)
def test_bad_shapes_raise_value_error_naming_the_argument(name: str, bad, message: str) -> None:
    x = make_inputs(10)
    x[name] = bad(x)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        mlp_memory(*x.values())


@pytest.mark.parametrize(
    ("option", "value"),
    [("objective", "l1"), ("mode", "fast"), ("chunk_size", 0), ("chunk_size", 2.0), ("proximal", 1), ("dgd", None)],
)
def test_bad_options_raise_value_error(option: str, value) -> None:
    with pytest.raises(ValueError, match=option):
        mlp_memory(*make_inputs(10).values(), **{option: value})


def test_bad_state_raises_value_error() -> None:
    x = make_inputs(10)
    sequence = [x[n] for n in INPUTS[:5]]
    state = MLPMemoryState.start(x["W1"], x["W2"])
    with pytest.raises(ValueError, match="state.position"):
        mlp_memory_prefill(*sequence, state._replace(position=8), chunk_size=8)
    with pytest.raises(ValueError, match=r"state.chunk_start\[1\] must have shape"):
        mlp_memory_prefill(*sequence, state._replace(chunk_start=(x["W1"], x["W1"])), chunk_size=8)


# curvature=True

SILU_MAX_SLOPE = 1.0998393201285286


@pytest.mark.parametrize("length", [1, 63, 64, 65, 130])
def test_curvature_chunk_and_recurrent_match_naive(length: int) -> None:
    x = make_inputs(length)
    for chunk_size in (1, 8, 64):
        options = dict(objective="l2", chunk_size=chunk_size, curvature=True)
        want = run_with_grads(x, mode="naive", **options)
        assert_all_close(run_with_grads(x, mode="chunk", **options), want)
        if length == 65:
            assert_all_close(run_with_grads(x, mode="recurrent", **options), want)


def test_curvature_changes_l2_and_not_dot() -> None:
    x = make_inputs(40)
    for objective, changes in (("l2", True), ("dot", False)):
        plain = mlp_memory(*x.values(), objective=objective, chunk_size=8)
        curved = mlp_memory(*x.values(), objective=objective, chunk_size=8, curvature=True)
        same = torch.allclose(plain[0], curved[0]) and torch.allclose(plain[1][1], curved[1][1])
        assert same != changes, objective


def direct_curvature_dgd(x: dict) -> tuple[torch.Tensor, ...]:
    """Per-token DGD on ``0.5 ||M(k) - v_hat||^2`` from the formula (autograd layer gradients, explicit
    retention matrices) with ``eta'_l = eta / (1 + eta (1 + gain_l) ||u_l||^2)``, ``gain_1 = 1`` and
    ``gain_2 = SILU_MAX_SLOPE^2 ||W1||_F^2`` at the weights before the token."""
    w1, w2 = x["W1"], x["W2"]
    d, e = w1.shape[-2:]
    eye_d, eye_e = torch.eye(d, dtype=w1.dtype), torch.eye(e, dtype=w1.dtype)
    outputs = []
    for t in range(x["q"].shape[1]):
        q, k, v = x["q"][:, t, :, :, None], x["k"][:, t, :, :, None], x["v_hat"][:, t, :, :, None]
        outputs.append((q + w1 @ F.silu(w2 @ q)).squeeze(-1))
        loss = 0.5 * (k + w1 @ F.silu(w2 @ k) - v).square().sum()
        grad1, grad2 = torch.autograd.grad(loss, (w1, w2), create_graph=True)
        alpha, eta = x["alpha"][:, t, :, None, None], x["eta"][:, t, :, None, None]
        gain2 = SILU_MAX_SLOPE ** 2 * w1.square().sum((-2, -1), keepdim=True)
        new = []
        for w, grad, u, eye, gain in ((w1, grad1, F.silu(w2 @ k), eye_e, 1.0), (w2, grad2, k, eye_d, gain2)):
            step = eta / (1.0 + eta * (1.0 + gain) * u.square().sum(-2, keepdim=True))
            new.append(w @ (alpha * eye - step * u @ u.mT) - step * grad)
        w1, w2 = new
    return torch.stack(outputs, dim=1), w1, w2


def test_chunk_size_one_is_direct_per_token_dgd_with_the_curvature_step() -> None:
    x = make_inputs(20)
    leaves = {name: value.clone().requires_grad_() for name, value in x.items()}
    want = direct_curvature_dgd(leaves)
    want_grads = torch.autograd.grad(sum(y.sum() for y in want), list(leaves.values()))
    for mode in ("naive", "chunk"):
        o, (w1, w2) = mlp_memory(*leaves.values(), objective="l2", chunk_size=1, curvature=True, mode=mode)
        grads = torch.autograd.grad(o.sum() + w1.sum() + w2.sum(), list(leaves.values()))
        for got, ref in zip((o, w1, w2, *grads), (*want, *want_grads)):
            torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_curvature_needs_a_bool() -> None:
    with pytest.raises(ValueError, match="curvature"):
        mlp_memory(*make_inputs(5).values(), curvature=1)


def largest_weights(curvature: bool, length: int, segment: int = 10_000) -> list[float]:
    """``max |W|`` after each segment of a stream of unit keys, targets ~ N(0, 1), alpha in (0.9, 1) and
    eta in (0, 10), from initial weights ~ N(0, 1) (``||W1||_F`` about 5: past the point where plain
    proximal W2 steps overshoot)."""
    b, h, d, e = 1, 2, 8, 16
    gen = torch.Generator().manual_seed(0)
    q, v_hat = (torch.randn(b, length, h, d, generator=gen) for _ in range(2))
    k = F.normalize(torch.randn(b, length, h, d, generator=gen), dim=-1)
    alpha = 0.9 + 0.1 * torch.rand(b, length, h, generator=gen)
    eta = 10.0 * torch.rand(b, length, h, generator=gen)
    w1, w2 = torch.randn(h, d, e, generator=gen), torch.randn(h, e, d, generator=gen)
    largest = []
    with torch.no_grad():
        for start in range(0, length, segment):
            piece = [s[:, start : start + segment] for s in (q, k, v_hat, alpha, eta)]
            _, (w1, w2) = mlp_memory(*piece, w1, w2, objective="l2", chunk_size=16, curvature=curvature)
            largest.append(max(w1.abs().max().item(), w2.abs().max().item()))
    return largest


def test_l2_with_curvature_stays_bounded_for_100k_tokens() -> None:
    largest = largest_weights(curvature=True, length=100_000)
    assert all(torch.isfinite(torch.tensor(largest))), largest
    assert max(largest) < 20.0, largest


def test_l2_without_curvature_grows_on_the_same_inputs() -> None:
    plain, curved = largest_weights(curvature=False, length=30_000), largest_weights(curvature=True, length=30_000)
    assert not (max(plain) < 20 * max(curved)), (plain, curved)



# read="running": each token reads the weights after the chunk's updates up to itself


@pytest.mark.parametrize("objective", ["dot", "l2"])
@pytest.mark.parametrize("length", [1, 63, 65, 130])
def test_running_reads_chunk_and_recurrent_match_naive(objective: str, length: int) -> None:
    x = make_inputs(length)
    for chunk_size in (1, 8, 64):
        for curvature in (False, True):
            options = dict(objective=objective, chunk_size=chunk_size, curvature=curvature, read="running")
            want = run_with_grads(x, mode="naive", **options)
            assert_all_close(run_with_grads(x, mode="chunk", **options), want)
            if length == 65:
                assert_all_close(run_with_grads(x, mode="recurrent", **options), want)


@pytest.mark.parametrize(("proximal", "use_dgd"), [(False, True), (True, False)])
def test_running_reads_ablations_match_naive(proximal: bool, use_dgd: bool) -> None:
    x = make_inputs(40)
    options = dict(objective="l2", proximal=proximal, dgd=use_dgd, chunk_size=8, read="running")
    assert_all_close(run_with_grads(x, mode="chunk", **options), run_with_grads(x, mode="naive", **options))


def test_running_reads_are_reads_after_each_tokens_update_and_keep_the_weights() -> None:
    """The final weights do not depend on ``read``; each running read is ``M(q_t)`` at the weights that a run
    over tokens ``0..t`` (the same chunk starts) ends with."""
    x = make_inputs(20)
    options = dict(objective="l2", chunk_size=8, curvature=True)
    o_start, weights_start = mlp_memory(*x.values(), **options)
    o, weights = mlp_memory(*x.values(), read="running", **options)
    torch.testing.assert_close(weights, weights_start, rtol=1e-12, atol=1e-12)
    sequence = [x[n] for n in INPUTS[:5]]
    for t in (0, 5, 7, 8, 13, 19):
        _, (w1, w2) = mlp_memory(*(s[:, : t + 1] for s in sequence), x["W1"], x["W2"], **options)
        q = x["q"][:, t, :, :, None]
        want = (q + w1 @ F.silu(w2 @ q)).squeeze(-1)
        torch.testing.assert_close(o[:, t], want, rtol=1e-10, atol=1e-10)


def test_running_reads_see_earlier_tokens_of_the_chunk() -> None:
    x = make_inputs(16)
    changed = {name: value.clone() for name, value in x.items()}
    changed["v_hat"][:, 2] += 1.0
    for read, sees in (("start", False), ("running", True)):
        o, _ = mlp_memory(*x.values(), objective="l2", chunk_size=16, read=read)
        o_changed, _ = mlp_memory(*changed.values(), objective="l2", chunk_size=16, read=read)
        torch.testing.assert_close(o_changed[:, :2], o[:, :2], rtol=0, atol=0)
        assert (not torch.allclose(o_changed[:, 2:], o[:, 2:])) == sees, read


def test_bad_read_raises_value_error() -> None:
    with pytest.raises(ValueError, match="read must be one of"):
        mlp_memory(*make_inputs(5).values(), read="end")


# read="previous": token t reads M_{t-1}(q_t), the weights after the chunk's tokens before it (NL Eq. 94)


@pytest.mark.parametrize("objective", ["dot", "l2"])
@pytest.mark.parametrize("length", [1, 63, 64, 65, 130])
def test_previous_reads_chunk_and_recurrent_match_naive(objective: str, length: int) -> None:
    x = make_inputs(length)
    for chunk_size in (1, 8, 64):
        for curvature in (False, True):
            options = dict(objective=objective, chunk_size=chunk_size, curvature=curvature, read="previous")
            want = run_with_grads(x, mode="naive", **options)
            assert_all_close(run_with_grads(x, mode="chunk", **options), want)
            if length in (1, 65):
                assert_all_close(run_with_grads(x, mode="recurrent", **options), want)


@pytest.mark.parametrize(("proximal", "use_dgd"), [(False, True), (True, False)])
def test_previous_reads_ablations_match_naive(proximal: bool, use_dgd: bool) -> None:
    x = make_inputs(40)
    options = dict(objective="l2", proximal=proximal, dgd=use_dgd, chunk_size=8, read="previous")
    assert_all_close(run_with_grads(x, mode="chunk", **options), run_with_grads(x, mode="naive", **options))


def test_previous_reads_are_reads_before_each_tokens_update_and_keep_the_weights() -> None:
    """Each previous read is ``M(q_t)`` at the weights a run over tokens ``0..t-1`` ends with (the initial
    weights for ``t = 0``); with one-token chunks it is the chunk-start read; the final weights do not depend
    on ``read``."""
    x = make_inputs(20)
    options = dict(objective="l2", chunk_size=8, curvature=True)
    _, weights_start = mlp_memory(*x.values(), **options)
    o, weights = mlp_memory(*x.values(), read="previous", **options)
    torch.testing.assert_close(weights, weights_start, rtol=1e-12, atol=1e-12)
    sequence = [x[n] for n in INPUTS[:5]]
    for t in (0, 1, 5, 7, 8, 9, 13, 19):
        w1, w2 = x["W1"], x["W2"]
        if t:
            _, (w1, w2) = mlp_memory(*(s[:, :t] for s in sequence), x["W1"], x["W2"], **options)
        q = x["q"][:, t, :, :, None]
        torch.testing.assert_close(o[:, t], (q + w1 @ F.silu(w2 @ q)).squeeze(-1), rtol=1e-10, atol=1e-10)
    one = dict(options, chunk_size=1)
    torch.testing.assert_close(mlp_memory(*x.values(), read="previous", **one)[0],
                               mlp_memory(*x.values(), read="start", **one)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("changed", ["k", "v_hat", "alpha", "eta"])
def test_previous_read_does_not_see_its_own_tokens_update(changed: str) -> None:
    """Changing token t's key, target or gates leaves ``o_t`` (and every earlier read) unchanged with
    ``read="previous"`` and changes ``o_{t+1}``; with ``read="running"`` it already changes ``o_t``."""
    x, t = make_inputs(16), 5
    other = {name: value.clone() for name, value in x.items()}
    other[changed][:, t] = other[changed][:, t] * 0.5 + (0.1 if changed in ("alpha", "eta") else 1.0)
    for mode in ("chunk", "recurrent", "naive"):
        o, _ = mlp_memory(*x.values(), objective="l2", chunk_size=16, read="previous", mode=mode)
        o_other, _ = mlp_memory(*other.values(), objective="l2", chunk_size=16, read="previous", mode=mode)
        torch.testing.assert_close(o_other[:, : t + 1], o[:, : t + 1], rtol=1e-14, atol=1e-14)
        assert not torch.allclose(o_other[:, t + 1], o[:, t + 1]), mode
    o, _ = mlp_memory(*x.values(), objective="l2", chunk_size=16, read="running")
    o_other, _ = mlp_memory(*other.values(), objective="l2", chunk_size=16, read="running")
    assert not torch.allclose(o_other[:, t], o[:, t])


# The sign of NL Eq. 92: the "dot" objective's step is gradient descent on -<M k, v_hat>


@pytest.mark.parametrize("rule", ["gd", "dgd"])
def test_linear_dot_step_is_descent_on_minus_inner_product(rule: str) -> None:
    """A linear memory ``M k`` under the "dot" objective, one token: the step (``hope.ops.dgd`` with values
    ``v_hat``, as the docs derive) is ``M - eta grad`` with ``grad`` of ``-<M k, v_hat>`` by autograd, i.e.
    ``M + eta v_hat k^T`` (Eq. 92 prints ``-``); with DGD's term, ``M (I - eta k k^T) - eta grad`` (NL Eq. 88)."""
    x = make_inputs(1)
    m = torch.randn(B, H, D, D, dtype=torch.float64, requires_grad=True)
    k, v_hat, eta = x["k"][:, 0], x["v_hat"][:, 0], x["eta"][:, 0, :, None, None]
    (grad,) = torch.autograd.grad(-(torch.einsum("bhvk,bhk->bhv", m, k) * v_hat).sum(), m)
    m = m.detach()
    want = m - eta * grad
    if rule == "dgd":
        want = want - eta * (m @ k[..., None]) * k[..., None, :]
    torch.testing.assert_close(-grad, v_hat[..., None] * k[..., None, :], rtol=0, atol=1e-15)
    for mode in ("naive", "chunk", "recurrent"):
        _, got = dgd(x["q"], x["k"], x["v_hat"], torch.ones_like(x["alpha"]), x["eta"], rule=rule,
                     initial_state=m, output_final_state=True, mode=mode)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_deep_dot_step_is_descent_on_minus_inner_product() -> None:
    """The deep op's "dot" step, one token, without retention, DGD term or proximal step: each layer moves by
    ``-eta`` times the autograd gradient of ``-<M(k), v_hat>`` w.r.t. its weights."""
    x = make_inputs(1)
    w1, w2 = (x[name].clone().requires_grad_() for name in ("W1", "W2"))
    k, v_hat = x["k"][:, 0, :, :, None], x["v_hat"][:, 0, :, :, None]
    grads = torch.autograd.grad(-((k + w1 @ F.silu(w2 @ k)) * v_hat).sum(), (w1, w2))
    eta = x["eta"][:, 0, :, None, None]
    for mode in ("naive", "chunk", "recurrent"):
        _, got = mlp_memory(x["q"], x["k"], x["v_hat"], torch.ones_like(x["alpha"]), x["eta"], x["W1"], x["W2"],
                            objective="dot", proximal=False, dgd=False, chunk_size=1, mode=mode)
        for w_end, w, grad in zip(got, (x["W1"], x["W2"]), grads):
            torch.testing.assert_close(w_end, w - eta * grad, rtol=1e-12, atol=1e-12)



def test_options_that_choose_the_memory_are_required() -> None:
    """objective, chunk_size, curvature and read differ between the op's plain form and the models, so the op
    has no default for them (docs/ops_mlp_memory.md, "Defaults")."""
    x = make_inputs(3)
    for missing in PLAIN:
        with pytest.raises(TypeError, match=missing):
            op.mlp_memory(*x.values(), **{k: v for k, v in PLAIN.items() if k != missing})


# the keys as queries (the tensor itself): the chunk form makes one MLP pass over them (Hope's projection memories)


@pytest.mark.parametrize("read", op.READS)
@pytest.mark.parametrize("length", [1, 63, 130])
def test_keys_as_queries_match_naive_outputs_and_gradients(read: str, length: int) -> None:
    x = make_inputs(length)
    for chunk_size in (1, 8, 64):
        for objective in ("dot", "l2"):
            results = []
            for mode in ("naive", "chunk"):
                leaves = {name: value.detach().clone().requires_grad_() for name, value in x.items() if name != "q"}
                o, (w1, w2) = mlp_memory(leaves["k"], *leaves.values(), objective=objective, curvature=True,
                                         chunk_size=chunk_size, read=read, mode=mode)
                gen = torch.Generator().manual_seed(1)
                loss = sum((y * torch.randn(y.shape, generator=gen, dtype=y.dtype)).sum() for y in (o, w1, w2))
                results.append([o, w1, w2, *torch.autograd.grad(loss, list(leaves.values()))])
            for got, want in zip(results[1], results[0], strict=True):
                torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)

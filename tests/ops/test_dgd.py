"""hope.ops.dgd: chunk and recurrent forms against the per-token reference (float64, outputs, final
state and gradients of every input), prefill-then-decode consistency, extreme retention values."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hope.ops.dgd import chunk as chunk_module
from hope.ops.dgd import dgd, dgd_step

B, H, DK, DV = 2, 2, 4, 6


def make_inputs(t: int, initial: bool, dtype=torch.float64, b=B, h=H, dk=DK, dv=DV) -> dict:
    """Random inputs on which the memory stays bounded: unit keys, eta in (0, 1), alpha in (0.5, 1)."""
    x = {
        "q": torch.randn(b, t, h, dk, dtype=dtype),
        "k": F.normalize(torch.randn(b, t, h, dk, dtype=dtype), dim=-1),
        "v": torch.randn(b, t, h, dv, dtype=dtype),
        "alpha": 0.5 + 0.5 * torch.rand(b, t, h, dtype=dtype),
        "eta": torch.rand(b, t, h, dtype=dtype),
    }
    if initial:
        x["initial_state"] = torch.randn(b, h, dv, dk, dtype=dtype)
    return x


def run_with_grads(x: dict, **kwargs) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Outputs, final state and the gradients of a fixed random scalar of both, w.r.t. every input."""
    leaves = {name: value.detach().clone().requires_grad_() for name, value in x.items()}
    o, state = dgd(**leaves, output_final_state=True, **kwargs)
    gen = torch.Generator().manual_seed(1)
    w_o = torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o.dtype)
    w_s = torch.randn(state.shape, generator=gen, dtype=torch.float64).to(state.dtype)
    loss = (o * w_o).sum() + (state * w_s).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return o.detach(), state.detach(), list(grads)


def assert_same(got: tuple, want: tuple, tol: float = 1e-10) -> None:
    o, s, grads = got
    o_ref, s_ref, grads_ref = want
    torch.testing.assert_close(o, o_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(s, s_ref, rtol=tol, atol=tol)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("rule", ["dgd", "gd"])
@pytest.mark.parametrize("initial", [False, True])
@pytest.mark.parametrize("length", [1, 63, 64, 65, 130])
def test_chunk_and_recurrent_match_naive(rule: str, initial: bool, length: int) -> None:
    x = make_inputs(length, initial)
    want = run_with_grads(x, rule=rule, mode="naive")
    assert_same(run_with_grads(x, rule=rule, mode="recurrent"), want)
    for chunk_size in (16, 32, 64):
        assert_same(run_with_grads(x, rule=rule, mode="chunk", chunk_size=chunk_size), want)


@pytest.mark.parametrize(("rule", "chunk_size"), [("dgd", 16), ("dgd", 64), ("gd", 32)])
def test_long_sequence_matches_naive(rule: str, chunk_size: int) -> None:
    x = make_inputs(1000, initial=True, b=1, h=2, dk=8, dv=5)
    want = run_with_grads(x, rule=rule, mode="naive")
    assert_same(run_with_grads(x, rule=rule, chunk_size=chunk_size), want, tol=1e-9)
    with torch.no_grad():
        o, state = dgd(**x, rule=rule, chunk_size=chunk_size, output_final_state=True)
    torch.testing.assert_close(o, want[0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(state, want[1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("rule", ["dgd", "gd"])
def test_checkpointed_segments_match_naive(rule: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunk_module, "SEGMENT_TOKENS", 48)
    x = make_inputs(130, initial=True)
    want = run_with_grads(x, rule=rule, mode="naive")
    for chunk_size in (16, 32, 64):
        assert_same(run_with_grads(x, rule=rule, chunk_size=chunk_size), want)


@pytest.mark.parametrize("rule", ["dgd", "gd"])
@pytest.mark.parametrize(
    "retention",
    ["zero_at_some_tokens", "all_zero", "all_one", "tiny", "mixed_signs"],
)
def test_extreme_retention_matches_naive(rule: str, retention: str) -> None:
    x = make_inputs(70, initial=True)
    alpha = x["alpha"]
    if retention == "zero_at_some_tokens":
        alpha[:, ::5] = 0.0
    elif retention == "all_zero":
        alpha.zero_()
    elif retention == "all_one":
        alpha.fill_(1.0)
    elif retention == "tiny":
        alpha.copy_(10.0 ** (-30 - 200 * torch.rand_like(alpha)))
    else:
        alpha.mul_(torch.randint(0, 2, alpha.shape, dtype=alpha.dtype) * 2 - 1)
    want = run_with_grads(x, rule=rule, mode="naive")
    got = run_with_grads(x, rule=rule, chunk_size=16)
    assert all(torch.isfinite(g).all() for g in got[2])
    assert_same(got, want)


def test_gd_zero_retention_wipes_memory() -> None:
    x = make_inputs(40, initial=True)
    x["alpha"][:, 20] = 0.0
    leaves = {name: value.requires_grad_() for name, value in x.items()}
    o, _ = dgd(**leaves, rule="gd", chunk_size=16)
    grads = torch.autograd.grad(o[:, 20:].sum(), [leaves["v"], leaves["initial_state"]])
    assert grads[0][:, :20].abs().max() == 0
    assert grads[1].abs().max() == 0
    assert grads[0][:, 20:].abs().max() > 0


def test_float32_tiny_retention_stays_finite_and_close() -> None:
    x = make_inputs(200, initial=True, dtype=torch.float32)
    x["alpha"].copy_(10.0 ** (-5 - 30 * torch.rand_like(x["alpha"])))
    x["alpha"][:, 7::9] = 0.0
    x64 = {name: value.double() for name, value in x.items()}
    for rule in ("dgd", "gd"):
        o_ref, s_ref, grads_ref = run_with_grads(x64, rule=rule, mode="naive")
        o, s, grads = run_with_grads(x, rule=rule)
        torch.testing.assert_close(o.double(), o_ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(s.double(), s_ref, rtol=1e-4, atol=1e-4)
        for g, g_ref in zip(grads, grads_ref, strict=True):
            assert torch.isfinite(g).all()
            torch.testing.assert_close(g.double(), g_ref, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("rule", ["dgd", "gd"])
def test_gradcheck_chunk(rule: str) -> None:
    x = make_inputs(5, initial=True, b=1, h=1, dk=2, dv=3)
    x["alpha"][:, 2] = 0.0
    names = list(x)

    def fn(*tensors):
        o, s = dgd(**dict(zip(names, tensors)), rule=rule, chunk_size=2, output_final_state=True)
        return o, s

    inputs = tuple(t.requires_grad_() for t in x.values())
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("rule", ["dgd", "gd"])
def test_prefill_then_decode_equals_one_pass(rule: str) -> None:
    prefill, decode = 70, 6
    x = make_inputs(prefill + decode, initial=True)
    o_full, s_full = dgd(**x, rule=rule, output_final_state=True, chunk_size=32)

    head = {name: value[:, :prefill] for name, value in x.items() if name != "initial_state"}
    o_pre, state = dgd(**head, rule=rule, initial_state=x["initial_state"], output_final_state=True, chunk_size=32)
    outputs = [o_pre]
    for t in range(prefill, prefill + decode - 2):
        step = {name: value[:, t : t + 1] for name, value in x.items() if name != "initial_state"}
        o_t, state = dgd(**step, rule=rule, initial_state=state, output_final_state=True, mode="recurrent")
        outputs.append(o_t)
    t = prefill + decode - 2
    o_t, state = dgd_step(state, *(x[n][:, t] for n in ("q", "k", "v", "alpha", "eta")), rule)
    outputs.append(o_t.unsqueeze(1))
    tail = {name: value[:, t + 1 :] for name, value in x.items() if name != "initial_state"}
    o_t, state = dgd(**tail, rule=rule, initial_state=state, output_final_state=True)
    outputs.append(o_t)

    torch.testing.assert_close(torch.cat(outputs, dim=1), o_full, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state, s_full, rtol=1e-12, atol=1e-12)


def test_decay_products_are_plain_products() -> None:
    alpha = torch.tensor([[0.5, 0.0, 2.0, 1e-200, 3.0]], dtype=torch.float64)
    decays = chunk_module.decay_products(alpha)[0]
    padded = [1.0, *alpha[0].tolist()]
    for i in range(6):
        for j in range(6):
            want = torch.tensor(padded[j + 1 : i + 1], dtype=torch.float64).prod() if i >= j else 0.0
            assert decays[i, j] == want, (i, j)

"""hope.ops.dgd: argument checking, dtypes, and the mapping onto fla's gated delta rule."""

from __future__ import annotations

import importlib.util
import re

import pytest
import torch
import torch.nn.functional as F

from hope.ops.dgd import dgd
from hope.ops.dgd.fla_path import fla_applies, gated_delta_params


def make_inputs(t=9, b=2, h=3, dk=4, dv=5, dtype=torch.float32, device="cpu") -> dict:
    return {
        "q": torch.randn(b, t, h, dk, dtype=dtype, device=device),
        "k": F.normalize(torch.randn(b, t, h, dk, dtype=dtype, device=device), dim=-1),
        "v": torch.randn(b, t, h, dv, dtype=dtype, device=device),
        "alpha": (0.5 + 0.5 * torch.rand(b, t, h, device=device)).to(dtype),
        "eta": torch.rand(b, t, h, device=device).to(dtype),
    }


BAD_ARGUMENTS = {
    "q_not_4d": ("q", lambda x: x["q"][0], "[B, T, H, Dk]"),
    "q_empty": ("q", lambda x: x["q"][:, :0], "T >= 1"),
    "k_shape": ("k", lambda x: x["k"][..., :3], "[B, T, H, Dk] = [2, 9, 3, 4]"),
    "k_int": ("k", lambda x: x["k"].long(), "float32/float64"),
    "v_batch": ("v", lambda x: x["v"][:1], "[B, T, H, Dv] = [2, 9, 3, 5]"),
    "v_not_4d": ("v", lambda x: x["v"][..., 0], "[B, T, H, Dv]"),
    "v_dtype": ("v", lambda x: x["v"].double(), "dtype of q"),
    "alpha_shape": ("alpha", lambda x: x["alpha"][..., None], "[B, T, H] = [2, 9, 3]"),
    "alpha_list": ("alpha", lambda x: [0.9] * 9, "[B, T, H]"),
    "eta_shape": ("eta", lambda x: x["eta"][:, :4], "[B, T, H] = [2, 9, 3]"),
    "eta_device": ("eta", lambda x: x["eta"].to("meta"), "same device as q"),
    "initial_state_transposed": ("initial_state", lambda x: torch.zeros(2, 3, 4, 5), "[B, H, Dv, Dk] = [2, 3, 5, 4]"),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_tensor_raises_value_error_naming_it(case: str) -> None:
    argument, make_bad, expected = BAD_ARGUMENTS[case]
    x = make_inputs()
    x[argument] = make_bad(x)
    with pytest.raises(ValueError, match=rf"^{argument} .*{re.escape(expected)}"):
        dgd(**x)


@pytest.mark.parametrize(
    ("option", "value"), [("rule", "hebbian"), ("mode", "fused"), ("chunk_size", 0), ("chunk_size", 16.0)]
)
def test_bad_option_raises_value_error_naming_it(option, value) -> None:
    with pytest.raises(ValueError, match=rf"^{option} must be"):
        dgd(**make_inputs(), **{option: value})


def test_final_state_only_on_request() -> None:
    x = make_inputs()
    o, state = dgd(**x)
    assert o.shape == (2, 9, 3, 5) and state is None
    _, state = dgd(**x, output_final_state=True)
    assert state.shape == (2, 3, 5, 4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("mode", ["chunk", "recurrent"])
def test_low_precision_inputs_keep_a_float32_state(dtype, mode) -> None:
    x = make_inputs(t=100, dtype=dtype)
    initial = torch.randn(2, 3, 5, 4, dtype=dtype)
    o, state = dgd(**x, initial_state=initial, output_final_state=True, mode=mode, chunk_size=32)
    assert o.dtype == dtype and state.dtype == torch.float32
    o_ref, state_ref = dgd(
        **{n: t.double() for n, t in x.items()}, initial_state=initial.double(), output_final_state=True, mode="naive"
    )
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(o.double(), o_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(state.double(), state_ref, rtol=tol, atol=tol)


def test_float32_gates_with_bfloat16_values_get_gradients() -> None:
    x = make_inputs(t=40, dtype=torch.bfloat16)
    x["alpha"], x["eta"] = x["alpha"].float(), x["eta"].float()
    leaves = {n: t.requires_grad_() for n, t in x.items()}
    initial = torch.zeros(2, 3, 5, 4, requires_grad=True)
    o, state = dgd(**leaves, initial_state=initial, output_final_state=True)
    (o.float().sum() + state.sum()).backward()
    for name, leaf in [*leaves.items(), ("initial_state", initial)]:
        assert leaf.grad is not None and leaf.grad.dtype == leaf.dtype, name
        assert torch.isfinite(leaf.grad.float()).all() and leaf.grad.abs().sum() > 0, name


def fla_style_recurrence(q, k, v, g, beta, scale, initial_state):
    """fla's gated delta rule written from its definition (state ``[B, H, Dk, Dv]``): decay by
    ``exp(g)``, delta-rule write with strength ``beta``, read with ``scale * q``."""
    state = initial_state.clone()
    outputs = []
    for t in range(q.shape[1]):
        state = state * g[:, t, :, None, None].exp()
        error = v[:, t] - torch.einsum("bhkv,bhk->bhv", state, k[:, t])
        state = state + torch.einsum("bhk,bhv->bhkv", k[:, t], beta[:, t, :, None] * error)
        outputs.append(torch.einsum("bhkv,bhk->bhv", state, scale * q[:, t]))
    return torch.stack(outputs, dim=1), state


def test_fla_parameter_mapping_reproduces_dgd() -> None:
    x = make_inputs(t=50, dtype=torch.float64)
    initial = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    o_ref, state_ref = dgd(**x, initial_state=initial, output_final_state=True, mode="naive")
    scaled_v, g, beta = gated_delta_params(x["v"], x["alpha"], x["eta"])
    o, state = fla_style_recurrence(x["q"], x["k"], scaled_v, g, beta, 1.0, initial.transpose(-1, -2))
    torch.testing.assert_close(o, o_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state.transpose(-1, -2), state_ref, rtol=1e-12, atol=1e-12)


def test_fla_path_is_not_taken_where_it_cannot_be_exact() -> None:
    x = make_inputs(dtype=torch.bfloat16)
    assert not fla_applies(x["q"], x["alpha"], "dgd")
    assert not fla_applies(x["q"], x["alpha"], "gd")


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("fla") is None, reason="needs CUDA and fla"
)
def test_fla_path_matches_naive_on_gpu() -> None:
    x = make_inputs(t=300, b=2, h=4, dk=64, dv=32, dtype=torch.bfloat16, device="cuda")
    initial = torch.randn(2, 4, 32, 64, device="cuda")
    assert fla_applies(x["q"], x["alpha"], "dgd")
    leaves = {n: t.requires_grad_() for n, t in x.items()}
    initial.requires_grad_()
    o, state = dgd(**leaves, initial_state=initial, output_final_state=True)
    (o.float().square().sum() + state.square().sum()).backward()

    ref = {n: t.detach().double().cpu().requires_grad_() for n, t in x.items()}
    initial_ref = initial.detach().double().cpu().requires_grad_()
    o_ref, state_ref = dgd(**ref, initial_state=initial_ref, output_final_state=True, mode="naive")
    (o_ref.square().sum() + state_ref.square().sum()).backward()

    def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
        return ((got.double().cpu() - want).norm() / want.norm()).item()

    assert relative_error(o, o_ref.detach()) < 5e-2
    assert relative_error(state, state_ref.detach()) < 5e-2
    for name in x:
        assert relative_error(leaves[name].grad, ref[name].grad) < 5e-2, name
    assert relative_error(initial.grad, initial_ref.grad) < 5e-2

"""Argument checks shared by the three forms of ``hope.ops.dgd``.

Every problem is reported as one ``ValueError`` line that names the argument and the expected shape.
"""

from __future__ import annotations

import torch

RULES = ("dgd", "gd")
MODES = ("chunk", "naive", "recurrent")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_tensor(name: str, x: object, shape: tuple[int, ...], expected: str, device: torch.device) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {expected}, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float16/bfloat16/float32/float64 (shape {expected}), got {x.dtype}")
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} must have shape {expected} = {list(shape)}, got {list(x.shape)}")
    if x.device != device:
        raise ValueError(f"{name} must be on the same device as q ({device}), got {x.device}")


def check_dgd_args(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    alpha: torch.Tensor,
    eta: torch.Tensor,
    rule: str,
    initial_state: torch.Tensor | None,
    chunk_size: int,
    mode: str,
) -> None:
    """Validate the arguments of :func:`hope.ops.dgd.dgd`; raise ``ValueError`` on the first problem."""
    if not isinstance(q, torch.Tensor) or q.dim() != 4:
        got = list(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__
        raise ValueError(f"q must be a 4-d tensor of shape [B, T, H, Dk], got {got}")
    b, t, h, dk = q.shape
    if t < 1 or dk < 1:
        raise ValueError(f"q must have shape [B, T, H, Dk] with T >= 1 and Dk >= 1, got {list(q.shape)}")
    _check_tensor("q", q, (b, t, h, dk), "[B, T, H, Dk]", q.device)
    _check_tensor("k", k, (b, t, h, dk), "[B, T, H, Dk]", q.device)
    if not isinstance(v, torch.Tensor) or v.dim() != 4:
        got = list(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
        raise ValueError(f"v must be a 4-d tensor of shape [B, T, H, Dv] = [{b}, {t}, {h}, Dv], got {got}")
    dv = v.shape[-1]
    _check_tensor("v", v, (b, t, h, dv), "[B, T, H, Dv]", q.device)
    for name, x in (("k", k), ("v", v)):
        if x.dtype != q.dtype:
            raise ValueError(f"{name} must have the dtype of q ({q.dtype}), got {x.dtype}")
    _check_tensor("alpha", alpha, (b, t, h), "[B, T, H]", q.device)
    _check_tensor("eta", eta, (b, t, h), "[B, T, H]", q.device)
    if initial_state is not None:
        _check_tensor("initial_state", initial_state, (b, h, dv, dk), "[B, H, Dv, Dk]", q.device)
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")


def state_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """The dtype the memory state is kept in: float64 if any input is float64, else float32."""
    return torch.float64 if any(x is not None and x.dtype == torch.float64 for x in tensors) else torch.float32

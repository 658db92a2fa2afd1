"""Argument checks shared by ``hope.ops.mlp_memory`` (the DGD memory and the Titans rule).

Every problem is reported as one ``ValueError`` line that names the argument and the expected shape.
"""

from __future__ import annotations

import torch

from hope.ops.mlp_memory.residual_mlp import OBJECTIVES

MODES = ("chunk", "naive", "recurrent")
READS = ("start", "previous", "running")
"""Read modes of the deep DGD memory (``mlp_memory``'s ``read``): token ``t`` of a chunk reads the chunk-start
weights, the weights after the chunk's tokens before ``t`` (``M_{t-1}``, NL Eq. 94), or after ``t``'s own update."""
TITANS_READS = ("start", "running")
"""Read modes of the Titans rule (``titans_memory``'s ``read``)."""
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(name: str, x: object, shapes: list[tuple[int, ...]], expected: str, device: torch.device) -> None:
    """Raise ``ValueError`` unless ``x`` is a floating tensor on ``device`` with one of ``shapes``."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {expected}, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float16/bfloat16/float32/float64 (shape {expected}), got {x.dtype}")
    if tuple(x.shape) not in shapes:
        want = " or ".join(str(list(s)) for s in shapes)
        raise ValueError(f"{name} must have shape {expected} = {want}, got {list(x.shape)}")
    if x.device != device:
        raise ValueError(f"{name} must be on the same device as q ({device}), got {x.device}")


def check_sequence(q: object, names: tuple[str, ...], tensors: tuple[object, ...]) -> tuple[int, int, int, int]:
    """Check ``q`` and the other ``[B, T, H, D]`` / ``[B, T, H]`` inputs; return ``(B, T, H, D)``.

    ``names`` / ``tensors`` list the other inputs: those named in ``("k", "v", "v_hat")`` must match
    ``q``, the others are per-token gates ``[B, T, H]``.
    """
    if not isinstance(q, torch.Tensor) or q.dim() != 4:
        got = list(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__
        raise ValueError(f"q must be a 4-d tensor of shape [B, T, H, D], got {got}")
    b, t, h, d = q.shape
    if t < 1 or d < 1:
        raise ValueError(f"q must have shape [B, T, H, D] with T >= 1 and D >= 1, got {list(q.shape)}")
    check_tensor("q", q, [(b, t, h, d)], "[B, T, H, D]", q.device)
    for name, x in zip(names, tensors, strict=True):
        if name in ("k", "v", "v_hat"):
            check_tensor(name, x, [(b, t, h, d)], "[B, T, H, D]", q.device)
            if x.dtype != q.dtype:
                raise ValueError(f"{name} must have the dtype of q ({q.dtype}), got {x.dtype}")
        else:
            check_tensor(name, x, [(b, t, h)], "[B, T, H]", q.device)
    return b, t, h, d


def check_weights(
    w1: object, w2: object, b: int, h: int, d: int, device: torch.device, names: tuple[str, str] = ("W1", "W2")
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check ``W2: [B, H, E, D]`` (or ``[H, E, D]``) and ``W1: [B, H, D, E]`` (or ``[H, D, E]``);
    return both broadcast to ``[B, H, ...]``."""
    name1, name2 = names
    if not isinstance(w2, torch.Tensor) or w2.dim() not in (3, 4) or w2.shape[-2] < 1:
        got = list(w2.shape) if isinstance(w2, torch.Tensor) else type(w2).__name__
        raise ValueError(f"{name2} must have shape [B, H, E, D] or [H, E, D] with E >= 1, got {got}")
    e = w2.shape[-2]
    check_tensor(name2, w2, [(b, h, e, d), (h, e, d)], "[B, H, E, D] or [H, E, D]", device)
    check_tensor(name1, w1, [(b, h, d, e), (h, d, e)], "[B, H, D, E] or [H, D, E]", device)
    return w1.expand(b, h, d, e), w2.expand(b, h, e, d)


def check_options(chunk_size: object, mode: object, objective: object | None = None, **flags: object) -> None:
    """Check ``chunk_size`` (positive int), ``mode``, ``objective`` and boolean ``flags``."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if objective is not None and objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be a bool, got {value!r}")


def check_read(read: object, reads: tuple[str, ...]) -> None:
    """Check ``read``: one of ``reads`` (:data:`READS` or :data:`TITANS_READS`)."""
    if read not in reads:
        raise ValueError(f"read must be one of {reads}, got {read!r}")


def check_max_grad_norm(max_grad_norm: object) -> None:
    """Check ``max_grad_norm`` of the Titans rule: ``None`` or a positive number."""
    if max_grad_norm is not None and (isinstance(max_grad_norm, bool) or not isinstance(max_grad_norm, (int, float))
                                      or not max_grad_norm > 0):
        raise ValueError(f"max_grad_norm must be None or a positive number, got {max_grad_norm!r}")


def state_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """The dtype the memory is kept in: float64 if any input is float64, else float32."""
    return torch.float64 if any(x is not None and x.dtype == torch.float64 for x in tensors) else torch.float32

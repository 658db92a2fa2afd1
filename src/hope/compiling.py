"""Optional ``torch.compile`` of the small per-chunk functions of Hope's mixer (self-modifying Titans).

Hope's mixer reads a sequence chunk by chunk (NL Eqs. 90-91), and each chunk is a few dozen tensor ops on
``[B, H, C, D]`` blocks; at batch 1 they are a few KiB each, and in eager mode their cost is dispatch and
autograd bookkeeping, not arithmetic (a Hope training step at 2,048 tokens makes about a million aten calls).
``torch.compile`` fuses each such function, forward and backward, into a handful of kernels; the loop over
chunks stays in Python. The speed-ups measured on CPU are in docs/training.md ("Compiling Hope's mixer").

Off by default: the first call of each function compiles it (minutes on a 2-core CPU the first time, seconds
once Inductor's cache under ``TORCHINDUCTOR_CACHE_DIR`` is warm), which a short run or a test does not repay.
Turn it on with ``set_compiling(True)``, the ``with compiling():`` context, or ``--compile`` on the command
line. Second-order CMS steps turn it off for their forward (AOTAutograd has no double backward).

A leaf module like ``hope.errors`` (it imports nothing of ``hope``), so ops, layers and models may all use it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import TypeVar

import torch
import torch._dynamo.config
import torch._functorch.config

F = TypeVar("F", bound=Callable)
_enabled = False
RECOMPILE_LIMIT = 64


def compiling_enabled() -> bool:
    return _enabled


def set_compiling(enabled: bool) -> None:
    """Turn compilation of the :func:`compilable` functions on or off for this process."""
    global _enabled
    _enabled = bool(enabled)


@contextlib.contextmanager
def compiling(enabled: bool = True) -> Iterator[None]:
    """Compile (or, with ``enabled=False``, do not compile) the :func:`compilable` functions inside the block."""
    previous = _enabled
    set_compiling(enabled)
    try:
        yield
    finally:
        set_compiling(previous)


def compilable(fn: F | None = None, *, when: Callable[..., bool] | None = None):
    """Mark a function of tensors (a method is fine: instances of one class share the compiled code) as one that
    ``torch.compile`` fuses when compiling is on and ``when(*args, **kwargs)`` (if given) holds; otherwise, and
    inside another compiled region, it runs eagerly. ``when`` keeps the compiled calls to the regular shapes
    (whole chunks), so that ragged pieces and one-token decoding steps do not each compile a graph of their own.

    Compiled lazily, on the first compiled call, with static shapes. That call also sets, for the process, two
    settings of torch: AOTAutograd's donated buffers off (``torch._functorch.config.donated_buffer``; it is read
    when a backward is compiled, which can happen outside any call of ours), because the CMS steps take several
    backwards through one graph (``retain_graph=True``), which a backward that frees its saved buffers forbids;
    and Dynamo's recompile limit to at least ``RECOMPILE_LIMIT`` (one graph per batch size and autograd mode)."""
    if fn is None:
        return functools.partial(compilable, when=when)
    compiled: Callable | None = None

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        nonlocal compiled
        if not _enabled or torch.compiler.is_compiling() or (when is not None and not when(*args, **kwargs)):
            return fn(*args, **kwargs)
        if compiled is None:
            torch._functorch.config.donated_buffer = False
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
            compiled = torch.compile(fn, dynamic=False)
        return compiled(*args, **kwargs)

    return wrapper

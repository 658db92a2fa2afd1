"""Titans (LMM): a deep neural memory trained in context by the Titans rule (Behrouz et al. 2025, Sec. 3), the
baseline that Hope's self-modifying Titans grows out of.

Per head, the memory ``M(x) = x + W1 silu(W2 x)`` (its initial state meta-learned) reads ``o_t = M(q_t)`` (after
token ``t``'s update with ``memory_read="running"``, at the chunk-start weights with ``"start"``) and learns
``k_t -> v_t`` by gradient descent with momentum and decay, each chunk's gradients at its start weights::

    S_t = beta_t S_{t-1} - theta_t grad 0.5 ||M(k_t) - v_t||^2,        M_t = (1 - forget_t) M_{t-1} + S_t

(:func:`hope.ops.mlp_memory.titans_memory`). ``q, k, v`` are static projections, each through a causal depthwise
convolution of width 4 and SiLU, ``q, k`` L2-normalised (Titans Sec. 4.4); ``theta`` (step), ``beta`` (momentum)
and ``forget`` are data-dependent per-head gates in (0, 1). ``max_grad_norm`` clips each token's gradient of each
memory layer (see :mod:`hope.ops.mlp_memory.titans`). Output: per-head norm, gate, projection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from hope.errors import HopeError
from hope.layers.conv import ShortConv
from hope.layers.gating import GatedOutput, l2_normalize, spread_logits
from hope.layers.mlp import SwiGLU
from hope.models.config import ModelConfig, check_memory_fields, check_memory_read, register
from hope.ops.mlp_memory import TITANS_READS, TitansMemoryState, titans_memory_prefill

WEIGHTS = ("w1", "w2")


@register("titans")
@dataclass
class TitansConfig(ModelConfig):
    """Titans (LMM): a deep neural memory trained in context by GD with momentum and decay (Titans Sec. 3) as
    mixer, a static SwiGLU as channel memory."""

    SIZE_OVERRIDES: ClassVar[dict[str, dict[str, int]]] = {
        "tiny": {"mlp_hidden": 291}, "small": {"mlp_hidden": 801},
        "760m": {"mlp_hidden": 3397}, "1.3b": {"mlp_hidden": 4631},
    }
    """Narrower SwiGLUs that pay for the memory and the gate projection: parameters within 1% of Transformer++."""
    memory_expansion: int = 2
    """Hidden width of the memory MLP per head, in multiples of the head dimension."""
    chunk_size: int = 16
    """Tokens per chunk: inside a chunk every gradient uses the chunk-start memory (part of the model)."""
    conv_width: int = 4
    """Width of the causal depthwise convolution after the q, k, v projections."""
    step_init: float = 0.01
    """Initial inner learning rate ``theta`` (sigmoid of its gate bias); with momentum 0.9 the effective step is
    ten times larger. Why 0.01: docs/results.md, "Why the defaults"."""
    momentum_init: float = 0.9
    """Initial momentum gate ``beta``."""
    retention_init: tuple[float, float] = (0.9, 0.999)
    """Range over the heads of the initial ``1 - forget``."""
    max_grad_norm: float | None = 1.0
    """Clip each token's gradient of each memory layer to this Frobenius norm (``None``: the rule as printed).
    Why clip: docs/results.md, "Why the defaults"."""
    memory_read: str = "running"
    """How a token reads the memory inside its chunk: ``running``, after its own update (the Titans paper's
    ``y_t = M*_t(q_t)``; ``hope.ops.mlp_memory.titans_memory``'s ``read``); ``start``, at the chunk-start weights,
    so the memory does not see the earlier tokens of its own chunk."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_memory_fields(self, ("memory_expansion", "chunk_size", "conv_width"), ("step_init", "momentum_init"))
        check_memory_read(self, TITANS_READS)
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise HopeError(f"max_grad_norm must be None or positive, got {self.max_grad_norm}")

    def build_mixer(self, layer: int) -> nn.Module:
        return Titans(self)

    def build_channel(self, layer: int) -> nn.Module:
        return SwiGLU(self.d_model, self.mlp_hidden)


class TitansLayerState(NamedTuple):
    """The memory's streaming state (:class:`hope.ops.mlp_memory.TitansMemoryState`: running weights
    ``[B, H, ...]``, momentum, chunk-start weights, position in the chunk) and the convolution tail
    ``[B, W - 1, 3 D]``."""

    memory: TitansMemoryState
    conv: torch.Tensor

    def to_flat(self) -> dict[str, torch.Tensor]:
        """The tensors under their names in a state file (docs/paper_notes.md, "State"): ``conv``, ``w1, w2``,
        ``momentum.w1, momentum.w2``, ``start.w1, start.w2`` (at a chunk boundary, the running weights)."""
        memory = self.memory
        flat = {"conv": self.conv}
        for i, name in enumerate(WEIGHTS):
            flat[name], flat[f"momentum.{name}"] = memory.weights[i], memory.momentum[i]
            flat[f"start.{name}"] = memory.chunk_start[i] if memory.position else memory.weights[i]
        return flat

    @classmethod
    def from_flat(cls, flat: dict[str, torch.Tensor], chunk_position: int) -> TitansLayerState:
        """The state saved by :meth:`to_flat`, ``chunk_position`` tokens into its chunk."""
        memory = TitansMemoryState(tuple(flat[name] for name in WEIGHTS),
                                   tuple(flat[f"momentum.{name}"] for name in WEIGHTS),
                                   tuple(flat[f"start.{name}"] for name in WEIGHTS), chunk_position)
        return cls(memory, flat["conv"])


class Titans(nn.Module):
    """``module(x [B, T, D], state: TitansLayerState | None, position) -> (y, state)``.

    The memory streams through :func:`hope.ops.mlp_memory.titans_memory_prefill` from the state it returned last
    (a missing state: the meta-learned initial weights, zero momentum). Chunks are counted from the start of
    the sequence, so a sequence without state must start at a chunk boundary (``position`` a multiple of
    ``chunk_size``).
    """

    def __init__(self, config: TitansConfig) -> None:
        super().__init__()
        d_model, n_heads = config.d_model, config.n_heads
        self.n_heads, self.head_dim, self.chunk_size = n_heads, config.head_dim, config.chunk_size
        self.step_init, self.momentum_init = config.step_init, config.momentum_init
        self.retention_init = config.retention_init
        self.max_grad_norm, self.memory_read = config.max_grad_norm, config.memory_read
        hidden = config.memory_expansion * self.head_dim
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.conv = ShortConv(3 * d_model, config.conv_width)
        self.gates = nn.Linear(d_model, 3 * n_heads)
        self.w1 = nn.Parameter(torch.empty(n_heads, self.head_dim, hidden))
        self.w2 = nn.Parameter(torch.empty(n_heads, hidden, self.head_dim))
        self.output = GatedOutput(d_model, n_heads, config.norm_eps)

    def init_weights(self) -> None:
        """Memory: ``W2 ~ N(0, 1/Dh)``, ``W1 ~ N(0, 0.02^2)`` (close to the identity of its residual path). Gate
        biases: ``theta = step_init``, ``beta = momentum_init``, ``1 - forget`` spread over ``retention_init``."""
        h = self.n_heads
        with torch.no_grad():
            self.w2.normal_(std=self.head_dim ** -0.5)
            self.w1.normal_(std=0.02)
            self.gates.bias[:h].fill_(math.log(self.step_init / (1 - self.step_init)))
            self.gates.bias[h:2 * h].fill_(math.log(self.momentum_init / (1 - self.momentum_init)))
            self.gates.bias[2 * h:].copy_(-spread_logits(h, *self.retention_init))

    def forward(self, x: torch.Tensor, state: TitansLayerState | None = None,
                position: int = 0) -> tuple[torch.Tensor, TitansLayerState]:
        if x.ndim != 3 or x.shape[-1] != self.n_heads * self.head_dim:
            raise ValueError(f"x must be [batch, time, {self.n_heads * self.head_dim}], got {list(x.shape)}")
        b, t, _ = x.shape
        if state is None and position % self.chunk_size:
            raise ValueError(f"a sequence without state starts a chunk: position must be a multiple of "
                             f"chunk_size={self.chunk_size}, got {position}")
        qkv, conv_tail = self.conv(self.qkv(x), None if state is None else state.conv)
        q, k, v = qkv.view(b, t, 3, self.n_heads, self.head_dim).unbind(2)
        q, k = l2_normalize(q), l2_normalize(k)
        theta, beta, forget = torch.sigmoid(self.gates(x)).split(self.n_heads, dim=-1)
        memory = self.initial_state(b, x).memory if state is None else state.memory
        reads, memory = titans_memory_prefill(q, k, v, theta, beta, forget, memory, chunk_size=self.chunk_size,
                                              max_grad_norm=self.max_grad_norm, read=self.memory_read)
        return self.output(reads, x), TitansLayerState(memory, conv_tail)

    def initial_state(self, batch: int, like: torch.Tensor) -> TitansLayerState:
        """The state of a fresh sequence (at a chunk boundary): the meta-learned initial weights, zero momentum,
        zero convolution tail."""
        memory = TitansMemoryState.start(self.w1.expand(batch, *self.w1.shape), self.w2.expand(batch, *self.w2.shape))
        return TitansLayerState(memory, like.new_zeros(batch, self.conv.width - 1, self.conv.channels))

    def state_from_flat(self, flat: dict[str, torch.Tensor], position: int) -> TitansLayerState:
        """The state saved by :meth:`TitansLayerState.to_flat` after ``position`` tokens."""
        return TitansLayerState.from_flat(flat, position % self.chunk_size)

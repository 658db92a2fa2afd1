"""The memories of self-modifying Titans (NL Eqs. 88-89): per-head deep (residual MLP) or linear memories,
stacked in banks that fold a chunk into all of them at once by DGD."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from hope.ops.dgd import dgd as linear_dgd
from hope.ops.mlp_memory import mlp_memory
from hope.ops.mlp_memory.residual_mlp import residual_mlp

if TYPE_CHECKING:
    from hope.models.hope.config import HopeConfig


def deep_read(w1: torch.Tensor, w2: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``M(x) = x + W1 silu(W2 x)`` per head (NL Eq. 89). ``x: [B, T, H, D]``; ``w2: [(B,) H, E, D]``,
    ``w1: [(B,) H, D, E]`` (shared or per sequence)."""
    return residual_mlp(x.transpose(1, 2), w1, w2).transpose(1, 2)


def linear_read(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``M(x) = W x`` per head; ``w: [(B,) H, D, D]`` in the ``[Dv, Dk]`` layout of :mod:`hope.ops.dgd`."""
    batch = "b" if w.ndim == 4 else ""
    return torch.einsum(f"bthk,{batch}hvk->bthv", x, w)


class MemoryBank(nn.Module):
    """``n`` per-head memories, stacked on the head axis (``[.., n * H, ..]``), with meta-learned initial
    states (NL Sec. 8.1) and one DGD fold for all of them (NL Eq. 88). ``names`` label the memories; ``read``
    is how the fold's reads see the chunk (``hope.ops.mlp_memory``'s ``read``)."""

    def __init__(self, config: HopeConfig, names: tuple[str, ...], read: str) -> None:
        super().__init__()
        self.names, self.kind, self.head_dim, self.read_mode = names, config.memory, config.head_dim, read
        self.objective, self.proximal, self.dgd = config.objective, config.proximal, config.dgd
        self.curvature = config.curvature
        self.input_std = config.memory_input_std or config.head_dim ** -0.5
        heads, head_dim = len(names) * config.n_heads, config.head_dim
        hidden = config.memory_expansion * head_dim
        if self.kind == "deep":
            self.w1 = nn.Parameter(torch.empty(heads, head_dim, hidden))
            self.w2 = nn.Parameter(torch.empty(heads, hidden, head_dim))
        else:
            self.w = nn.Parameter(torch.empty(heads, head_dim, head_dim))
        self.init_weights()

    @property
    def keys(self) -> tuple[str, ...]:
        return ("w1", "w2") if self.kind == "deep" else ("w",)

    def init_weights(self) -> None:
        """Deep: ``W2 ~ N(0, memory_input_std^2)`` (default ``1/D``: hidden pre-activations of about ``1/sqrt(D)``
        for unit-norm inputs), ``W1 ~ N(0, 0.02^2)`` (so the memory starts close to the identity of its residual
        path). Linear: the identity."""
        with torch.no_grad():
            if self.kind == "deep":
                self.w2.normal_(std=self.input_std)
                self.w1.normal_(std=0.02)
            else:
                self.w.copy_(torch.eye(self.head_dim).expand_as(self.w))

    def initial(self, batch: int) -> dict[str, torch.Tensor]:
        """The initial states, one view per sequence: ``{name: [B, n * H, ...]}``."""
        return {key: getattr(self, key).expand(batch, *getattr(self, key).shape) for key in self.keys}

    def shared(self) -> dict[str, torch.Tensor]:
        """The initial states without a batch axis (for reads that never learn)."""
        return {key: getattr(self, key) for key in self.keys}

    def read(self, weights: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Every memory of the bank at ``x: [B, T, n * H, D]``, computed in the memories' dtype (the ops keep a
        memory in float32 under bfloat16 inputs) and returned in ``x``'s."""
        if self.kind == "deep":
            return deep_read(weights["w1"], weights["w2"], x.to(weights["w1"].dtype)).to(x.dtype)
        return linear_read(weights["w"], x.to(weights["w"].dtype)).to(x.dtype)

    def fold(self, weights: dict[str, torch.Tensor], keys: torch.Tensor, targets: torch.Tensor,
             alpha: torch.Tensor, eta: torch.Tensor,
             queries: torch.Tensor | None = None) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Fold one chunk into the memories by DGD with retention, every gradient at ``weights`` (NL Eq. 91).

        ``keys, targets: [B, C, n * H, D]``, ``alpha, eta: [B, C, n * H]``. Returns the reads of ``queries``
        (at ``weights``, or at the weights before (``read="previous"``) or after (``"running"``) each token's
        update) when the op computes them on the way (else ``None``) and the new weights."""
        chunk = keys.shape[1]
        if self.kind == "deep":
            reads, (w1, w2) = mlp_memory(keys if queries is None else queries, keys, targets, alpha, eta,
                                         weights["w1"], weights["w2"], objective=self.objective,
                                         proximal=self.proximal, dgd=self.dgd, chunk_size=chunk, mode="chunk",
                                         curvature=self.curvature, read=self.read_mode)
            return (None if queries is None else reads), {"w1": w1, "w2": w2}
        values = targets if self.objective == "dot" else targets - linear_read(weights["w"], keys)
        if self.proximal:
            gain = 1.0 if self.curvature and self.objective == "l2" else 0.0
            eta = eta / (1 + eta * (1 + gain) * keys.square().sum(-1))
        previous = queries is not None and self.read_mode == "previous"
        if previous:  # the op reads S_t q at position t: move each query one token earlier to read S_{t-1} q_t
            first = linear_read(weights["w"], queries[:, :1])
            queries = torch.cat([queries[:, 1:], torch.zeros_like(queries[:, :1])], dim=1)
        reads, w = linear_dgd(keys if queries is None else queries, keys, values, alpha, eta,
                              rule="dgd" if self.dgd else "gd", initial_state=weights["w"], output_final_state=True,
                              chunk_size=chunk)
        if previous:
            return torch.cat([first, reads[:, :-1]], dim=1), {"w": w}
        return (reads if queries is not None and self.read_mode == "running" else None), {"w": w}

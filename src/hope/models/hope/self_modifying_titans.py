"""Self-modifying Titans, the mixer of Hope (NL Sec. 8.1-8.2, Eqs. 83-97).

Every projection but the query is a memory that keeps learning in context (NL Eqs. 83-85)::

    k_t = M_k(x_t),  v_t = M_v(x_t),  eta_t = g(M_eta(x_t)),  alpha_t = g(M_alpha(x_t)),  q_t = x_t W_q
    o_t = M_mem(q_t)
    v_hat_{box,t} = M_box(v_t)                                   (self-generated targets, NL Eq. 84)
    M_box <- M_box (alpha_t I - eta_t k_t k_t^T) - eta_t grad L(M_box; k_t, v_hat_{box,t})   (DGD, NL Eq. 88)

for ``box`` in ``{k, v, eta, alpha, mem}``. Each memory is per head: a 2-layer residual MLP
``M(x) = x + W1 silu(W2 x)`` (NL Eq. 89) or, with ``memory="linear"``, a matrix ``M(x) = W x``; its initial
state is an ordinary parameter, meta-learned through the unrolled in-context updates (full backpropagation,
as in Titans and TTT). ``k``, ``q`` and ``v`` are L2-normalised (``v`` too, unlike the paper:
the targets ``v_hat = M(v)`` feed a memory's own output back into its update, so a value norm above one
multiplies the memory's gain at every chunk; measured at initialisation, unnormalised values drove the weights
to overflow within 200-400 tokens of random text); ``k, v, q`` pass through a causal
depthwise convolution of width 4 and SiLU (Titans Sec. 4.4, after the reads); ``eta, alpha`` are per-head
scalars read out of ``M_eta`` / ``M_alpha`` by a learned vector and a sigmoid. The output is
normalised per head, gated and projected.

Chunks (NL Eqs. 90-91). ``M_mem`` updates in chunks of ``memory_chunk_size`` tokens, the other
memories in chunks of ``chunk_size``. Inside a chunk every read, target and gradient is computed with the
memory's state at the end of the *previous* chunk, then the chunk is folded into the state by DGD token after
token (:func:`hope.ops.mlp_memory.mlp_memory`, or :func:`hope.ops.dgd.dgd` for linear memories). The keys of a
chunk are produced by ``M_k`` itself, so the chunks are visited in order (a loop over chunks, not tokens).
``memory_read`` says which state of ``M_mem`` token ``t`` reads: the chunk start (``start``, NL Eq. 90), the state
after the chunk's tokens before ``t`` (``previous``: ``o_t = M_{mem,t-1}(q_t)``, NL Eq. 94) or after ``t``'s own
update too (``running``); the targets and gradients always come from the chunk start.

Momentum (dropped by the "w/o momentum" ablation of NL Table 6; the paper leaves its form open): each chunk's update ``Delta_c = M_fold - M_start``
enters a Titans-style momentum ``S_c = beta_c S_{c-1} + Delta_c``, ``M_c = M_{c-1} + S_c``, with ``beta_c`` the
mean over the chunk of a gate read out of ``M_eta``. With ``beta = 0`` this is plain DGD; with one-token chunks
it is per-token momentum.

Streaming. The state holds each group's chunk-start weights (and momentum) plus the keys, values and gates of
the tokens read since that chunk started; a chunk is folded when its last token arrives. So prefill + decode
gives the outputs of one full forward at any cut, and decoding keeps at most one chunk of tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from hope.compiling import compilable
from hope.layers.conv import ShortConv
from hope.layers.gating import GatedOutput, l2_normalize, spread_logits
from hope.models.hope.memory_bank import MemoryBank

if TYPE_CHECKING:
    from hope.models.hope.config import HopeConfig

BUFFERED = ("k", "v", "alpha", "eta", "beta")
"""Per-token quantities a partial chunk keeps until it is folded (``v`` regenerates the targets; ``beta`` only
with momentum)."""


class SelfModifyingTitans(nn.Module):
    """``module(x [B, T, D], state, position) -> (y, state)`` (see the module docstring).

    State (``dict[str, Tensor]``): ``conv`` (the convolution tail); for each group ``g`` in ``proj`` (the
    projection memories) and ``mem``: ``g.w1, g.w2`` (or ``g.w``) the weights at the start of the current
    chunk, ``g.momentum.*`` the momentum, and ``g.k, g.v, g.alpha, g.eta, g.beta`` the tokens of the chunk read
    so far. With ``test_time_learning=False`` the memories never change and the state is only ``conv``.
    Chunks are counted from the start of the sequence; the pending tokens say where a call starts in them, so
    ``position`` is not needed.
    """

    def __init__(self, config: HopeConfig) -> None:
        super().__init__()
        d_model, n_heads = config.d_model, config.n_heads
        self.n_heads, self.head_dim = n_heads, config.head_dim
        self.chunk_sizes = {"proj": config.chunk_size, "mem": config.memory_chunk_size}
        self.momentum, self.retention = config.momentum, config.retention
        self.test_time_learning = config.test_time_learning
        self.retention_init, self.step_init = config.retention_init, config.step_init
        self.momentum_init = config.momentum_init
        adaptive = {"k": config.adaptive_k, "v": config.adaptive_v, "q": config.adaptive_q, "eta": True,
                    "alpha": config.retention}
        self.static_names = tuple(name for name in ("q", "k", "v") if not adaptive[name])
        self.static = nn.Linear(d_model, len(self.static_names) * d_model, bias=False) if self.static_names else None
        self.banks = nn.ModuleDict({
            "proj": MemoryBank(config, tuple(name for name, on in adaptive.items() if on), read="start"),
            "mem": MemoryBank(config, ("mem",), read=config.memory_read),
        })
        self.gate_names = ("eta",) + ("alpha",) * self.retention + ("beta",) * self.momentum
        self.buffered = BUFFERED if self.momentum else BUFFERED[:-1]
        self.readout = nn.Parameter(torch.empty(len(self.gate_names), n_heads, self.head_dim))
        self.readout_bias = nn.Parameter(torch.empty(len(self.gate_names), n_heads))
        self.conv = ShortConv(3 * d_model, config.conv_width)
        self.output = GatedOutput(d_model, n_heads, config.norm_eps)
        self.init_weights()

    def init_weights(self) -> None:
        """Gate read-outs ``N(0, 0.02^2)``; biases so that ``eta = step_init``, ``beta = momentum_init`` and the
        retention ``alpha`` is spread over ``retention_init`` across heads."""
        initial = {"eta": torch.logit(torch.tensor(self.step_init)).expand(self.n_heads),
                   "alpha": spread_logits(self.n_heads, *self.retention_init),
                   "beta": torch.logit(torch.tensor(self.momentum_init)).expand(self.n_heads)}
        with torch.no_grad():
            self.readout.normal_(std=0.02)
            self.readout_bias.copy_(torch.stack([initial[name] for name in self.gate_names]))

    def initial_state(self, batch: int, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """The state of a fresh sequence: meta-learned initial weights, zero momentum, no pending tokens."""
        state = {"conv": like.new_zeros(batch, self.conv.width - 1, self.conv.channels)}
        for group, bank in self.banks.items():
            for key, weight in bank.initial(batch).items():
                state[f"{group}.{key}"] = weight
                if self.momentum:
                    state[f"{group}.momentum.{key}"] = torch.zeros_like(weight)
            for name in self.buffered:
                shape = (batch, 0, self.n_heads) + ((self.head_dim,) if name in ("k", "v") else ())
                state[f"{group}.{name}"] = like.new_zeros(shape)
        return state

    def forward(self, x: torch.Tensor, state: dict | None = None, position: int = 0) -> tuple[torch.Tensor, dict]:
        if x.ndim != 3 or x.shape[-1] != self.n_heads * self.head_dim:
            raise ValueError(f"x must be [batch, time, {self.n_heads * self.head_dim}], got {list(x.shape)}")
        b, t, _ = x.shape
        heads = x.view(b, t, self.n_heads, self.head_dim)
        static = None if self.static is None else self.static(x).view(b, t, -1, self.n_heads, self.head_dim)
        if not self.test_time_learning:
            features, tail = self._features(heads, static, self.banks["proj"].shared(), (state or {}).get("conv"))
            reads = self.banks["mem"].read(self.banks["mem"].shared(), features["q"])
            return self.output(reads, x), {"conv": tail}
        state = state or self.initial_state(b, x)
        weights = {group: {key: state[f"{group}.{key}"] for key in bank.keys} for group, bank in self.banks.items()}
        velocity = {group: {key: state[f"{group}.momentum.{key}"] for key in bank.keys} if self.momentum else {}
                    for group, bank in self.banks.items()}
        pending = {group: [{name: state[f"{group}.{name}"] for name in self.buffered}] if state[f"{group}.k"].shape[1]
                   else [] for group in self.banks}
        filled = {group: state[f"{group}.k"].shape[1] for group in self.banks}
        sizes = self._segments(t, filled)
        pieces = [None] * len(sizes) if static is None else static.split(sizes, dim=1)
        tail, reads = state["conv"], []
        running = self.banks["mem"].read_mode != "start"  # reads made by a fold over the chunk so far
        for size, segment, static_segment in zip(sizes, heads.split(sizes, dim=1), pieces):
            features, tail = self._features(segment, static_segment, weights["proj"], tail)
            whole = self.banks["mem"].kind == "deep" and size == self.chunk_sizes["mem"]
            if running:
                read, folded = self._running_reads(weights["mem"], velocity["mem"], pending["mem"], features)
                reads.append(read)
            elif not whole:  # (a whole chunk of M_mem is read by its fold below, on the way)
                reads.append(self.banks["mem"].read(weights["mem"], features["q"]))
            due = []
            for group in self.banks:
                pending[group].append({name: features[name] for name in self.buffered})
                filled[group] += size
                if filled[group] == self.chunk_sizes[group]:
                    due.append(group)
            for group in due:
                if group == "mem" and running:  # the fold that made the reads holds the chunk's end
                    weights[group], velocity[group] = folded
                    pending[group], filled[group] = [], 0
                    continue
                chunk = {name: torch.cat([p[name] for p in pending[group]], dim=1) for name in self.buffered}
                queries = features["q"] if group == "mem" and whole else None
                read, weights[group], velocity[group] = self._fold(group, weights[group], velocity[group], chunk,
                                                                   queries)
                if read is not None:
                    reads.append(read)
                pending[group], filled[group] = [], 0
        new_state = {"conv": tail}
        for group, bank in self.banks.items():
            new_state.update({f"{group}.{key}": weights[group][key] for key in bank.keys})
            new_state.update({f"{group}.momentum.{key}": tensor for key, tensor in velocity[group].items()})
            for name in self.buffered:
                parts = [p[name] for p in pending[group]] or [state[f"{group}.{name}"][:, :0]]
                new_state[f"{group}.{name}"] = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        return self.output(torch.cat(reads, dim=1), x), new_state

    @compilable(when=lambda self, weights, velocity, pending, features: not pending
                and features["q"].shape[1] == self.chunk_sizes["mem"])
    def _running_reads(self, weights: dict[str, torch.Tensor], velocity: dict[str, torch.Tensor], pending: list,
                       features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, tuple[dict, dict]]:
        """``memory_read="running"`` / ``"previous"``: the reads of a segment from ``M_mem`` after the updates of its
        chunk's tokens up to each of them (or up to the one before), by a fold over the chunk so far
        (reads of the pending positions dropped; the chunk-level momentum only lands at the chunk's end). Also
        returns the fold's weights and momentum, which are the new state if the segment ends the chunk."""
        chunk = {name: torch.cat([p[name] for p in pending] + [features[name]], dim=1) for name in self.buffered}
        earlier = chunk["k"].shape[1] - features["q"].shape[1]
        queries = torch.cat([chunk["k"][:, :earlier], features["q"]], dim=1)
        read, new_weights, new_velocity = self._fold("mem", weights, velocity, chunk, queries)
        return read[:, earlier:], (new_weights, new_velocity)

    def _segments(self, length: int, filled: dict[str, int]) -> list[int]:
        """Lengths of the pieces of a call: each ends at the next chunk boundary of either group (or the end)."""
        sizes, filled = [], dict(filled)
        while sum(sizes) < length:
            size = min(length - sum(sizes), *(self.chunk_sizes[g] - filled[g] for g in filled))
            sizes.append(size)
            filled = {g: (n + size) % self.chunk_sizes[g] for g, n in filled.items()}
        return sizes

    @compilable(when=lambda self, heads, static, weights, tail: heads.shape[1] == self.chunk_sizes["mem"])
    def _features(self, heads: torch.Tensor, static: torch.Tensor | None, weights: dict[str, torch.Tensor],
                  tail: torch.Tensor | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Keys, values, queries and gates of a segment read at the projection memories' ``weights``
        (NL Eqs. 83-85, 90). ``heads: [B, T, H, D]``; ``static: [B, T, n_static, H, D]`` or ``None``."""
        b, t, h, d = heads.shape
        bank = self.banks["proj"]
        n = len(bank.names)
        raw = bank.read(weights, heads.repeat(1, 1, n, 1)).view(b, t, n, h, d)
        source = {name: raw[:, :, i] for i, name in enumerate(bank.names)}
        source.update({name: static[:, :, i] for i, name in enumerate(self.static_names)})
        kvq, tail = self.conv(torch.cat([source[name].flatten(2) for name in ("k", "v", "q")], dim=-1), tail)
        k, v, q = kvq.view(b, t, 3, h, d).unbind(2)
        gate_inputs = torch.stack([source["alpha" if name == "alpha" else "eta"] for name in self.gate_names], 2)
        gates = torch.sigmoid(torch.einsum("btghd,ghd->btgh", gate_inputs, self.readout) + self.readout_bias)
        features = {name: gates[:, :, i] for i, name in enumerate(self.gate_names)}
        features.update(k=l2_normalize(k), v=l2_normalize(v), q=l2_normalize(q))
        if not self.retention:
            features["alpha"] = torch.ones_like(features["eta"])
        return features, tail

    @compilable(when=lambda self, group, weights, velocity, chunk, queries=None:
                chunk["k"].shape[1] == self.chunk_sizes[group])
    def _fold(self, group: str, weights: dict[str, torch.Tensor], velocity: dict[str, torch.Tensor],
              chunk: dict[str, torch.Tensor], queries: torch.Tensor | None = None,
              ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Fold a completed chunk into one group of memories, with the targets ``v_hat = M(v)`` generated at the
        chunk-start ``weights`` (NL Eqs. 84, 91), then apply the chunk-level momentum. Returns the reads of
        ``queries`` if the fold made them (see :meth:`MemoryBank.fold`), the new weights and the new momentum
        (``velocity``, empty without momentum)."""
        bank = self.banks[group]
        n = len(bank.names)
        targets = bank.read(weights, chunk["v"].repeat(1, 1, n, 1))
        keys = chunk["k"].repeat(1, 1, n, 1)
        read, folded = bank.fold(weights, keys, targets, chunk["alpha"].repeat(1, 1, n), chunk["eta"].repeat(1, 1, n),
                                 queries)
        if not self.momentum:
            return read, folded, velocity
        beta = chunk["beta"].mean(dim=1).repeat(1, n)[..., None, None]
        velocity = {key: beta * velocity[key] + (folded[key] - weights[key]) for key in bank.keys}
        return read, {key: weights[key] + velocity[key] for key in bank.keys}, velocity

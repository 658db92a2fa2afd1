"""Self-modifying Titans, the mixer of Hope (NL Sec. 8.1-8.2, Eqs. 83-97).

Every projection but the query is a memory that keeps learning in context (NL Eqs. 83-85)::

    k_t = M_k(x_t),  v_t = M_v(x_t),  eta_t = g(M_eta(x_t)),  alpha_t = g(M_alpha(x_t)),  q_t = x_t W_q
    o_t = M_mem(q_t)
    v_hat_{box,t} = M_box(v_t)                                   (self-generated targets, NL Eq. 84)
                                                                 (v_t itself with ``self_targets=False``)
    M_box <- M_box (alpha_t I - eta_t k_t k_t^T) - eta_t grad L(M_box; k_t, v_hat_{box,t})   (DGD, NL Eq. 88)

for ``box`` in ``{k, v, eta, alpha, mem}``. Each memory is per head: a 2-layer residual MLP
``M(x) = x + W1 silu(W2 x)`` (NL Eq. 89) or, with ``memory="linear"``, a matrix ``M(x) = W x``; its initial
state is an ordinary parameter, meta-learned through the unrolled in-context updates (full backpropagation,
as in Titans and TTT). Every head's memories read all of ``x_t`` (``memory_input="full"``): head ``h`` reads
head ``h``'s slice of a learned full-width map ``x_t W_in`` (one per memory with ``"full-separate"``; ``"head"``
reads ``x_t``'s own slice, 1/H of it). ``k`` and ``q`` are L2-normalised, and ``v`` too unless
``normalize_v=False`` (the paper does not: the targets ``v_hat = M(v)`` feed a memory's own output back into its
update, so a value norm above one multiplies the memory's gain at every chunk); ``k, v, q`` pass through a causal
depthwise convolution of width 4 and SiLU (Titans Sec. 4.4, after the reads); ``eta, alpha`` are per-head
scalars read out of ``M_eta`` / ``M_alpha`` by a learned vector and a sigmoid (``sigmoid_gates=False``: no
sigmoid). The output is normalised per head, gated and projected. Where this departs from the paper and why:
docs/paper_notes.md, "Where the code departs from the paper".

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

Bound (not in the paper; ``memory_max_norm``): after each chunk (and its momentum), every head's weight matrix
is projected onto a Frobenius ball, so memories carried across whole documents stay finite.

Streaming. The state (:class:`HopeMixerState`) holds each group's chunk-start weights (and momentum) plus the
keys, values and gates of the tokens read since that chunk started; a chunk is folded when its last token arrives.
So prefill + decode gives the outputs of one full forward at any cut, and decoding keeps at most one chunk of tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

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


class PendingTokens(NamedTuple):
    """What a group keeps of the tokens read since its chunk started, until the chunk is folded (NL Eq. 91):
    ``k, v [B, n, H, Dh]`` and the gates ``alpha, eta`` (and, with momentum, ``beta``) ``[B, n, H]``."""

    k: torch.Tensor
    v: torch.Tensor
    alpha: torch.Tensor
    eta: torch.Tensor
    beta: torch.Tensor | None = None


class MemoryGroupState(NamedTuple):
    """One group of memories (``proj``, the projection memories, or ``mem``, ``M_mem``) inside its chunk: the
    chunk-start ``weights`` by name (``MemoryBank.keys``: ``w1, w2`` or ``w``; ``[B, n H, ...]``), their
    ``momentum`` (empty without it) and the ``pending`` tokens."""

    weights: dict[str, torch.Tensor]
    momentum: dict[str, torch.Tensor]
    pending: PendingTokens

    def to_flat(self, group: str) -> dict[str, torch.Tensor]:
        """``{group}.{w}``, ``{group}.momentum.{w}`` and ``{group}.{k, v, alpha, eta, beta}``."""
        flat = {f"{group}.{key}": weight for key, weight in self.weights.items()}
        flat.update({f"{group}.momentum.{key}": velocity for key, velocity in self.momentum.items()})
        flat.update({f"{group}.{name}": t for name, t in zip(PendingTokens._fields, self.pending) if t is not None})
        return flat

    @classmethod
    def from_flat(cls, flat: dict[str, torch.Tensor], group: str, keys: tuple[str, ...]) -> MemoryGroupState:
        """The group saved by :meth:`to_flat`, with the weights ``keys``."""
        momentum = {key: flat[f"{group}.momentum.{key}"] for key in keys if f"{group}.momentum.{key}" in flat}
        pending = PendingTokens(**{name: flat[f"{group}.{name}"] for name in PendingTokens._fields
                                   if f"{group}.{name}" in flat})
        return cls({key: flat[f"{group}.{key}"] for key in keys}, momentum, pending)


class HopeMixerState(NamedTuple):
    """The convolution tail ``[B, W - 1, 3 D]`` and the state of each group of memories (``proj`` and ``mem``;
    none with ``test_time_learning=False``, where the memories never change)."""

    conv: torch.Tensor
    memories: dict[str, MemoryGroupState]

    def to_flat(self) -> dict[str, torch.Tensor]:
        """The tensors under their names in a state file (docs/paper_notes.md, "State"): ``conv`` and
        :meth:`MemoryGroupState.to_flat` of each group."""
        flat = {"conv": self.conv}
        for group, memory in self.memories.items():
            flat.update(memory.to_flat(group))
        return flat


class SelfModifyingTitans(nn.Module):
    """``module(x [B, T, D], state: HopeMixerState | None, position) -> (y, state)`` (see the module docstring).

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
        self.normalize_v, self.sigmoid_gates = config.normalize_v, config.sigmoid_gates
        self.self_targets = config.self_targets
        self.max_norm = config.memory_max_norm
        adaptive = {"k": config.adaptive_k, "v": config.adaptive_v, "q": config.adaptive_q, "eta": True,
                    "alpha": config.retention}
        self.static_names = tuple(name for name in ("q", "k", "v") if not adaptive[name])
        self.static = nn.Linear(d_model, len(self.static_names) * d_model, bias=False) if self.static_names else None
        memory_names = tuple(name for name, on in adaptive.items() if on)
        maps = {"full": 1, "full-separate": len(memory_names), "head": 0}[config.memory_input]
        self.memory_inputs = nn.Linear(d_model, maps * d_model, bias=False) if maps else None
        self.banks = nn.ModuleDict({
            "proj": MemoryBank(config, memory_names, read="start"),
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
        retention ``alpha`` is spread over ``retention_init`` across heads. The memories' input maps
        ``N(0, 1/d)``, so that a memory's input has the scale of ``x`` (as with ``memory_input="head"``)."""
        initial = {"eta": torch.logit(torch.tensor(self.step_init)).expand(self.n_heads),
                   "alpha": spread_logits(self.n_heads, *self.retention_init),
                   "beta": torch.logit(torch.tensor(self.momentum_init)).expand(self.n_heads)}
        if not self.sigmoid_gates:
            initial = {name: torch.sigmoid(logits) for name, logits in initial.items()}
        with torch.no_grad():
            self.readout.normal_(std=0.02)
            if self.memory_inputs is not None:
                self.memory_inputs.weight.normal_(std=self.memory_inputs.in_features ** -0.5)
            self.readout_bias.copy_(torch.stack([initial[name] for name in self.gate_names]))

    def initial_state(self, batch: int, like: torch.Tensor) -> HopeMixerState:
        """The state of a fresh sequence: meta-learned initial weights, zero momentum, no pending tokens (no
        memories with ``test_time_learning=False``, as ``forward`` returns)."""
        memories = {}
        for group, bank in self.banks.items() if self.test_time_learning else ():
            weights = bank.initial(batch)
            momentum = {key: torch.zeros_like(weight) for key, weight in weights.items()} if self.momentum else {}
            pending = PendingTokens(**{
                name: like.new_zeros((batch, 0, self.n_heads) + ((self.head_dim,) if name in ("k", "v") else ()))
                for name in self.buffered})
            memories[group] = MemoryGroupState(weights, momentum, pending)
        return HopeMixerState(like.new_zeros(batch, self.conv.width - 1, self.conv.channels), memories)

    def state_from_flat(self, flat: dict[str, torch.Tensor], position: int) -> HopeMixerState:
        """The state saved by :meth:`HopeMixerState.to_flat`."""
        groups = self.banks.items() if self.test_time_learning else ()
        return HopeMixerState(flat["conv"], {group: MemoryGroupState.from_flat(flat, group, bank.keys)
                                             for group, bank in groups})

    def forward(self, x: torch.Tensor, state: HopeMixerState | None = None,
                position: int = 0) -> tuple[torch.Tensor, HopeMixerState]:
        if x.ndim != 3 or x.shape[-1] != self.n_heads * self.head_dim:
            raise ValueError(f"x must be [batch, time, {self.n_heads * self.head_dim}], got {list(x.shape)}")
        b, t, _ = x.shape
        inputs = self._memory_inputs(x)
        static = None if self.static is None else self.static(x).view(b, t, -1, self.n_heads, self.head_dim)
        if not self.test_time_learning:
            features, tail = self._features(inputs, static, self.banks["proj"].shared(),
                                            None if state is None else state.conv)
            reads = self.banks["mem"].read(self.banks["mem"].shared(), features["q"])
            return self.output(reads, x), HopeMixerState(tail, {})
        if state is None:
            state = self.initial_state(b, x)
        weights = {group: memory.weights for group, memory in state.memories.items()}
        velocity = {group: memory.momentum for group, memory in state.memories.items()}
        filled = {group: memory.pending.k.shape[1] for group, memory in state.memories.items()}
        pending = {group: [{name: getattr(memory.pending, name) for name in self.buffered}] if filled[group] else []
                   for group, memory in state.memories.items()}
        sizes = self._pieces(t, filled["proj"], "proj")
        pieces = [None] * len(sizes) if static is None else static.split(sizes, dim=1)
        tail, reads = state.conv, []
        for segment, static_segment in zip(inputs.split(sizes, dim=1), pieces):
            # The projection memories change only at their chunk ends: one read of the piece up to the next one.
            features, tail = self._features(segment, static_segment, weights["proj"], tail)
            parts = self._pieces(segment.shape[1], filled["mem"], "mem")
            for part in zip(*(features[name].split(parts, dim=1) for name in features)):
                reads += self._mem_segment(weights, velocity, pending, filled, dict(zip(features, part)))
            pending["proj"].append({name: features[name] for name in self.buffered})
            filled["proj"] += segment.shape[1]
            if filled["proj"] == self.chunk_sizes["proj"]:
                chunk = {name: torch.cat([p[name] for p in pending["proj"]], dim=1) for name in self.buffered}
                _, weights["proj"], velocity["proj"] = self._fold("proj", weights["proj"], velocity["proj"], chunk)
                pending["proj"], filled["proj"] = [], 0
        memories = {}
        for group, memory in state.memories.items():
            tokens = {}
            for name in self.buffered:
                parts = [p[name] for p in pending[group]] or [getattr(memory.pending, name)[:, :0]]
                tokens[name] = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
            memories[group] = MemoryGroupState(weights[group], velocity[group], PendingTokens(**tokens))
        return self.output(torch.cat(reads, dim=1), x), HopeMixerState(tail, memories)

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

    def _mem_segment(self, weights: dict, velocity: dict, pending: dict, filled: dict,
                     features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """The reads of ``M_mem`` over a segment inside one of its chunks (``weights``, ``velocity``, ``pending`` and
        ``filled`` of the group are updated in place); a segment that ends the chunk folds it."""
        size, bank = features["q"].shape[1], self.banks["mem"]
        whole = bank.kind == "deep" and size == self.chunk_sizes["mem"]
        reads = []
        if bank.read_mode != "start":  # reads made by a fold over the chunk so far
            read, folded = self._running_reads(weights["mem"], velocity["mem"], pending["mem"], features)
            reads.append(read)
        elif not whole:  # (a whole chunk of M_mem is read by its fold below, on the way)
            reads.append(bank.read(weights["mem"], features["q"]))
        pending["mem"].append({name: features[name] for name in self.buffered})
        filled["mem"] += size
        if filled["mem"] < self.chunk_sizes["mem"]:
            return reads
        if bank.read_mode != "start":  # the fold that made the reads holds the chunk's end
            weights["mem"], velocity["mem"] = folded
        else:
            chunk = {name: torch.cat([p[name] for p in pending["mem"]], dim=1) for name in self.buffered}
            read, weights["mem"], velocity["mem"] = self._fold("mem", weights["mem"], velocity["mem"], chunk,
                                                               features["q"] if whole else None)
            if read is not None:
                reads.append(read)
        pending["mem"], filled["mem"] = [], 0
        return reads

    def _pieces(self, length: int, filled: int, group: str) -> list[int]:
        """Lengths of the pieces of ``length`` tokens, each ending at a chunk end of ``group`` (or at the end), for
        a group ``filled`` tokens into its chunk."""
        chunk = self.chunk_sizes[group]
        first = min(length, chunk - filled)
        return [first] + [min(chunk, length - start) for start in range(first, length, chunk)]

    def _memory_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """What the projection memories read, ``[B, T, n H, D]`` (memory after memory, head after head), by
        ``memory_input``: ``full``, one full-width map of ``x`` shared by the memories (NL Eqs. 83-85: ``M_k(x_t)``
        reads all of ``x_t``); ``full-separate``, one map per memory; ``head``, head ``h``'s slice of ``x``."""
        b, t, _ = x.shape
        inputs = x if self.memory_inputs is None else self.memory_inputs(x)
        inputs = inputs.view(b, t, -1, self.head_dim)
        return inputs.repeat(1, 1, len(self.banks["proj"].names) * self.n_heads // inputs.shape[2], 1)

    @compilable(when=lambda self, inputs, static, weights, tail: inputs.shape[1] == self.chunk_sizes["proj"])
    def _features(self, inputs: torch.Tensor, static: torch.Tensor | None, weights: dict[str, torch.Tensor],
                  tail: torch.Tensor | None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Keys, values, queries and gates of a segment read at the projection memories' ``weights``
        (NL Eqs. 83-85, 90). ``inputs: [B, T, n H, D]`` (:meth:`_memory_inputs`); ``static: [B, T, n_static, H,
        D]`` or ``None``."""
        b, t, h, d = inputs.shape[0], inputs.shape[1], self.n_heads, self.head_dim
        bank = self.banks["proj"]
        n = len(bank.names)
        raw = bank.read(weights, inputs).view(b, t, n, h, d)
        source = {name: raw[:, :, i] for i, name in enumerate(bank.names)}
        source.update({name: static[:, :, i] for i, name in enumerate(self.static_names)})
        kvq, tail = self.conv(torch.cat([source[name].flatten(2) for name in ("k", "v", "q")], dim=-1), tail)
        k, v, q = kvq.view(b, t, 3, h, d).unbind(2)
        gate_inputs = torch.stack([source["alpha" if name == "alpha" else "eta"] for name in self.gate_names], 2)
        gates = torch.einsum("btghd,ghd->btgh", gate_inputs, self.readout) + self.readout_bias
        if self.sigmoid_gates:
            gates = torch.sigmoid(gates)
        features = {name: gates[:, :, i] for i, name in enumerate(self.gate_names)}
        features.update(k=l2_normalize(k), v=l2_normalize(v) if self.normalize_v else v, q=l2_normalize(q))
        if not self.retention:
            features["alpha"] = torch.ones_like(features["eta"])
        return features, tail

    @compilable(when=lambda self, group, weights, velocity, chunk, queries=None:
                chunk["k"].shape[1] == self.chunk_sizes[group])
    def _fold(self, group: str, weights: dict[str, torch.Tensor], velocity: dict[str, torch.Tensor],
              chunk: dict[str, torch.Tensor], queries: torch.Tensor | None = None,
              ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Fold a completed chunk into one group of memories, with the targets ``v_hat = M(v)`` generated at the
        chunk-start ``weights`` (NL Eqs. 84, 91; ``v`` itself with ``self_targets=False``), then apply the chunk-level momentum. Returns the reads of
        ``queries`` if the fold made them (see :meth:`MemoryBank.fold`), the new weights and the new momentum
        (``velocity``, empty without momentum)."""
        bank = self.banks[group]
        n = len(bank.names)
        values = chunk["v"].repeat(1, 1, n, 1)
        targets = bank.read(weights, values) if self.self_targets else values
        keys = chunk["k"].repeat(1, 1, n, 1)
        read, folded = bank.fold(weights, keys, targets, chunk["alpha"].repeat(1, 1, n), chunk["eta"].repeat(1, 1, n),
                                 queries)
        if not self.momentum:
            return read, self._bounded(folded), velocity
        beta = chunk["beta"].mean(dim=1).repeat(1, n)[..., None, None]
        velocity = {key: beta * velocity[key] + (folded[key] - weights[key]) for key in bank.keys}
        return read, self._bounded({key: weights[key] + velocity[key] for key in bank.keys}), velocity

    def _bounded(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each head's weight matrix ``[..., r, c]`` projected onto the Frobenius ball of radius
        ``memory_max_norm * sqrt(min(r, c))`` (unchanged inside it; ``HopeConfig.memory_max_norm``). The momentum
        keeps the unprojected step, so it stays bounded by the folds of bounded weights."""
        if self.max_norm is None:
            return weights
        bounded = {}
        for key, weight in weights.items():
            radius = self.max_norm * min(weight.shape[-2:]) ** 0.5
            norm = torch.linalg.vector_norm(weight, dim=(-2, -1), keepdim=True)
            bounded[key] = weight * (radius / norm.clamp(min=radius))
        return bounded

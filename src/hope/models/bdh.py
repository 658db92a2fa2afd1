"""BDH, the Baby Dragon Hatchling (Kosowski et al. 2025, arXiv 2509.26507), in its BDH-GPU form (Sec. 3).

Memory is synaptic: each layer keeps, per head, a matrix of synapses between the ``d``-dimensional residual
stream and ``N = n_neurons / n_heads`` positive, sparse neurons, and it only ever grows by the fixed Hebbian
rule ``S_t = S_{t-1} + v_t k_t^T`` (no retention, no erase term, nothing learned in the rule: NL Eq. 64 with
``alpha = eta = 1``, the ``rule="gd"`` case of ``hope.ops.dgd``). One layer, with ``x`` its (normed) input::

    x_s = relu(D_x x)                                  # neurons that fire for the token, per head [N]
    k_t = RoPE_t(x_s),  v_t = x                          # keys in neuron space, values in the residual space
    a_t = S_{t-1} k_t = sum_{tau < t} (k_tau . k_t) v_tau   # causal linear attention, strictly before t
    y_s = relu(D_y Norm(a_t))                          # per head [N]
    out = Norm(E (x_s * y_s))                          # the gated x * y decoder back to d

``D_x, D_y: d -> n`` and ``E: n -> d`` are the paper's "decoders" and "encoder". As in BDH-GPU they are shared
by every layer: the model is one layer applied ``n_layers`` times, each with its own synapses. Norms are this
repo's RMSNorm (``hope.layers.norm``; the paper uses LayerNorm without affine parameters); RoPE is
``hope.layers.attention.rotary`` over neuron pairs with ``rope_theta = 2^16`` as in the reference code.

How it maps onto ``hope.models.lm`` (blocks of mixer + channel memory). BDH has no MLP beside its attention:
the decoder is part of the layer. So the **mixer is the whole BDH layer** (``h = x + BDHLayer(Norm(x))``, the
paper's post-norm residual written pre-norm as every block here) and the **channel is empty**
(``NoChannel`` adds nothing; the block's channel norm is unused). The shared weights live in block 0's mixer
(``blocks.0.mixer.neurons``, the only copy in a checkpoint); the other blocks' mixers read them without
registering them.

The synaptic state, per layer ``BDHState(synapses [B, H, d, N])`` (the sum of ``v k^T`` over every token read), is
what makes prefill + decode equal one forward at constant work per decoded token: sequences run through
``hope.ops.dgd`` (``mode="chunk"``, or ``"recurrent"`` for one token), with keys and values shifted one token
so that a token reads only the synapses of the tokens before it. docs/ops_dgd.md; docs/results.md for how it
trains here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from hope.errors import HopeError
from hope.layers.attention import rotary
from hope.layers.norm import rms_norm
from hope.models.config import ModelConfig, register
from hope.ops.dgd import dgd


@register("bdh")
@dataclass
class BDHConfig(ModelConfig):
    """BDH-GPU: one layer shared across depth (the mixer), with a Hebbian synaptic state per layer; no channel
    (so ``mlp_hidden`` is not used)."""

    SIZE_OVERRIDES: ClassVar[dict[str, dict[str, int]]] = {
        "tiny": {"n_neurons": 2216}, "small": {"n_neurons": 9216},
        "760m": {"n_neurons": 153600}, "1.3b": {"n_neurons": 197632},
    }
    """Neurons for parameters within 0.1% of Transformer++: ``3 n d`` shared weights against its
    ``n_layers (4 d^2 + 3 d mlp_hidden)``."""
    n_neurons: int = 2216
    """Neurons ``n`` over all heads (``n_neurons / n_heads`` per head, an even number for RoPE's pairs)."""
    rope_theta: float = 65536.0
    """Base of the rotary angles over neuron pairs (2^16, as in the reference code)."""
    chunk_size: int = 64
    """Tokens per chunk of ``hope.ops.dgd``'s chunk form (speed only: the result does not depend on it)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("n_neurons", "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise HopeError(f"{name} must be a positive integer, got {value!r}")
        if self.n_neurons % (2 * self.n_heads):
            raise HopeError(f"n_neurons ({self.n_neurons}) must be a multiple of 2 * n_heads ({2 * self.n_heads}): "
                            "an even number of neurons per head")
        if self.rope_theta <= 1:
            raise HopeError(f"rope_theta must be > 1, got {self.rope_theta}")

    def build_mixer(self, layer: int) -> nn.Module:
        """The BDH layer of block ``layer``: block 0 creates the shared weights, later blocks borrow them
        (blocks are built in order by ``LanguageModel``)."""
        if layer == 0:
            self._neurons = BDHNeurons(self)
        elif not hasattr(self, "_neurons"):
            raise HopeError("bdh layers share block 0's weights: build_mixer(0) must come first")
        layer_module = BDHLayer(self._neurons, owner=layer == 0, chunk_size=self.chunk_size)
        if layer == self.n_layers - 1:
            del self._neurons
        return layer_module

    def build_channel(self, layer: int) -> nn.Module:
        return NoChannel()


class BDHNeurons(nn.Module):
    """The weights of BDH-GPU, shared by every layer: ``x_neurons`` (``D_x``), ``y_neurons`` (``D_y``),
    ``readout`` (``E``) and the two norms."""

    def __init__(self, config: BDHConfig) -> None:
        super().__init__()
        d_model, n = config.d_model, config.n_neurons
        self.n_heads, self.per_head, self.rope_theta = config.n_heads, n // config.n_heads, config.rope_theta
        self.x_neurons = nn.Linear(d_model, n, bias=False)
        self.y_neurons = nn.Linear(d_model, n, bias=False)
        self.readout = nn.Linear(n, d_model, bias=False)
        self.read_norm = rms_norm(d_model, config.norm_eps)
        self.out_norm = rms_norm(d_model, config.norm_eps)


class BDHState(NamedTuple):
    """The synapses of one layer, ``[B, H, D, N]``: the sum of ``v k^T`` over every token read."""

    synapses: torch.Tensor

    def to_flat(self) -> dict[str, torch.Tensor]:
        """The tensors under their names in a state file (docs/paper_notes.md, "State")."""
        return {"synapses": self.synapses}


class BDHLayer(nn.Module):
    """``module(x [B, T, D], state: BDHState | None, position) -> (y, state)`` (``None``: a fresh sequence, no
    synapses). ``owner``: whether this layer registers the shared weights (block 0)."""

    def __init__(self, neurons: BDHNeurons, owner: bool, chunk_size: int) -> None:
        super().__init__()
        if owner:
            self.neurons = neurons
        self._shared = (neurons,)
        self.chunk_size = chunk_size

    def forward(self, x: torch.Tensor, state: BDHState | None = None,
                position: int = 0) -> tuple[torch.Tensor, BDHState]:
        if x.ndim != 3:
            raise ValueError(f"x must be [batch, time, d_model], got {list(x.shape)}")
        w = self._shared[0]
        b, t, d = x.shape
        h, n = w.n_heads, w.per_head
        x_sparse = F.relu(w.x_neurons(x)).view(b, t, h, n)
        keys = rotary(x_sparse.transpose(1, 2), position, w.rope_theta).transpose(1, 2)
        values = x.unsqueeze(2).expand(b, t, h, d)
        reads, synapses = self.hebbian_reads(keys, values, None if state is None else state.synapses)
        y_sparse = F.relu(torch.einsum("bthd,hnd->bthn", w.read_norm(reads), w.y_neurons.weight.view(h, n, d)))
        out = w.out_norm(w.readout((x_sparse * y_sparse).flatten(2)))
        return out, BDHState(synapses)

    def initial_state(self, batch: int, like: torch.Tensor) -> BDHState:
        """The state of a fresh sequence: no synapses (zero, in the dtype ``hope.ops.dgd`` keeps them in)."""
        w = self._shared[0]
        return BDHState(like.new_zeros(batch, w.n_heads, w.readout.out_features, w.per_head,
                                       dtype=torch.promote_types(like.dtype, torch.float32)))

    def state_from_flat(self, flat: dict[str, torch.Tensor], position: int) -> BDHState:
        """The state saved under ``BDHState.to_flat``'s names."""
        return BDHState(flat["synapses"])

    def hebbian_reads(self, keys: torch.Tensor, values: torch.Tensor,
                      synapses: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``a_t = S_{t-1} k_t`` with ``S_t = S_{t-1} + v_t k_t^T`` from ``synapses`` (zero if ``None``); returns
        the reads ``[B, T, H, D]`` and the synapses after the last token. ``hope.ops.dgd`` reads after each
        write, so it gets each token's write one step late (token ``t`` writes ``v_{t-1} k_{t-1}^T``) and the
        last token's write is added here."""
        late_keys, late_values = (F.pad(u, (0, 0, 0, 0, 1, 0))[:, :-1] for u in (keys, values))
        ones = keys.new_ones(keys.shape[:3])
        reads, synapses = dgd(keys, late_keys, late_values, ones, ones, rule="gd", initial_state=synapses,
                              output_final_state=True, chunk_size=self.chunk_size,
                              mode="recurrent" if keys.shape[1] == 1 else "chunk")
        last = values[:, -1, :, :, None].to(synapses.dtype) * keys[:, -1, :, None, :].to(synapses.dtype)
        return reads, synapses + last


class NoChannel(nn.Module):
    """The channel memory of a BDH block: nothing (BDH's decoder is part of its layer, the mixer)."""

    def forward(self, x: torch.Tensor, state: None = None, position: int = 0) -> tuple[torch.Tensor, None]:
        """``(0, None)``: nothing to add, no state."""
        return torch.zeros_like(x), None

    def state_from_flat(self, flat: dict[str, torch.Tensor], position: int) -> None:
        return None

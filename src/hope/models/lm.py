"""One language model for Hope and every baseline: embedding -> blocks (mixer + channel memory) -> head.

Block layout (pre-norm residual, as in Transformer++)::

    h = x + Mixer(Norm(x))          # attention, Titans, Gated DeltaNet or self-modifying Titans
    y = h + Channel(Norm(h))        # static SwiGLU MLP or a Continuum Memory System

Mixers and channel memories share one calling convention:
``module(x, state, position: int) -> (y, new_state)``, with ``state`` the module's own typed state (``None`` for a
fresh sequence) and ``module.state_from_flat(tensors, position)`` to read it back from a state file
(``hope.models.state``).

A model whose CMS levels learn in context runs segment by segment between their boundaries, with one
inner gradient step per boundary (``hope.models.hope.in_context``, docs/cms.md), or, with ``window=True`` (a
training window whose length divides every period), in one pass whose CMS steps come from the training backward
(``hope.models.hope.window``); every other model reads the whole input in one pass.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hope.errors import HopeError
from hope.layers.norm import rms_norm
from hope.models.config import ModelConfig
from hope.models.hope.cms import CMS
from hope.models.hope.in_context import forward_in_context
from hope.models.hope.self_modifying_titans import SelfModifyingTitans
from hope.models.hope.window import forward_window, is_window_state
from hope.models.state import BlockState, ModelState, restart_rows
from hope.models.titans import Titans


@dataclass
class LMOutput:
    logits: torch.Tensor
    state: ModelState
    loss: torch.Tensor | None = None
    hidden_states: torch.Tensor | None = None
    """With ``output_hidden_states``: the last block's output after the final norm (the head's input), [B, T, D]."""


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.mixer_norm = rms_norm(config.d_model, config.norm_eps)
        self.mixer = config.build_mixer(layer)
        self.channel_norm = rms_norm(config.d_model, config.norm_eps)
        self.channel = config.build_channel(layer)

    def forward(self, x: torch.Tensor, state: BlockState | None, position: int) -> tuple[torch.Tensor, BlockState]:
        mixer_state, channel_state = (None, None) if state is None else state
        h, mixer_state = self.mixer(self.mixer_norm(x), mixer_state, position)
        x = x + h
        h, channel_state = self.channel(self.channel_norm(x), channel_state, position)
        return x + h, BlockState(mixer_state, channel_state)


class LanguageModel(nn.Module):
    """``model(input_ids, state=None, targets=None, output_hidden_states=False, window=False) -> LMOutput``.

    ``window=True``: ``input_ids`` is one training window of a stream; the CMS levels step at window boundaries
    from the training backward (``hope.models.hope.window.step_after_backward``; docs/cms.md)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = rms_norm(config.d_model, config.norm_eps)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self._init_weights()
        if config.tie_embeddings:
            self.head.weight = self.embed.weight
        self.cms_layers = [i for i, block in enumerate(self.blocks)
                           if isinstance(block.channel, CMS) and block.channel.active_periods]
        self.cms_periods = tuple(sorted({p for i in self.cms_layers for p in self.blocks[i].channel.active_periods}))
        """The update periods of the CMS levels that learn in context (empty: a single-pass model)."""
        self.cms_grad_window = getattr(config, "cms_grad_window", None)
        """How far back an in-context CMS step differentiates (``CMSConfig.cms_grad_window``)."""

    def _init_weights(self) -> None:
        """N(0, init_std) for every linear and embedding weight, output projections scaled by 1/sqrt(2 L);
        then each submodule with an ``init_weights`` method initialises its own special parameters."""
        std = self.config.init_std
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                scale = (2 * self.config.n_layers) ** -0.5 if name.endswith((".out", ".down")) else 1.0
                nn.init.normal_(module.weight, std=std * scale)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        for module in self.modules():
            if module is not self and hasattr(module, "init_weights"):
                module.init_weights()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, input_ids: torch.Tensor, state: ModelState | None = None,
                targets: torch.Tensor | None = None, output_hidden_states: bool = False,
                window: bool = False) -> LMOutput:
        if input_ids.ndim != 2 or input_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"input_ids must be an integer tensor [batch, time], got {input_ids.dtype} {list(input_ids.shape)}")
        if targets is not None and targets.shape != input_ids.shape:
            raise ValueError(f"targets must have the shape of input_ids {list(input_ids.shape)}, got {list(targets.shape)}")
        if state is not None and len(state.layers) not in (0, len(self.blocks)):
            raise ValueError(f"state has {len(state.layers)} layers, the model {len(self.blocks)}")
        if self.cms_periods and window:
            logits, hidden, new_state = forward_window(self, input_ids, state)
        elif self.cms_periods:
            if is_window_state(self, state):
                raise HopeError("this state was made by window-aligned CMS steps: continue it with window=True")
            logits, hidden, new_state = forward_in_context(self, input_ids, state)
        else:
            position = state.position if state is not None else 0
            layers = state.layers if state is not None else []
            if state is not None and state.restart is not None:
                layers = self.restarted(layers, state.restart)
            logits, new_layers, hidden = self.run_blocks(input_ids, layers, position)
            new_state = ModelState(position + input_ids.shape[1], new_layers)
        loss = None
        if targets is not None:
            wide = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
            loss = F.cross_entropy(wide.flatten(0, 1), targets.flatten())
        return LMOutput(logits, new_state, loss, hidden if output_hidden_states else None)

    def initial_layers(self, batch: int, window: bool = False) -> list[BlockState]:
        """Each block's state for ``batch`` fresh sequences (``None`` for a part that keeps none across streamed
        windows: static MLPs and attention); parameter-derived parts are views of the parameters. ``window``:
        the CMS states of window-aligned steps (``hope.models.hope.window``; all zeros)."""
        like = self.embed.weight

        def initial(module: nn.Module) -> object:
            if window and isinstance(module, CMS) and module.learning:
                return module.window_state(batch)
            make = getattr(module, "initial_state", None)
            return None if make is None else make(batch, like)

        return [BlockState(initial(block.mixer), initial(block.channel)) for block in self.blocks]

    def restarted(self, layers: list[BlockState], rows: torch.Tensor, window: bool = False) -> list[BlockState]:
        """``layers`` (at a streamed window start) with the rows ``rows`` (bool ``[B]``) back at the initial state
        (``ModelState.restart``; ``[]``, a fresh batch, stays ``[]``)."""
        return restart_rows(layers, self.initial_layers(rows.shape[0], window), rows) if layers else layers

    def window_aligned(self, seq_len: int) -> bool:
        """Whether streamed windows of ``seq_len`` tokens take window-aligned CMS steps (``window=True``;
        docs/cms.md): the model has learning CMS levels and ``seq_len`` divides each of their periods."""
        return bool(self.cms_periods) and all(period % seq_len == 0 for period in self.cms_periods)

    def window_multiple(self, window: bool = False) -> int:
        """What a streamed window's length must be a multiple of, so that every window starts where each state
        is aligned (docs/training.md, streaming): the chunk sizes of the memories that keep a chunk's position
        (Titans, self-modifying Titans) and, unless the CMS steps are window-aligned (``window``), the CMS
        periods that learn in context."""
        sizes = [] if window else list(self.cms_periods)
        for block in self.blocks:
            if isinstance(block.mixer, Titans):
                sizes.append(block.mixer.chunk_size)
            elif isinstance(block.mixer, SelfModifyingTitans) and block.mixer.test_time_learning:
                sizes.extend(block.mixer.chunk_sizes.values())
        return math.lcm(1, *sizes)

    def window_state(self, state: ModelState | None, restart: torch.Tensor,
                     window: bool = False) -> ModelState | None:
        """The state a streamed window starts from: the previous window's ``state`` (``None`` at the first
        window) carried across the cut (:meth:`ModelState.carried`), with the rows ``restart`` (bool ``[B]``,
        those that start a document) restarting from the initial state (``ModelState.restart``); ``window``:
        the state of window-aligned CMS steps."""
        if state is None:
            return None
        return dataclasses.replace(state.carried(self.initial_layers(restart.shape[0], window)), restart=restart)

    def run_blocks(self, input_ids: torch.Tensor, layers: list[BlockState],
                   position: int) -> tuple[torch.Tensor, list[BlockState], torch.Tensor]:
        """Logits of ``input_ids`` at ``position ..`` from per-layer states ``layers`` (``[]``: fresh), the
        new per-layer states and the head's input; every layer keeps the weights its state holds (no in-context
        step here)."""
        x = self.embed(input_ids)
        new_layers = []
        for block, layer_state in zip(self.blocks, layers or [None] * len(self.blocks)):
            x, s = block(x, layer_state, position)
            new_layers.append(s)
        hidden = self.norm(x)
        return self.head(hidden), new_layers, hidden

"""Chapter 7 of ``hope explore``: what a trained model learns as it reads a text (docs/explore.md).

``inspect_text`` reads the text in pieces, continuing the model's ``ModelState`` (``model(ids, state)``), and
reads everything from the public API: per-token loss from the logits; Hope's per-head step size ``eta`` and
retention ``alpha`` from the state, which buffers them for the tokens of the current chunk of its
self-modifying memories (NL Eqs. 83-88) until the chunk is folded (the last token of each chunk is folded at
once, so it has no value); memory-weight norms and CMS fast-weight steps (NL Eq. 71) from the state after each
piece; the loss with test-time learning off from a copy of the model built with ``test_time_learning=False``.
``notes`` says what an architecture does not have.

``load_handler`` / ``inspect_handler`` are the page's callbacks: they turn every failure into a message.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from hope.checkpoint import load_checkpoint
from hope.models import LanguageModel, config_from_dict
from hope.models.gated_deltanet import GatedDeltaNetState
from hope.models.hope.cms import CMSState
from hope.models.hope.self_modifying_titans import HopeMixerState
from hope.models.titans import TitansLayerState

MAX_TOKENS = 2048
"""Longest text the inspector reads (in tokens), to keep the page responsive."""
PIECE = 16
"""Tokens per piece: the resolution of the memory-norm and CMS curves."""


def _memory_weights(mixer_state) -> list[torch.Tensor]:
    """The weights of a mixer's memory (``M_mem`` for Hope; none for attention), momenta and chunk starts excluded."""
    if isinstance(mixer_state, TitansLayerState):
        return list(mixer_state.memory.weights)
    if isinstance(mixer_state, GatedDeltaNetState):
        return [mixer_state.memory]
    if isinstance(mixer_state, HopeMixerState) and "mem" in mixer_state.memories:
        return list(mixer_state.memories["mem"].weights.values())
    return []


def _memory_norm(mixer_state) -> float | None:
    parts = _memory_weights(mixer_state)
    return math.sqrt(sum(t.double().pow(2).sum().item() for t in parts)) if parts else None


def _level_weights(channel_state) -> dict[int, list[torch.Tensor]]:
    """``{level: its fast weights and the start state it is taught}`` of a learning CMS (empty otherwise)."""
    if not isinstance(channel_state, CMSState):
        return {}
    return {i: [*weights, *channel_state.starts.get(i, ())] for i, weights in channel_state.levels.items()}


def _without_test_time_learning(model: LanguageModel) -> LanguageModel | None:
    """The same weights with every in-context update frozen; ``None`` if the architecture has no such switch."""
    config = model.config.to_dict()
    if "test_time_learning" not in config:
        return None
    frozen = LanguageModel(config_from_dict({**config, "test_time_learning": False}))
    frozen.load_state_dict(model.state_dict())
    return frozen.eval()


def _token_losses(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[0, :-1].float(), ids[0, 1:], reduction="none")


@torch.no_grad()
def inspect_text(model: LanguageModel, ids: list[int], piece: int = PIECE) -> dict:
    """Per-token and per-piece readings of ``model`` over the token ids ``ids`` (at least 2).

    Returns ``loss_on [T-1]`` (next-token loss, test-time learning on), ``loss_off [T-1]`` or ``None``,
    ``eta`` and ``alpha`` ``[layers, heads, T]`` (NaN where not read) or ``None``, ``positions`` (end of each
    piece), ``memory_norms [pieces, layers]`` or ``None``, ``cms_steps`` ``{layer.level: [pieces]}`` (norm of
    the change of that level's fast weights during each piece), ``cms_lr`` ``{layer: [levels]}`` (meta-learned
    step sizes, ``exp(log_lr)``) and ``notes``.
    """
    model.eval()
    tokens = torch.tensor([ids])
    length = tokens.shape[1]
    config = model.config
    n_layers, n_heads = config.n_layers, config.n_heads
    gates = {name: torch.full((n_layers, n_heads, length), math.nan) for name in ("eta", "alpha")}
    has_gates = False
    state, logits, positions, norms, cms_steps = None, [], [], [], {}
    previous_channel = None
    ends = [*range(piece - 1, length, piece), length]  # pieces end one token before a chunk boundary
    for start, end in zip([0, *ends], ends):
        if end == start:
            continue
        out = model(tokens[:, start:end], state=state)
        state = out.state
        logits.append(out.logits)
        positions.append(end)
        norms.append([_memory_norm(layer.mixer) for layer in state.layers])
        for i, layer in enumerate(state.layers):
            if isinstance(layer.mixer, HopeMixerState) and "proj" in layer.mixer.memories:
                proj = layer.mixer.memories["proj"].pending  # the tokens since the chunk started
                for name in gates:
                    pending = getattr(proj, name)[0].float()  # [n, heads]
                    gates[name][i, :, end - pending.shape[0]: end] = pending.T
                has_gates = True
            channel = _level_weights(layer.channel)
            if previous_channel is not None:
                for level, weights in sorted(channel.items()):
                    change = sum((t - before).double().pow(2).sum().item()
                                 for t, before in zip(weights, previous_channel[i][level]))
                    cms_steps.setdefault(f"{i}.{level}", []).append(math.sqrt(change))
        previous_channel = [_level_weights(layer.channel) for layer in state.layers]
    loss_on = _token_losses(torch.cat(logits, dim=1), tokens)
    frozen = _without_test_time_learning(model)
    loss_off = None if frozen is None else _token_losses(frozen(tokens).logits, tokens)
    cms_lr = {name.split(".")[1]: p.exp().tolist() for name, p in model.named_parameters() if name.endswith("channel.log_lr")}
    notes = []
    if frozen is None:
        notes.append(f"{config.arch}: no test_time_learning switch, so no loss with test-time learning off.")
    if not has_gates:
        notes.append(f"{config.arch}: eta and alpha are not shown: its state does not keep them "
                     "(only Hope's self-modifying memories buffer them).")
    if not cms_lr:
        notes.append(f"{config.arch}: no CMS levels that learn in context.")
    memory_norms = None if all(n is None for row in norms for n in row) else torch.tensor(
        [[math.nan if n is None else n for n in row] for row in norms])
    if memory_norms is None:
        notes.append(f"{config.arch}: no memory weights in its state (attention keeps a KV cache).")
    return {"loss_on": loss_on, "loss_off": loss_off,
            "eta": gates["eta"] if has_gates else None, "alpha": gates["alpha"] if has_gates else None,
            "positions": positions, "memory_norms": memory_norms, "cms_steps": cms_steps, "cms_lr": cms_lr,
            "notes": notes}


def load_handler(path: str) -> tuple[tuple | None, str]:
    """Load the checkpoint at ``path`` for the page: ``((model, tokenizer, path), message)``, or ``(None, error)``."""
    path = (path or "").strip()
    if not path:
        return None, "Type the path of a checkpoint directory (written by `hope train`)."
    try:
        model, tokenizer, _ = load_checkpoint(Path(path).expanduser())
    except Exception as err:  # noqa: BLE001 - any failure becomes a message on the page
        return None, f"Could not load {path}: {err}"
    model.eval()
    return (model, tokenizer, path), (f"Loaded {path}: {model.config.arch}, {model.num_parameters():,} parameters, "
                                      f"{model.config.n_layers} layers x {model.config.n_heads} heads.")


def inspect_handler(loaded: tuple | None, text: str) -> tuple[dict | None, str]:
    """Tokenise ``text`` and run ``inspect_text``: ``(result with "tokens", message)`` or ``(None, error)``."""
    if loaded is None:
        return None, "Load a checkpoint first."
    model, tokenizer, path = loaded
    if not text or not text.strip():
        return None, "The text is empty: paste or pick a text to read."
    try:
        ids = tokenizer.encode(text)
    except Exception as err:  # noqa: BLE001
        return None, f"Could not tokenise the text: {err}"
    if len(ids) < 2:
        return None, "The text is too short: it needs at least two tokens."
    if len(ids) > MAX_TOKENS:
        return None, f"The text is {len(ids):,} tokens long; the inspector reads at most {MAX_TOKENS:,}. Shorten it."
    if max(ids) >= model.config.vocab_size:
        return None, "The tokenizer produced ids outside the model's vocabulary."
    try:
        result = inspect_text(model, ids)
    except Exception as err:  # noqa: BLE001
        return None, f"The model failed on this text: {type(err).__name__}: {err}"
    result["tokens"] = [tokenizer.decode([i]) for i in ids]
    on, off = result["loss_on"].mean().item(), None if result["loss_off"] is None else result["loss_off"].mean().item()
    summary = f"{path}: {len(ids)} tokens, mean loss {on:.3f} nats with test-time learning"
    summary += "" if off is None else f", {off:.3f} without (difference {off - on:+.3f})"
    return result, summary + ". " + " ".join(result["notes"])

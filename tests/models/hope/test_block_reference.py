"""A whole Hope model against a per-token reference written from the equations: self-modifying Titans (NL Eqs.
83-97) followed by a Continuum Memory System that learns in context (NL Eqs. 70-71), in pre-norm residual
blocks.

The reference composes the model itself, with none of ``LanguageModel``'s code path (no ``Block``, no
segments, no ``run_blocks``, no ``forward_in_context``, no state)::

    x_0 = E[ids]
    per block i:   h = x + Mixer_i(RMSNorm(x; g_mix_i))                 (the mixer, per token: NL Eqs. 83-97)
                   x = h + CMS_i(RMSNorm(h; g_ch_i))                    (z_0 = u, z_l = z_{l-1} + f(z_{l-1}; W_l[t]),
                                                                          CMS(u) = z_L - u: NL Eq. 70)
    logits = RMSNorm(x; g_out) E^T                                      (tied head)
    RMSNorm(x; g) = x / sqrt(mean(x^2) + eps) * g

Every learning level has a weight per position. At each boundary ``b`` (a multiple of the level's period
``C``), in order, the model is recomputed from scratch on tokens ``0 .. b-1`` with those weights (the mixers'
states detached at the multiples of ``cms_grad_window``, so the gradient below stops there); every due
level of every block takes one step ``W <- W - eta_l grad_W L`` on the mean next-token loss
``L = mean_{t=b-C}^{b-1} CE(logits_t, ids_{t+1})`` (per sequence, summed over the batch), the gradient taken with
respect to the weights it used in that period and treated as a constant (first order, NL Eq. 71); the new
weights apply to positions ``>= b``. The mixer is the per-token reference of
``test_self_modifying_titans.py`` and a level ``f`` is the one of ``test_cms.py`` (both written from the
formulas); everything that joins them is written here.
"""

import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hope.models import build


def _sibling(name: str):
    """A test module of this folder, loaded by path (tests are not a package)."""
    spec = importlib.util.spec_from_file_location(f"_reference_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MixerReference = _sibling("test_self_modifying_titans").Reference
level_swiglu = _sibling("test_cms").level_swiglu

VOCAB, LENGTH = 23, 14
PERIODS = (None, 3, 6)
"""A static level and two learning ones: boundaries at 3, 6, 9 and 12 (both levels step at 6 and 12)."""


def rms(x: torch.Tensor, gain: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps) * gain


class BlockReference:
    """A ``hope`` model one position at a time (see the module docstring)."""

    def __init__(self, model, ids: torch.Tensor) -> None:
        self.model, self.ids = model, ids
        self.batch, self.length = ids.shape
        self.eps = model.config.norm_eps
        self.periods = model.config.level_periods
        self.weights = []  # weights[block][level][t]: the pair (gate_up, down) the level uses at position t
        for block in model.blocks:
            levels = block.channel.levels
            self.weights.append([[(level.gate_up.weight.expand(self.batch, -1, -1),
                                   level.down.weight.expand(self.batch, -1, -1))] * self.length for level in levels])

    def logits(self, upto: int, truncated: bool = False) -> torch.Tensor:
        """``truncated``: the mixers' states detached at the multiples of ``cms_grad_window`` (the inner steps')."""
        cut = self.model.config.cms_grad_window if truncated else None
        x = self.model.embed.weight[self.ids[:, :upto]]
        for i, block in enumerate(self.model.blocks):
            x = x + MixerReference(block.mixer, self.batch, cut)(rms(x, block.mixer_norm.weight, self.eps))
            u = rms(x, block.channel_norm.weight, self.eps)
            x = x + torch.stack([self.cms(i, u[:, t], t) for t in range(upto)], dim=1)
        return rms(x, self.model.norm.weight, self.eps) @ self.model.head.weight.T

    def cms(self, block: int, u: torch.Tensor, t: int) -> torch.Tensor:
        z = u
        for level in range(len(self.periods)):
            z = z + level_swiglu(z, *self.weights[block][level][t])
        return z - u

    def run(self) -> torch.Tensor:
        learning = [level for level, period in enumerate(self.periods) if period is not None]
        for b in range(1, self.length):
            due = [level for level in learning if b % self.periods[level] == 0]
            if not due:
                continue
            logits = self.logits(b, truncated=True)
            steps = []
            for level in due:
                first = b - self.periods[level]
                loss = F.cross_entropy(logits[:, first:b].flatten(0, 1), self.ids[:, first + 1 : b + 1].flatten(),
                                       reduction="none").view(self.batch, -1).mean(1).sum()
                for i, block in enumerate(self.model.blocks):
                    used = self.weights[i][level][b - 1]
                    grads = torch.autograd.grad(loss, used, retain_graph=True)
                    lr = block.channel.log_lr.exp()[level]
                    steps.append((i, level, tuple(w - lr * g for w, g in zip(used, grads))))
            for i, level, new in steps:  # every gradient of this boundary is taken before any step
                self.weights[i][level][b:] = [new] * (self.length - b)
        return self.logits(self.length)


def tiny_hope(**overrides):
    torch.manual_seed(3)
    config = dict(vocab_size=VOCAB, d_model=16, n_layers=2, n_heads=2, chunk_size=4, memory_chunk_size=5,
                  cms_periods=PERIODS, cms_lr=0.5)
    model = build("hope", None, **{**config, **overrides}).double()
    with torch.no_grad():  # livelier gates than the defaults and norm gains that differ, so every term matters
        for block in model.blocks:  # (linear gates stay near their initial values, which keeps them finite)
            block.mixer.readout.normal_(std=0.5 if block.mixer.sigmoid_gates else 0.05)
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.normal_(1.0, 0.3)
    return model


def outer_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    weights = torch.linspace(0.5, 1.5, logits.shape[1] - 1, dtype=logits.dtype)
    per_token = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
    return (per_token.view(ids.shape[0], -1) * weights).sum()


@pytest.mark.parametrize("overrides", [
    {},
    dict(memory_read="running"),
    dict(memory="linear", memory_read="start", objective="dot", momentum=False),
    dict(memory_input="head", memory_read="start"),
    dict(memory_input="full-separate"),
    dict(memory_read="previous", normalize_v=False, sigmoid_gates=False, proximal=False, curvature=False,
         momentum=False),
    dict(cms_grad_window=2),
    dict(cms_grad_window=4, memory_max_norm=0.3),
], ids=["defaults", "running", "linear-start-dot", "head-input", "separate-input", "no-stabilisers",
        "grad-window-2", "grad-window-4-bound"])
def test_hope_equals_per_token_block_reference(overrides):
    """``build("hope", ...)`` against the reference: logits and the gradient of an outer loss w.r.t. every
    parameter, over 14 tokens (four CMS boundaries, the mixers' chunks cut across them)."""
    model = tiny_hope(**overrides)
    ids = torch.randint(0, VOCAB, (2, LENGTH))
    fast = model(ids).logits
    reference = BlockReference(model, ids).run()
    torch.testing.assert_close(fast, reference, rtol=1e-10, atol=1e-12)
    params = [p for p in model.parameters() if p.requires_grad]
    got = torch.autograd.grad(outer_loss(fast, ids), params)
    want = torch.autograd.grad(outer_loss(reference, ids), params)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    for name, g, w in zip(names, got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12, msg=lambda m, name=name: f"{name}: {m}")
    assert all(g.abs().sum() > 0 for g in got), "every parameter takes part"


def test_the_reference_sees_the_in_context_steps():
    """The in-context CMS steps change the logits after the first boundary (so the comparison above tests
    them): with a learning rate near zero the reference gives other logits from position 3 on."""
    model = tiny_hope()
    ids = torch.randint(0, VOCAB, (2, LENGTH))
    learning = BlockReference(model, ids).run()
    with torch.no_grad():
        for block in model.blocks:
            block.channel.log_lr.fill_(-60.0)
    still = BlockReference(model, ids).run()
    torch.testing.assert_close(learning[:, :3], still[:, :3], rtol=1e-12, atol=1e-12)
    assert (learning[:, 3:] - still[:, 3:]).abs().amax() > 1e-6

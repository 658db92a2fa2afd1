"""CMS (NL Eqs. 70-74): the segment-parallel form against a per-token reference, boundaries, variants, meta-gradients."""

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from hope.errors import HopeError
from hope.models import build

VOCAB = 23


def tiny(**overrides):
    config = dict(vocab_size=VOCAB, d_model=16, n_layers=2, n_heads=2, cms_periods=(None, 3, 6), cms_lr=0.5)
    config.update(overrides)
    return build("hope-attention", None, **config).double()


def level_swiglu(x, gate_up, down):
    """One level on one position: ``x [B, D]``, weights ``[B, 2H, D]``/``[B, D, H]`` or shared ``[2H, D]``/``[D, H]``
    (written out, not ``hope.layers.mlp.swiglu``: the reference shares no code with the CMS)."""
    if gate_up.ndim == 2:
        gate_up, down = gate_up.expand(x.shape[0], -1, -1), down.expand(x.shape[0], -1, -1)
    gate, up = torch.einsum("bhd,bd->bh", gate_up, x).chunk(2, dim=-1)
    return torch.einsum("bdh,bh->bd", down, F.silu(gate) * up)


class Reference:
    """The CMS of a ``hope-attention`` model, one position at a time, with no segments, caches or replay.

    ``weights[layer][level][t]`` is the weight pair that level uses at position ``t``. At each boundary ``b``
    (in order) the whole model is recomputed from scratch on the first ``b`` tokens, and every level with
    ``period | b`` takes one step on the mean next-token loss of positions ``b - period .. b - 1``, with respect
    to the weights it used there; the new weights apply to positions ``>= b``.
    """

    def __init__(self, model, ids):
        self.model, self.ids = model, ids
        self.batch, self.length = ids.shape
        self.cms = [block.channel for block in model.blocks]
        self.periods = self.cms[0].periods
        self.weights = []
        for cms in self.cms:
            per_level = []
            for level in cms.levels:
                pair = (level.gate_up.weight.expand(self.batch, -1, -1), level.down.weight.expand(self.batch, -1, -1))
                per_level.append([pair] * self.length)
            self.weights.append(per_level)
        self.start = [[level_weights[0] for level_weights in layer] for layer in self.weights]

    def logits(self, upto):
        model = self.model
        x = model.embed(self.ids[:, :upto])
        for i, block in enumerate(model.blocks):
            h, _ = block.mixer(block.mixer_norm(x), None, 0)
            x = x + h
            u = block.channel_norm(x)
            rows = []
            for t in range(upto):
                rows.append(self.channel(i, u[:, t], t))
            x = x + torch.stack(rows, dim=1)
        return model.head(model.norm(x))

    def channel(self, i, u, t):
        cms = self.cms[i]
        if cms.variant == "independent":
            return sum(cms.mix[l] * level_swiglu(u, *self.weights[i][l][t]) for l in range(len(self.periods)))
        z = u
        for l in range(len(self.periods)):
            z = z + level_swiglu(z, *self.weights[i][l][t])
        return z - u

    def run(self):
        learning = [l for l, p in enumerate(self.periods) if p is not None]
        second_order = self.cms[0].second_order
        for b in range(1, self.length):
            due = [l for l in learning if b % self.periods[l] == 0]
            if not due:
                continue
            logits = self.logits(b)
            updates = []
            for l in due:
                first = b - self.periods[l]
                loss = F.cross_entropy(logits[:, first:b].flatten(0, 1), self.ids[:, first + 1 : b + 1].flatten(),
                                       reduction="none").view(self.batch, -1).mean(1).sum()
                pupil = self.pupil(l)
                for i, cms in enumerate(self.cms):
                    tensors = list(self.weights[i][l][b - 1])
                    if pupil is not None:
                        tensors += list(self.start[i][pupil])
                    grads = torch.autograd.grad(loss, tensors, create_graph=second_order, retain_graph=True)
                    lr = cms.log_lr.exp()[l]
                    new = tuple(w - lr * g for w, g in zip(tensors[:2], grads[:2]))
                    new_start = tuple(w - lr * g for w, g in zip(tensors[2:], grads[2:]))
                    updates.append((i, l, new, pupil, new_start))
            for i, l, new, pupil, new_start in updates:
                self.weights[i][l][b:] = [new] * (self.length - b)
            for i, l, new, pupil, new_start in updates:
                if pupil is not None:
                    self.start[i][pupil] = new_start
                    self.weights[i][pupil][b:] = [new_start] * (self.length - b)
        return self.logits(self.length)

    def pupil(self, level):
        """``nested``: the level whose start state ``level`` learns (the one with the next smaller period)."""
        if self.cms[0].variant != "nested":
            return None
        below = [l for l, p in enumerate(self.periods) if p is not None and p < self.periods[level]]
        return max(below, key=lambda l: self.periods[l]) if below else None


def outer_loss(logits, ids):
    weights = torch.linspace(0.5, 1.5, logits.shape[1], dtype=logits.dtype)
    per_token = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="none")
    return (per_token.view(ids.shape[0], -1) * weights[:-1]).sum()


def grads_of(model, logits, ids):
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.autograd.grad(outer_loss(logits, ids), params)


@pytest.mark.parametrize("variant,second_order,length", [
    ("sequential", False, 14), ("sequential", True, 13), ("nested", False, 14), ("nested", True, 13),
    ("independent", False, 13),
])
def test_segment_form_equals_per_token_reference(variant, second_order, length):
    model = tiny(cms_variant=variant, cms_second_order=second_order)
    ids = torch.randint(0, VOCAB, (2, length))
    fast = model(ids).logits
    with sdpa_kernel([SDPBackend.MATH]):
        ref = Reference(model, ids).run()
    torch.testing.assert_close(fast, ref, rtol=1e-10, atol=1e-12)
    for g_fast, g_ref in zip(grads_of(model, fast, ids), grads_of(model, ref, ids)):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-9, atol=1e-12)


def fast_weights(state, layer=0):
    return {k: v.clone() for k, v in state.layers[layer].channel.to_flat().items()}


def test_fast_weights_change_only_at_their_boundaries():
    model = tiny(cms_periods=(None, 2, 6, 12))
    ids = torch.randint(0, VOCAB, (2, 20))
    state, before = None, None
    with torch.no_grad():
        for n in range(1, 21):
            state = model(ids[:, n - 1 : n], state=state).state
            now = fast_weights(state)
            if before is not None:
                for level, period in ((1, 2), (2, 6), (3, 12)):
                    stepped = (n - 1) % period == 0
                    changed = not torch.equal(now[f"{level}.down"], before[f"{level}.down"])
                    assert changed == stepped, (n, level)
            before = now
    assert set(before) == {f"{level}.{name}" for level in (1, 2, 3) for name in ("gate_up", "down")}


def test_no_in_context_update_without_test_time_learning():
    frozen = tiny(test_time_learning=False)
    static = tiny(cms_periods=(None, None, None))
    static.load_state_dict(frozen.state_dict())
    learning = tiny()
    learning.load_state_dict(frozen.state_dict())
    ids = torch.randint(0, VOCAB, (2, 15))
    out = frozen(ids)
    assert out.state.layers[0].channel is None and out.state.snapshots == []
    torch.testing.assert_close(out.logits, static(ids).logits, rtol=0, atol=0)
    differs = (learning(ids).logits - out.logits).abs().amax(dim=(0, 2)) > 1e-9
    assert not differs[:3].any() and differs[3:].all()


def test_causal_and_batch_isolated():
    model = tiny()
    ids = torch.randint(0, VOCAB, (3, 14))
    base = model(ids).logits
    for j in (2, 3, 6, 9):
        changed = ids.clone()
        changed[1, j] = (changed[1, j] + 1) % VOCAB
        out = model(changed).logits
        assert torch.equal(out[1, :j], base[1, :j]) and not torch.allclose(out[1, j:], base[1, j:])
        assert torch.equal(out[0], base[0]) and torch.equal(out[2], base[2])


@pytest.mark.parametrize("variant", ["sequential", "nested", "independent"])
def test_prefill_then_decode_equals_full_forward_at_ragged_lengths(variant):
    model = tiny(cms_periods=(2, None, 6, 12), cms_variant=variant)
    ids = torch.randint(0, VOCAB, (2, 29))
    full = model(ids).logits
    for split in (1, 5, 6, 7, 12, 13, 28):
        out = model(ids[:, :split])
        pieces, state = [out.logits], out.state
        with torch.no_grad():
            for t in range(split, 29):
                out = model(ids[:, t : t + 1], state=state)
                pieces.append(out.logits)
                state = out.state
        torch.testing.assert_close(torch.cat(pieces, dim=1), full.detach(), rtol=1e-10, atol=1e-12)
    pieces, state, t = [], None, 0
    for size in (4, 1, 9, 2, 7, 6):
        out = model(ids[:, t : t + size], state=state)
        pieces.append(out.logits)
        state, t = out.state, t + size
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("variant", ["sequential", "nested"])
def test_state_save_load_round_trip(tmp_path, variant):
    model = tiny(cms_periods=(2, 6), cms_variant=variant)
    ids = torch.randint(0, VOCAB, (2, 23))
    full = model(ids).logits
    with torch.no_grad():
        state = model(ids[:, :11]).state
        state.save(tmp_path / "state.safetensors")
        loaded, meta = type(state).load(tmp_path / "state.safetensors", model)
        assert loaded.position == 11 and [s.position for s in loaded.snapshots] == [6, 10]
        for key, tensor in state.tensors().items():
            assert torch.equal(loaded.tensors()[key], tensor), key
        rest = model(ids[:, 11:], state=loaded).logits
    torch.testing.assert_close(rest, full[:, 11:].detach(), rtol=1e-10, atol=1e-12)


def test_gradients_reach_initial_states_and_learning_rates():
    model = tiny(cms_periods=(None, 3, 6), cms_lr=0.5)
    ids = torch.randint(0, VOCAB, (2, 14))
    outer_loss(model(ids).logits, ids).backward()
    for block in model.blocks:
        cms = block.channel
        assert cms.log_lr.grad[1:].abs().min() > 0 and cms.log_lr.grad[0] == 0
        for level in cms.levels:
            assert level.gate_up.weight.grad.abs().sum() > 0 and level.down.weight.grad.abs().sum() > 0


def test_fixed_learning_rate_is_a_buffer():
    model = tiny(cms_learnable_lr=False, cms_lr=0.25)
    cms = model.blocks[0].channel
    assert "log_lr" not in dict(cms.named_parameters()) and torch.allclose(cms.log_lr.exp(), torch.tensor(0.25).double())


def test_nested_restarts_faster_levels_from_their_learned_start():
    ids = torch.randint(0, VOCAB, (2, 14))
    sequential = tiny(cms_periods=(3, 6))
    nested = tiny(cms_periods=(3, 6), cms_variant="nested")
    nested.load_state_dict(sequential.state_dict())
    a, b = sequential(ids), nested(ids)
    same = ((a.logits - b.logits).abs().amax(dim=(0, 2)) < 1e-12).tolist()
    assert same == [True] * 6 + [False] * 8
    with torch.no_grad():
        channel = nested(ids[:, :7]).state.layers[1].channel
    assert torch.equal(channel.levels[0].down, channel.starts[0].down)
    assert not torch.equal(channel.starts[0].down,
                           nested.blocks[1].channel.levels[0].down.weight.expand_as(channel.levels[0].down))


def test_independent_sums_levels_in_parallel_with_learnable_weights():
    model = tiny(cms_variant="independent")
    cms = model.blocks[0].channel
    with torch.no_grad():
        cms.mix.copy_(torch.tensor([0.5, -1.0, 2.0]))
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    y, _ = cms(x)
    expected = sum(w * torch.stack([level_swiglu(x[:, t], level.gate_up.weight, level.down.weight) for t in range(5)], 1)
                   for w, level in zip(cms.mix, cms.levels))
    torch.testing.assert_close(y, expected)
    sequential, _ = tiny().blocks[0].channel(x)
    assert not torch.allclose(y, sequential)


def test_one_static_level_is_the_swiglu_of_transformer():
    hope = tiny(cms_periods=(None,))
    transformer = build("transformer", None, vocab_size=VOCAB, d_model=16, n_layers=2, n_heads=2).double()
    renamed = {k.replace("channel.levels.0.", "channel."): v for k, v in hope.state_dict().items() if "log_lr" not in k}
    transformer.load_state_dict(renamed)
    ids = torch.randint(0, VOCAB, (2, 9))
    torch.testing.assert_close(hope(ids).logits, transformer(ids).logits, rtol=0, atol=0)
    assert hope.num_parameters() == transformer.num_parameters() + 2 * 1


def test_second_order_differs_from_first_order_and_passes_gradcheck():
    ids = torch.randint(0, 11, (1, 7))
    small = dict(vocab_size=11, d_model=4, n_layers=1, n_heads=1, cms_hidden=4, cms_lr=1.0)
    first, second = tiny(**small, cms_periods=(2,)), tiny(**small, cms_periods=(2,), cms_second_order=True)
    second.load_state_dict(first.state_dict())
    out_first, out_second = first(ids).logits, second(ids).logits
    torch.testing.assert_close(out_first, out_second, rtol=1e-13, atol=1e-15)
    g_first, g_second = grads_of(first, out_first, ids), grads_of(second, out_second, ids)
    assert max((a - b).abs().max().item() for a, b in zip(g_first, g_second)) > 1e-6

    second = tiny(**small, cms_periods=(2, 4), cms_second_order=True)
    names = ["blocks.0.channel.log_lr", "blocks.0.channel.levels.0.down.weight", "blocks.0.channel.levels.1.gate_up.weight"]
    params = dict(second.named_parameters())

    def loss(*tensors):
        swapped = {**params, **dict(zip(names, tensors))}
        logits = torch.func.functional_call(second, swapped, (ids,)).logits
        return outer_loss(logits, ids)

    inputs = tuple(params[n].detach().clone().requires_grad_() for n in names)
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("overrides,message", [
    (dict(cms_periods=(4, 6)), "divide"),
    (dict(cms_periods=(0,)), "positive"),
    (dict(cms_periods=()), "at least one"),
    (dict(cms_variant="stacked"), "cms_variant"),
    (dict(cms_levels=4), "cms_levels"),
    (dict(cms_lr=0.0), "cms_lr"),
])
def test_bad_cms_config_is_a_clear_error(overrides, message):
    with pytest.raises(HopeError, match=message):
        build("hope-attention", "tiny", vocab_size=VOCAB, **overrides)


def test_cms_levels_keeps_the_first_levels_with_the_parameters_of_the_static_mlp():
    full = build("hope-attention", "tiny", vocab_size=VOCAB)
    one = build("hope-attention", "tiny", vocab_size=VOCAB, cms_levels=1)
    transformer = build("transformer", "tiny", vocab_size=VOCAB)
    assert len(one.blocks[0].channel.levels) == 1 and one.cms_periods == (full.config.cms_periods[0],)
    assert one.num_parameters() == transformer.num_parameters() + 4
    assert full.num_parameters() == transformer.num_parameters() + 4 * 3


def test_after_is_the_identity_for_x_and_gives_its_anchors_no_gradient():
    from hope.models.hope.in_context import _After

    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    anchor = torch.randn(5, dtype=torch.float64, requires_grad=True)
    y = _After.apply(x, anchor)
    assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()
    gx, ga = torch.autograd.grad((y.square() * 3).sum(), (x, anchor), allow_unused=True, create_graph=True)
    torch.testing.assert_close(gx, 6 * x)
    assert ga is None
    (second,) = torch.autograd.grad(gx.sum(), x)
    torch.testing.assert_close(second, torch.full_like(x, 6.0))

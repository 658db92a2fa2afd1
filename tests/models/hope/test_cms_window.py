"""Window-aligned CMS steps (docs/cms.md, "Window-aligned steps") against the in-context steps of one long forward."""

import pytest
import torch
import torch.nn.functional as F
from torch.utils import _pytree as pytree

from hope.errors import HopeError
from hope.models import ModelState, build
from hope.models.hope.window import step_after_backward
from hope.optim import CMSOuterPeriods

VOCAB, T = 23, 4


def tiny(arch="hope-attention", **overrides):
    config = dict(vocab_size=VOCAB, d_model=16, n_layers=1, n_heads=2, cms_periods=(None, T, 2 * T), cms_lr=0.5)
    if arch == "hope":
        config.update(chunk_size=T, memory_chunk_size=T)
    config.update(overrides)
    return build(arch, None, **config).double()


def stream(model, ids, windows, state=None):
    """Read ``windows`` windows of ``T`` tokens with window-aligned steps, carrying the state undetached; each
    window's mean loss is back-propagated before its step. Returns the logits, the fast weights each window read
    and the state."""
    logits, read = [], []
    for j in range(windows):
        out = model(ids[:, j * T:(j + 1) * T], state=state, targets=ids[:, j * T + 1:(j + 1) * T + 1], window=True)
        out.loss.backward(retain_graph=True)
        read.append(fast(out.state))
        state = step_after_backward(model, out.state, ids.shape[0] * T)
        logits.append(out.logits)
    return torch.cat(logits, dim=1), read, state


def fast(state, layer=0):
    return {(i, k): w.detach().clone() for i, pair in state.layers[layer].channel.used.items()
            for k, w in enumerate(pair)}


def in_context_weights(state, layer=0):
    return {(i, k): w for i, pair in state.layers[layer].channel.levels.items() for k, w in enumerate(pair)}


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("arch,overrides", [
    ("hope-attention", dict(n_layers=2, cms_periods=(None, T))),       # period == window: exact at any depth
    ("hope-attention", dict(cms_periods=(T, 2 * T, 4 * T))),           # longer periods, one layer (see docstring)
    ("hope-attention", dict(cms_periods=(2 * T, None), cms_variant="independent")),
    ("hope", dict(cms_periods=(T, 2 * T))),
    ("hope", dict(n_layers=2, cms_periods=(T, 2 * T), cms_grad_window=T)),      # truncated like the windows
    ("hope-attention", dict(n_layers=2, cms_periods=(T, 4 * T), cms_grad_window=T)),
])
def test_window_steps_equal_in_context_steps(arch, overrides):
    """Outputs, fast weights and outer gradients (parameters, initial states, learning rates) of windows with
    window-aligned steps equal those of one long in-context forward. With periods longer than a window the
    window path drops the gradient paths from a window's loss through the mixer state into earlier windows of
    the period: with one layer the CMS sits above the only mixer, so there are none and both are exact; with
    more, the in-context step drops them too when ``cms_grad_window`` is the window."""
    windows = 4
    model = tiny(arch, **overrides)
    ids = torch.randint(0, VOCAB, (2, windows * T + 1))
    params = [p for p in model.parameters() if p.requires_grad]
    reference = model(ids[:, :-1])
    loss = F.cross_entropy(reference.logits.flatten(0, 1), ids[:, 1:].flatten()) * windows
    expected = torch.autograd.grad(loss, params)
    read_in_context = [in_context_weights(model(ids[:, :j * T + 1]).state) for j in range(1, windows)]

    logits, read, _ = stream(model, ids, windows)
    torch.testing.assert_close(logits, reference.logits, rtol=1e-10, atol=1e-12)
    for window_read, in_context_read in zip(read[1:], read_in_context):
        assert_same(window_read, in_context_read)
    assert any((read[-1][key] - read[0][key]).abs().max() > 1e-6 for key in read[0])   # the levels did step
    for p, g in zip(params, expected):
        torch.testing.assert_close(p.grad, g, rtol=1e-9, atol=1e-12)
    lr_grads = [block.channel.log_lr.grad for block in model.blocks]
    assert all(g.abs().max() > 0 for g in lr_grads)


def concat(a: ModelState, b: ModelState) -> ModelState:
    """The rows of ``a`` then those of ``b`` (states of the same model; positions may differ per row)."""
    layers = pytree.tree_map(lambda x, y: torch.cat([x, y]) if isinstance(x, torch.Tensor) else x, a.layers, b.layers)
    return ModelState(a.position, layers)


def test_rows_at_different_positions_step_at_their_own_boundaries():
    """Row 0 reads document A from its start; row 1 starts document B one window later (as a row the stream
    resets): in the joint batch they reach the boundaries of the period-2T level at different windows, and each
    row equals its own document read alone by the in-context forward."""
    model = tiny("hope", cms_periods=(T, 2 * T))
    doc_a, doc_b = torch.randint(0, VOCAB, (1, 4 * T + 1)), torch.randint(0, VOCAB, (1, 3 * T + 1))
    with torch.no_grad():
        expected_a, expected_b = model(doc_a[:, :-1]).logits, model(doc_b[:, :-1]).logits
    _, _, state_a = stream(model, doc_a, 2)
    _, _, state_b = stream(model, doc_b, 1)
    rows = torch.cat([doc_a[:, 2 * T:], doc_b[:, T:]])
    logits, _, state = stream(model, rows, 2, state=concat(state_a, state_b))
    torch.testing.assert_close(logits[0], expected_a[0, 2 * T:], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(logits[1], expected_b[0, T:], rtol=1e-10, atol=1e-12)
    window_state = state.layers[0].channel
    assert window_state.tokens.tolist() == [4 * T, 3 * T]
    pending = window_state.grads[1].gate_up
    assert pending[0].abs().max() == 0 and pending[1].abs().max() > 0   # row 0 just stepped, row 1 is mid-period


def test_zeroed_rows_restart_their_documents():
    """Zeroing a row's CMS window tensors gives the state of a fresh row (the stream's per-row reset)."""
    model = tiny()
    ids = torch.randint(0, VOCAB, (2, 2 * T + 1))
    _, _, state = stream(model, ids, 2)
    cms = model.blocks[0].channel
    zeroed = pytree.tree_map(lambda t: t * 0 if isinstance(t, torch.Tensor) else t, state.layers[0].channel)
    fresh = cms.window_state(2)
    assert zeroed.tokens.tolist() == fresh.tokens.tolist()
    for a, b in zip(pytree.tree_leaves(zeroed.sums) + pytree.tree_leaves(zeroed.grads),
                    pytree.tree_leaves(fresh.sums) + pytree.tree_leaves(fresh.grads)):
        assert torch.equal(a, b)


def test_window_state_saves_and_loads(tmp_path):
    model = tiny()
    ids = torch.randint(0, VOCAB, (2, 3 * T + 1))
    _, _, state = stream(model, ids, 1)
    state.save(tmp_path / "s.safetensors")
    loaded, _ = ModelState.load(tmp_path / "s.safetensors", model)
    window = ids[:, T:2 * T]
    torch.testing.assert_close(model(window, state=loaded, window=True).logits,
                               model(window, state=state.detach(), window=True).logits, rtol=0, atol=0)


@pytest.mark.parametrize("overrides,length,message", [
    (dict(cms_variant="nested"), T, "sequential/independent only"),
    (dict(cms_second_order=True), T, "first order"),
    (dict(), T + 1, "window lengths must divide every period"),
])
def test_unsupported_windows_are_a_clear_error(overrides, length, message):
    model = tiny(**overrides)
    with pytest.raises(HopeError, match=message):
        model(torch.randint(0, VOCAB, (2, length)), window=True)


def test_misuse_is_a_clear_error():
    model = tiny()
    ids = torch.randint(0, VOCAB, (2, T))
    with pytest.raises(HopeError, match="loss.backward"):
        step_after_backward(model, model(ids, window=True).state, 2 * T)
    with pytest.raises(HopeError, match="needs the state returned by"):
        step_after_backward(model, model(ids).state, 2 * T)
    with torch.no_grad(), pytest.raises(HopeError, match="autograd enabled"):
        model(ids, window=True)
    with pytest.raises(HopeError, match="window=True continues only"):
        model(ids, state=model(ids).state, window=True)
    with pytest.raises(HopeError, match="continue it with window=True"):
        model(ids, state=model(ids, window=True).state)


def test_outer_loop_periods_hold_back_levels_under_window_steps():
    """``--cms-outer-periods`` with window-aligned steps: level 1's parameters (outer period 2) move only at
    every second optimizer step, level 0's at every step, while both levels' fast weights step in context."""
    model = tiny(cms_periods=(T, T))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    held = CMSOuterPeriods(model, (1, 2))
    ids = torch.randint(0, VOCAB, (2, 2 * T + 1))
    levels = model.blocks[0].channel.levels
    state, before = None, [levels[i].gate_up.weight.detach().clone() for i in (0, 1)]
    for j, level_1_moves in enumerate((False, True)):
        out = model(ids[:, j * T:(j + 1) * T], state=state, targets=ids[:, j * T + 1:(j + 1) * T + 1], window=True)
        optimizer.zero_grad()
        out.loss.backward()
        state = step_after_backward(model, out.state, 2 * T).detach()
        held.hold_back()
        optimizer.step()
        after = [levels[i].gate_up.weight.detach().clone() for i in (0, 1)]
        assert not torch.equal(after[0], before[0]) and torch.equal(after[1], before[1]) != level_1_moves
        before = after
    assert all(total.abs().max() > 0 for pair in state.layers[0].channel.sums.values() for total in pair)


def test_streamed_evaluation_steps_like_one_long_forward_per_document():
    """``evaluate_lm_streamed`` with periods that the window divides takes window-aligned steps from each window's
    loss: its summed loss equals one in-context forward over each document (two ragged documents, one row, so
    the second restarts the row), and evaluation leaves no gradient on the parameters."""
    import numpy as np

    from hope.data.dataset import TokenSplit
    from hope.eval.perplexity import evaluate_lm_streamed

    model = tiny("hope", cms_periods=(T, 2 * T))
    eot = VOCAB - 1
    documents = [torch.randint(0, eot, (4 * T,)), torch.randint(0, eot, (3 * T + 2,))]
    for document in documents:
        document[-1] = eot
    split = TokenSplit(torch.cat(documents).numpy(), n_bytes=7 * T + 2, document_starts=np.array([0, 4 * T]))
    assert model.window_aligned(T)
    result = evaluate_lm_streamed(model, split, seq_len=T, eot_id=eot, batch_size=1)
    expected = 0.0
    with torch.no_grad():
        for document in documents:
            inputs = torch.cat([torch.tensor([eot]), document[:-1]])[None]
            expected += F.cross_entropy(model(inputs).logits[0], document, reduction="sum").item()
    assert result.tokens == 7 * T + 2
    assert result.loss * result.tokens == pytest.approx(expected, rel=1e-10)
    assert all(p.grad is None for p in model.parameters())

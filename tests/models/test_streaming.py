"""Streaming a model window after window (docs/training.md, streaming), for every architecture, in float64:
carried states continue the sequence exactly, restarts reset exactly the rows that start a document (pending
CMS steps included), truncated gradients equal per-window gradients with detached states, and the parameters
that start a fast weight keep a gradient of identity Jacobian."""

import dataclasses

import pytest
import torch

from hope.models import ARCHS, build

VOCAB, WINDOW, WINDOWS, BATCH = 29, 8, 4, 3
RESTARTS_EACH_WINDOW = ("transformer",)
"""Archs whose only state is an attention cache, which restarts at every window."""


def small(arch):
    fields = {f.name for f in dataclasses.fields(ARCHS[arch])}
    config = dict(vocab_size=VOCAB, d_model=16, n_layers=2, n_heads=2)
    config.update({name: 4 for name in fields if name.endswith("chunk_size")})
    if "cms_periods" in fields:
        config.update(cms_periods=(None, 4, 8), cms_lr=0.5)
    return build(arch, None, **config).double()


@pytest.fixture(params=sorted(ARCHS))
def arch(request):
    return request.param


def stream(model, ids, restarts=None):
    """Logits of ``ids`` read window by window with the state carried; ``restarts[k]``: rows restarting at k."""
    state, logits = None, []
    for k in range(ids.shape[1] // WINDOW):
        rows = torch.zeros(ids.shape[0], dtype=torch.bool) if restarts is None else restarts[k]
        out = model(ids[:, k * WINDOW:(k + 1) * WINDOW], state=model.window_state(state, rows))
        logits.append(out.logits)
        state = out.state.detach()
    return torch.cat(logits, dim=1)


def test_window_is_aligned(arch):
    assert WINDOW % small(arch).window_multiple() == 0


def test_streamed_windows_equal_one_long_forward(arch):
    model = small(arch)
    ids = torch.randint(0, VOCAB, (BATCH, WINDOW * WINDOWS))
    streamed = stream(model, ids)
    if arch in RESTARTS_EACH_WINDOW:
        expected = torch.cat([model(ids[:, k * WINDOW:(k + 1) * WINDOW]).logits for k in range(WINDOWS)], dim=1)
    else:
        expected = model(ids).logits
    if arch == "hope-attention":
        # attention restarts at each window, the CMS fast weights carry on: the first window matches a fresh
        # forward and later windows differ from one long forward (attention sees only its window)
        torch.testing.assert_close(streamed[:, :WINDOW], expected[:, :WINDOW], rtol=0, atol=1e-10)
        assert not torch.allclose(streamed[:, WINDOW:], expected[:, WINDOW:])
        return
    torch.testing.assert_close(streamed, expected, rtol=0, atol=1e-10)


def test_restart_resets_exactly_the_rows_that_start_a_document(arch):
    model = small(arch)
    ids = torch.randint(0, VOCAB, (BATCH, WINDOW * WINDOWS))
    restarts = [torch.tensor([False, k == 2, k == 1]) for k in range(WINDOWS)]
    streamed = stream(model, ids, restarts)
    undisturbed = stream(model, ids)
    torch.testing.assert_close(streamed[0], undisturbed[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(streamed[1, :2 * WINDOW], undisturbed[1, :2 * WINDOW], rtol=0, atol=1e-12)
    torch.testing.assert_close(streamed[2, :WINDOW], undisturbed[2, :WINDOW], rtol=0, atol=1e-12)
    # a restarted row reads on as a fresh sequence (at position 0) would; BDH's RoPE angles are computed in
    # float32, so its keys at position 2 W differ from those at 0 by float32 rounding of the angles
    tolerance = 1e-6 if arch == "bdh" else 1e-10
    torch.testing.assert_close(streamed[1:2, 2 * WINDOW:], stream(model, ids[1:2, 2 * WINDOW:]),
                               rtol=0, atol=tolerance)
    torch.testing.assert_close(streamed[2:3, WINDOW:], stream(model, ids[2:3, WINDOW:]), rtol=0, atol=tolerance)
    if arch not in RESTARTS_EACH_WINDOW:
        assert not torch.allclose(streamed[2, WINDOW:], undisturbed[2, WINDOW:])


def test_truncated_gradients_equal_per_window_gradients_with_detached_states(arch):
    model = small(arch)
    ids = torch.randint(0, VOCAB, (BATCH, WINDOW * 3 + 1))
    params = [p for p in model.parameters()]
    state, previous = None, None
    for k in range(3):
        window, targets = ids[:, k * WINDOW:(k + 1) * WINDOW], ids[:, k * WINDOW + 1:(k + 1) * WINDOW + 1]
        rows = torch.zeros(BATCH, dtype=torch.bool)
        out = model(window, state=model.window_state(state, rows), targets=targets)
        streamed = torch.autograd.grad(out.loss, params, allow_unused=True, retain_graph=True)
        # reference: the previous window's state rebuilt from plain values (no graph), carried the same way
        rebuilt = None if previous is None else previous.map_tensors(lambda t: t.detach().clone())
        reference = model(window, state=model.window_state(rebuilt, rows), targets=targets)
        expected = torch.autograd.grad(reference.loss, params, allow_unused=True)
        for got, want in zip(streamed, expected):
            if want is None:
                assert got is None
            else:
                torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        previous = state = out.state  # window_state cuts the graph: nothing flows back into this window


def test_parameters_that_start_fast_weights_get_the_identity_jacobian():
    """Window 3 of Hope: d loss / d parameter = direct gradient + sum over rows of d loss / d carried weight. The
    window ends where every CMS level steps, a step that needs the next window's first token: the next call
    replays from the oldest snapshot, so the carried weight that matters is the snapshot's."""
    model = small("hope")
    ids = torch.randint(0, VOCAB, (BATCH, 3 * WINDOW + 1))
    rows = torch.zeros(BATCH, dtype=torch.bool)
    first = model(ids[:, :WINDOW]).state.detach()
    first = model(ids[:, WINDOW:2 * WINDOW], state=model.window_state(first, rows)).state.detach()
    window, targets = ids[:, 2 * WINDOW:3 * WINDOW], ids[:, 2 * WINDOW + 1:3 * WINDOW + 1]
    level = model.blocks[0].channel.levels[1].gate_up.weight
    carried = model(window, state=model.window_state(first, rows), targets=targets)
    (through_state,) = torch.autograd.grad(carried.loss, [level])
    start = model.window_state(first, rows)
    oldest = start.snapshots[0]
    channel = oldest.layers[0].channel
    leaf = channel.levels[1].gate_up.detach().clone().requires_grad_()
    layers = [oldest.layers[0]._replace(channel=channel._replace(
        levels={**channel.levels, 1: channel.levels[1]._replace(gate_up=leaf)})), *oldest.layers[1:]]
    snapshots = [dataclasses.replace(oldest, layers=layers), *start.snapshots[1:]]
    frozen = model(window, state=dataclasses.replace(start, snapshots=snapshots), targets=targets)
    direct, weight = torch.autograd.grad(frozen.loss, [level, leaf], allow_unused=True)
    direct = torch.zeros_like(level) if direct is None else direct
    assert weight.abs().sum() > 0
    torch.testing.assert_close(through_state, direct + weight.sum(0), rtol=0, atol=1e-12)


def test_a_model_without_test_time_learning_streams_like_one_long_forward():
    model = build("hope", None, vocab_size=VOCAB, d_model=16, n_layers=2, n_heads=2, chunk_size=4,
                  memory_chunk_size=4, cms_periods=(None, 4, 8), test_time_learning=False).double()
    ids = torch.randint(0, VOCAB, (BATCH, WINDOW * WINDOWS))
    torch.testing.assert_close(stream(model, ids), model(ids).logits, rtol=0, atol=1e-10)

"""``hope.compiling``: the switch, and a compiled Hope model computing what the eager one does (outputs and
gradients, with CMS steps that take several backwards through one graph, and with second-order steps, which run
eagerly)."""

import pytest
import torch
from torch._dynamo.utils import counters

from hope.compiling import compilable, compiling, compiling_enabled, set_compiling
from hope.models import build


@pytest.mark.slow
def test_switch_and_context_restore():
    calls = []

    @compilable
    def double(x):
        calls.append(torch.compiler.is_compiling())
        return 2 * x

    assert not compiling_enabled()
    assert double(torch.ones(2)).tolist() == [2.0, 2.0] and calls == [False]
    with compiling():
        assert compiling_enabled()
        with compiling(False):
            assert not compiling_enabled()
        assert compiling_enabled()
    assert not compiling_enabled()
    set_compiling(True)
    try:
        assert double(torch.ones(2)).tolist() == [2.0, 2.0] and calls[-1] is True
    finally:
        set_compiling(False)


def _logits_and_grads(model, ids):
    out = model(ids[:, :-1], targets=ids[:, 1:])
    out.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out.logits.detach(), grads


@pytest.mark.slow
@pytest.mark.parametrize("second_order", [False, True])
def test_compiled_hope_matches_eager(second_order):
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = build("hope", None, vocab_size=32, d_model=16, n_layers=2, n_heads=2, chunk_size=8,
                  memory_chunk_size=4, cms_periods=(None, 4, 8), cms_second_order=second_order)
    ids = torch.randint(0, 32, (1, 21))
    eager_logits, eager_grads = _logits_and_grads(model, ids)
    with compiling():
        logits, grads = _logits_and_grads(model, ids)
    assert (counters["stats"]["unique_graphs"] > 0) != second_order  # second order runs eagerly
    torch.testing.assert_close(logits, eager_logits, rtol=1e-4, atol=1e-5)
    assert grads.keys() == eager_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, eager_grads[name], rtol=1e-3, atol=1e-5, msg=name)

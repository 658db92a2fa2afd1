"""The contract every registered architecture keeps (issue 5), parametrised over ``hope.models.ARCHS``.

Causality, batch isolation, prefill + token-by-token decode == one full forward, ModelState save/load and row
selection,
gradients to every parameter (meta-learned initial states included), and ``test_time_learning=False``
freezing every in-context update. Configs are tiny and float64; chunk sizes and CMS periods are made
small so that chunks and boundaries fall inside the test sequences at ragged positions.
"""

import dataclasses

import pytest
import torch

from hope.models import ARCHS, ModelState, build

VOCAB, LENGTH = 29, 17


def small(arch, **overrides):
    fields = {f.name for f in dataclasses.fields(ARCHS[arch])}
    config = dict(vocab_size=VOCAB, d_model=16, n_layers=2, n_heads=2)
    config.update({name: 4 for name in fields if name.endswith("chunk_size")})
    if "cms_periods" in fields:
        config.update(cms_periods=(None, 3, 6), cms_lr=0.5)
    config.update(overrides)
    return build(arch, None, **config).double()


def learns_in_context(arch):
    return "test_time_learning" in {f.name for f in dataclasses.fields(ARCHS[arch])}


@pytest.fixture(params=sorted(ARCHS))
def arch(request):
    return request.param


def test_causal(arch):
    model = small(arch)
    ids = torch.randint(0, VOCAB, (2, LENGTH))
    base = model(ids).logits
    for j in (0, 3, 6, 11, LENGTH - 1):
        changed = ids.clone()
        changed[0, j] = (changed[0, j] + 1) % VOCAB
        out = model(changed).logits
        torch.testing.assert_close(out[0, :j], base[0, :j], rtol=0, atol=1e-12)
        assert not torch.allclose(out[0, j], base[0, j])


def test_batch_isolated(arch):
    model = small(arch)
    ids = torch.randint(0, VOCAB, (3, LENGTH))
    base = model(ids).logits
    changed = ids.clone()
    changed[1] = torch.randint(0, VOCAB, (LENGTH,))
    out = model(changed).logits
    torch.testing.assert_close(out[[0, 2]], base[[0, 2]], rtol=0, atol=1e-12)
    assert not torch.allclose(out[1], base[1])


@pytest.mark.parametrize("split", [1, 5, 7, 13])
def test_prefill_then_decode_equals_full_forward(arch, split):
    model = small(arch)
    ids = torch.randint(0, VOCAB, (2, LENGTH))
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :split])
        pieces, state = [out.logits], out.state
        for t in range(split, LENGTH):
            out = model(ids[:, t : t + 1], state=state)
            pieces.append(out.logits)
            state = out.state
    assert state.position == LENGTH
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-9, atol=1e-10)


def test_state_save_load_round_trip(arch, tmp_path):
    model = small(arch)
    ids = torch.randint(0, VOCAB, (2, LENGTH))
    with torch.no_grad():
        full = model(ids).logits
        state = model(ids[:, :9]).state
        state.save(tmp_path / "state.safetensors")
        loaded, _ = ModelState.load(tmp_path / "state.safetensors", model)
        assert loaded.position == 9 and loaded.tensors().keys() == state.tensors().keys()
        for key, tensor in state.tensors().items():
            assert torch.equal(loaded.tensors()[key], tensor), key
        rest = model(ids[:, 9:], state=loaded).logits
    torch.testing.assert_close(rest, full[:, 9:], rtol=1e-9, atol=1e-10)


def test_selected_rows_continue_as_their_sequences(arch):
    """``ModelState.select`` keeps the state of some sequences of a batch (streaming training drops the rows
    that reach a document end); ``detach`` and ``to`` keep it usable."""
    model = small(arch)
    ids = torch.randint(0, VOCAB, (3, LENGTH))
    full = model(ids).logits
    state = model(ids[:, :9]).state
    assert any(t.requires_grad for t in state.tensors().values())
    kept = state.detach().to("cpu").select([2, 0])
    assert kept.position == 9 and not any(t.requires_grad for t in kept.tensors().values())
    assert all(t.shape[0] == 2 for t in kept.tensors().values())
    rest = model(ids[[2, 0], 9:], state=kept).logits
    torch.testing.assert_close(rest, full[[2, 0], 9:].detach(), rtol=1e-9, atol=1e-10)


def test_gradients_reach_every_parameter(arch):
    model = small(arch)
    ids = torch.randint(0, VOCAB, (2, LENGTH))
    model(ids[:, :-1], targets=ids[:, 1:]).loss.backward()
    unread = {f"blocks.{i}.channel_norm.weight" for i, block in enumerate(model.blocks)
              if not list(block.channel.parameters())}  # the norm in front of an empty channel (bdh)
    missing = [name for name, p in model.named_parameters()
               if name not in unread and p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, missing


def fixed_size_state(model, ids):
    """State entries whose shape does not grow with the input (memory weights, fast weights, conv tails)."""
    with torch.no_grad():
        state = model(ids).state.tensors()
        longer = model(torch.cat([ids, ids[:, :1]], dim=1)).state.tensors()
    return {k: v for k, v in state.items() if k in longer and longer[k].shape == v.shape}


def test_test_time_learning_false_freezes_in_context_updates(arch):
    """A fixed-size state entry that depends on a token 12 positions back is something learned in context
    (conv tails and other windows only reach a few tokens back): with learning off there is none."""
    if not learns_in_context(arch):
        pytest.skip(f"{arch} does not learn in context")
    ids = torch.randint(0, VOCAB, (2, 13))
    changed = ids.clone()
    changed[:, 0] = (changed[:, 0] + 1) % VOCAB
    learning = small(arch)
    frozen = small(arch, test_time_learning=False)
    frozen.load_state_dict(learning.state_dict())

    def depends_on_first_token(model):
        a, b = fixed_size_state(model, ids), fixed_size_state(model, changed)
        return sorted(k for k in a if not torch.allclose(a[k], b[k], rtol=0, atol=1e-13))

    assert depends_on_first_token(learning), "with test_time_learning=True something should learn in context"
    assert depends_on_first_token(frozen) == []
    with torch.no_grad():
        assert not torch.allclose(learning(ids).logits, frozen(ids).logits)

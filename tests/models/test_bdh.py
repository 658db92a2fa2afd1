"""BDH (arXiv 2509.26507, BDH-GPU): the layer against the paper's quadratic form, the recurrent form against the
parallel one (outputs and gradients), weights shared across layers, parameter counts, checkpoints and
``hope generate --state``."""

import pytest
import torch
import torch.nn.functional as F

from hope.checkpoint import load_checkpoint, save_checkpoint
from hope.cli import main
from hope.data.tokenizer import BytesTokenizer
from hope.errors import HopeError
from hope.layers.attention import rotary
from hope.models import ModelState, build, make_config
from hope.models.bdh import BDHLayer, NoChannel

VOCAB = 31


def tiny(**overrides):
    config = dict(vocab_size=VOCAB, d_model=16, n_layers=3, n_heads=2, n_neurons=24, chunk_size=4)
    config.update(overrides)
    torch.manual_seed(0)
    return build("bdh", None, **config).double()


def quadratic(layer: BDHLayer, x: torch.Tensor) -> torch.Tensor:
    """The BDH-GPU layer in its parallel (attention) form, written from the paper: scores ``k_t . k_tau`` of the
    RoPE'd sparse neurons for ``tau < t`` only, reads ``sum_tau score * x_tau``, then the gated ``x * y`` decoder."""
    w = layer._shared[0]
    b, t, d = x.shape
    h, n = w.n_heads, w.per_head
    x_sparse = F.relu(x @ w.x_neurons.weight.T).view(b, t, h, n).transpose(1, 2)  # [B, H, T, N]
    keys = rotary(x_sparse, 0, w.rope_theta)
    scores = (keys @ keys.transpose(-1, -2)).tril(diagonal=-1)
    reads = scores @ x.unsqueeze(1)  # [B, H, T, D]
    y_sparse = F.relu(w.read_norm(reads) @ w.y_neurons.weight.view(h, n, d).transpose(-1, -2).unsqueeze(0))
    gated = (x_sparse * y_sparse).transpose(1, 2).reshape(b, t, h * n)
    return w.out_norm(gated @ w.readout.weight.T)


@pytest.mark.parametrize("length,chunk_size", [(1, 4), (13, 4), (16, 16), (21, 64)])
def test_layer_matches_the_quadratic_form_outputs_and_gradients(length, chunk_size):
    layer = tiny(chunk_size=chunk_size).blocks[1].mixer
    weights = layer._shared[0]
    for p in weights.parameters():  # random gains too (the LM init is tested through the model)
        torch.nn.init.normal_(p, std=0.3)
    x = torch.randn(2, length, 16, dtype=torch.float64, requires_grad=True)
    y, state = layer(x)
    expected = quadratic(layer, x)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)
    weight = torch.randn_like(y)
    params = [x, *weights.parameters()]
    for got, want in zip(torch.autograd.grad((y * weight).sum(), params),
                         torch.autograd.grad((expected * weight).sum(), params)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)
    assert state.synapses.shape == (2, 2, 16, 12)


def test_recurrent_form_equals_parallel_form_outputs_and_gradients():
    """Token by token through the synaptic state (``mode="recurrent"``) against one chunk-parallel pass, with
    gradients through the carried state."""
    model = tiny()
    ids = torch.randint(0, VOCAB, (2, 19))
    targets = torch.randint(0, VOCAB, (2, 19))
    parallel = model(ids)
    pieces, state = [], None
    for t in range(ids.shape[1]):
        out = model(ids[:, t : t + 1], state=state)
        pieces.append(out.logits)
        state = out.state
    recurrent = torch.cat(pieces, dim=1)
    torch.testing.assert_close(recurrent, parallel.logits, rtol=1e-10, atol=1e-11)
    for name, tensor in state.tensors().items():
        torch.testing.assert_close(tensor, parallel.state.tensors()[name], rtol=1e-10, atol=1e-11)
    params = list(model.parameters())
    grads = [torch.autograd.grad(F.cross_entropy(logits.flatten(0, 1), targets.flatten()), params,
                                 allow_unused=True, materialize_grads=True)
             for logits in (parallel.logits, recurrent)]
    for name, got, want in zip((n for n, _ in model.named_parameters()), *grads):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11, msg=name)


def test_decoding_state_does_not_grow():
    model = tiny()
    ids = torch.randint(0, VOCAB, (1, 40))
    with torch.no_grad():
        state = model(ids[:, :5]).state
        shapes = {k: v.shape for k, v in state.tensors().items()}
        for t in range(5, 40):
            state = model(ids[:, t : t + 1], state=state).state
    assert {k: v.shape for k, v in state.tensors().items()} == shapes
    assert set(shapes) == {f"layers.{i}.mixer.synapses" for i in range(3)}


def test_one_set_of_weights_serves_every_layer():
    model = tiny()
    shared = model.blocks[0].mixer.neurons
    assert all(block.mixer._shared[0] is shared for block in model.blocks)
    assert all(isinstance(block.channel, NoChannel) for block in model.blocks)
    names = [n for n in model.state_dict() if ".mixer." in n]
    assert names and all(n.startswith("blocks.0.mixer.neurons.") for n in names)
    assert shared.x_neurons.weight.dtype == torch.float64
    # Two models from one config do not share weights.
    config = make_config("bdh", None, d_model=16, n_layers=2, n_heads=2, n_neurons=8)
    from hope.models import LanguageModel
    first, second = LanguageModel(config), LanguageModel(config)
    assert first.blocks[1].mixer._shared[0] is not second.blocks[1].mixer._shared[0]


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_parameters_match_the_transformer(size):
    count, reference = (build(a, size, vocab_size=4096).num_parameters() for a in ("bdh", "transformer"))
    assert abs(count - reference) / reference < 0.01, (count, reference)


def test_checkpoint_round_trip(tmp_path):
    model = tiny(vocab_size=257).float()
    ids = torch.randint(0, 257, (2, 11))
    save_checkpoint(tmp_path / "ckpt", model, BytesTokenizer())
    loaded, _, _ = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
        state = model(ids[:, :6]).state
        state.save(tmp_path / "state.safetensors")
        restored, _ = ModelState.load(tmp_path / "state.safetensors", loaded)
        torch.testing.assert_close(loaded(ids[:, 6:], state=restored).logits, model(ids).logits[:, 6:])


def test_generate_with_state(tmp_path, capsys):
    torch.manual_seed(0)
    model = build("bdh", None, vocab_size=257, d_model=16, n_layers=2, n_heads=2, n_neurons=32)
    save_checkpoint(tmp_path / "ckpt", model, BytesTokenizer())
    state = str(tmp_path / "state.safetensors")
    for prompt, tokens, seen in (("Dragon", "4", 10), (" egg", "3", 17)):
        assert main(["generate", "--checkpoint", str(tmp_path / "ckpt"), "--prompt", prompt,
                     "--max-new-tokens", tokens, "--state", state]) == 0
        out, err = capsys.readouterr()
        assert out.startswith(prompt)
    assert f"state after {seen} tokens" in err


@pytest.mark.parametrize("field,value", [("n_neurons", 0), ("n_neurons", 6), ("chunk_size", 0), ("rope_theta", 1.0)])
def test_bad_fields_raise_one_clear_error(field, value):
    with pytest.raises(HopeError, match=field):
        make_config("bdh", "tiny", **{field: value})

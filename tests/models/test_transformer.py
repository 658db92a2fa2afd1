import pytest
import torch

from hope.errors import HopeError
from hope.generate import generate, sample_next
from hope.models import LanguageModel, build, make_config


def tiny(**overrides):
    return build("transformer", "tiny", vocab_size=97, d_model=32, n_layers=2, n_heads=4, **overrides)


def test_forward_shapes_and_loss():
    model = tiny()
    ids = torch.randint(0, 97, (3, 11))
    out = model(ids, targets=ids)
    assert out.logits.shape == (3, 11, 97)
    assert out.state.position == 11 and len(out.state.layers) == 2
    assert out.state.layers[0].mixer.keys.shape == (3, 4, 11, 8)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)


def test_presets_have_the_advertised_parameter_counts():
    assert 1e6 <= build("transformer", "tiny", vocab_size=4096).num_parameters() <= 3e6
    assert 10e6 <= build("transformer", "small", vocab_size=4096).num_parameters() <= 20e6
    with torch.device("meta"):
        for size, target in (("760m", 760e6), ("1.3b", 1.3e9)):
            count = LanguageModel(make_config("transformer", size, vocab_size=32000)).num_parameters()
            assert abs(count - target) / target < 0.05, (size, count)


def test_causal_and_batch_isolated():
    model = tiny().double()
    ids = torch.randint(0, 97, (2, 12))
    base = model(ids).logits
    changed = ids.clone()
    changed[0, 7] = (changed[0, 7] + 1) % 97
    out = model(changed).logits
    assert torch.equal(out[0, :7], base[0, :7]) and not torch.allclose(out[0, 7:], base[0, 7:])
    assert torch.equal(out[1], base[1])


@pytest.mark.parametrize("split", [1, 5, 11])
def test_prefill_then_decode_equals_full_forward(split):
    model = tiny().double()
    ids = torch.randint(0, 97, (2, 12))
    full = model(ids).logits
    out = model(ids[:, :split])
    pieces, state = [out.logits], out.state
    for t in range(split, 12):
        out = model(ids[:, t : t + 1], state=state)
        pieces.append(out.logits)
        state = out.state
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-10, atol=1e-10)


def test_kv_cache_generation_equals_uncached_greedy_generation():
    model = tiny()
    prompt = torch.randint(0, 97, (2, 5))
    cached = generate(model, prompt, 12, temperature=0)
    uncached = generate(model, prompt, 12, temperature=0, use_state=False)
    assert torch.equal(cached, uncached)
    assert cached.shape == (2, 17)


def test_sampling_filters():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    g = torch.Generator().manual_seed(0)
    assert {int(sample_next(logits, top_k=1, generator=g)) for _ in range(20)} == {3}
    assert {int(sample_next(logits, top_p=0.5, generator=g)) for _ in range(50)} <= {2, 3}
    assert int(sample_next(logits, temperature=0)) == 3
    with pytest.raises(ValueError, match="top_p"):
        sample_next(logits, top_p=1.5)


def test_bad_configs_and_inputs():
    with pytest.raises(HopeError, match="unknown arch"):
        build("gpt5")
    with pytest.raises(HopeError, match="unknown size"):
        build("transformer", "huge")
    with pytest.raises(HopeError, match="divisible"):
        build("transformer", "tiny", d_model=30, n_heads=4)
    with pytest.raises(HopeError, match="unknown config field"):
        build("transformer", "tiny", colour="blue")
    with pytest.raises(ValueError, match="input_ids"):
        tiny()(torch.zeros(2, 3))

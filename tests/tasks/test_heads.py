"""Task heads read the model's hidden states from ``output_hidden_states`` (no hooks)."""

import pytest
import torch

from hope.models import build
from hope.tasks.heads import Predictor, ReconstructionDecoder


@pytest.mark.parametrize("arch, overrides", [
    ("transformer", {}),
    ("hope", {"cms_periods": (4, 8)}),
])
def test_hidden_states_are_the_head_input(arch, overrides):
    model = build(arch, "tiny", vocab_size=19, d_model=16, n_layers=1, n_heads=2, **overrides)
    ids = torch.randint(0, 19, (2, 10))
    out = model(ids, output_hidden_states=True)
    assert out.hidden_states.shape == (2, 10, 16)
    torch.testing.assert_close(model.head(out.hidden_states), out.logits)
    assert model(ids).hidden_states is None


def test_predictor_decodes_from_the_last_hidden_state_without_hooks():
    model = build("transformer", "tiny", vocab_size=11, d_model=16, n_layers=1, n_heads=2)
    decoder = ReconstructionDecoder(16, 11, 8)
    ids = torch.randint(0, 11, (3, 8))
    logits = Predictor(model, decoder).logits(ids)
    expected = decoder(model(ids, output_hidden_states=True).hidden_states[:, -1], 8)
    torch.testing.assert_close(logits, expected)
    assert not model.head._forward_pre_hooks


@pytest.mark.parametrize("arch", ["gated-deltanet", "hope"])
def test_chunked_prediction_scores_each_answer_token_as_one_full_forward_would(arch):
    """The answer loss of an evaluation read in chunks (state carried) is the per-token cross-entropy of one full
    forward at the answer positions, and zero elsewhere; so are the argmax ids (float64, ragged last chunk)."""
    torch.manual_seed(0)
    model = build(arch, "tiny", vocab_size=13, d_model=16, n_layers=1, n_heads=2, chunk_size=4).double().eval()
    ids = torch.randint(0, 13, (2, 11))
    targets = torch.full((2, 11), -100)
    targets[0, 3], targets[1, 9], targets[1, 10] = 5, 7, 2
    full = model(ids).logits
    predicted, nll = Predictor(model, None).predict(ids, chunk=4, targets=targets)
    assert torch.equal(predicted, full.argmax(-1))
    expected = torch.zeros(2, 11, dtype=torch.float64)
    for b, t in [(0, 3), (1, 9), (1, 10)]:
        expected[b, t] = -torch.log_softmax(full[b, t], -1)[targets[b, t]]
    torch.testing.assert_close(nll, expected.float(), rtol=1e-5, atol=1e-6)
    assert Predictor(model, None).predict(ids, chunk=4)[1] is None

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

"""Checkpoints and state files written before the code was restructured still load and compute the same."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hope.checkpoint import load_checkpoint
from hope.models import ARCHS, ModelState

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "legacy_checkpoints"


def test_every_arch_has_a_legacy_checkpoint():
    assert sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()) == sorted(ARCHS)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_legacy_checkpoint_and_state_compute_what_they_did(arch):
    model, tokenizer, _ = load_checkpoint(FIXTURES / arch / "checkpoint")
    expected = load_file(str(FIXTURES / arch / "expected.safetensors"))
    ids = expected["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, expected["logits"], atol=1e-5, rtol=1e-5)
        state, _ = ModelState.load(FIXTURES / arch / "state_after_23.safetensors", model)
        continued = model(ids[:, 23:], state=state).logits
    torch.testing.assert_close(continued, expected["continued_logits"], atol=1e-5, rtol=1e-5)

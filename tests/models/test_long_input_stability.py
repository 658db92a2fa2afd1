"""Memories that learn in context must stay finite over inputs far longer than a chunk, before any training."""

import pytest
import torch

from hope.models import build


@pytest.mark.parametrize("arch, overrides", [
    ("hope", {}),
    ("hope", {"memory": "linear"}),
    ("hope", {"d_model": 32, "n_heads": 2, "n_layers": 2}),
    ("titans", {"d_model": 32, "n_heads": 2, "n_layers": 2}),
    ("gated-deltanet", {"d_model": 32, "n_heads": 2, "n_layers": 2}),
    ("bdh", {"d_model": 32, "n_heads": 2, "n_layers": 2}),
])
def test_random_text_keeps_the_state_finite_and_bounded(arch, overrides):
    model = build(arch, "tiny", vocab_size=257, cms_periods=(None,), **overrides) if arch == "hope" else \
        build(arch, "tiny", vocab_size=257, **overrides)
    ids = torch.randint(0, 257, (1, 1536))
    with torch.no_grad():
        out = model(ids)
    assert torch.isfinite(out.logits).all()
    for layer in out.state.layers:
        for name, tensor in layer.mixer.to_flat().items():
            if tensor.is_floating_point() and tensor.numel():
                assert tensor.abs().max() < 1e3, (name, tensor.abs().max().item())

"""benchmarks/cms_first_step.py measures the first in-context CMS step: a gradient step, so its size is
proportional to the level's learning rate, and zero for the levels that have not stepped yet."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from hope.models import build

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "cms_first_step.py"
_SPEC = importlib.util.spec_from_file_location("cms_first_step", _PATH)
probe = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(probe)


def _model():
    torch.manual_seed(0)
    return build("hope", "tiny", vocab_size=17, d_model=16, n_layers=2, n_heads=2, chunk_size=4,
                 memory_chunk_size=4, cms_periods=(4, 8)).double().eval()


def test_the_first_step_is_proportional_to_the_learning_rate_and_only_the_fastest_level_takes_it():
    model, ids = _model(), torch.randint(0, 17, (3, 7))
    base = probe.first_steps(model, ids)
    with torch.no_grad():
        for block in model.blocks:
            block.channel.log_lr += math.log(2.0)
    doubled = probe.first_steps(model, ids)
    assert [(s["layer"], s["level"], s["stepped"]) for s in base] == [(0, 0, True), (0, 1, False), (1, 0, True),
                                                                      (1, 1, False)]
    for one, two in zip(base, doubled):
        if one["stepped"]:
            assert one["gate_up"] > 0 and one["down"] > 0
            assert two["gate_up"] == pytest.approx(2 * one["gate_up"], rel=1e-9)
            assert two["down"] == pytest.approx(2 * one["down"], rel=1e-9)
            assert not one["eta_trained"] and two["eta_trained"]
        else:
            assert one["gate_up"] == one["down"] == 0.0


def test_rows_that_never_reach_the_first_period_are_refused():
    with pytest.raises(ValueError, match="never reach the first CMS step"):
        probe.first_steps(_model(), torch.randint(0, 17, (1, 4)))


def test_every_step_along_a_row_starts_with_the_first_step_and_lists_each_level_at_its_boundaries():
    model, ids = _model(), torch.randint(0, 17, (3, 17))
    along = probe.steps_along(model, ids)
    assert [(s["layer"], s["level"], s["position"]) for s in along] == [
        (layer, level, position) for position in (4, 8, 12, 16) for layer in (0, 1) for level in (0, 1)
        if position % (4, 8)[level] == 0]
    first = {(s["layer"], s["level"]): s for s in probe.first_steps(model, ids[:, :5]) if s["stepped"]}
    for step in along[:2]:
        assert step["gate_up"] == pytest.approx(first[step["layer"], step["level"]]["gate_up"], rel=1e-9)
        assert step["down"] == pytest.approx(first[step["layer"], step["level"]]["down"], rel=1e-9)
    assert all(s["gate_up"] > 0 and s["down"] > 0 for s in along)
    with torch.no_grad():
        for block in model.blocks:
            block.channel.log_lr.fill_(-math.inf)
    assert all(s["gate_up"] == s["down"] == 0.0 for s in probe.steps_along(model, ids))

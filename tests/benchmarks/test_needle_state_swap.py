"""benchmarks/needle_state_swap.py moves exactly the memories it names from one reading's state into another's."""

import dataclasses
import importlib.util
from pathlib import Path

import torch

from hope.models import build
from hope.models.hope.self_modifying_titans import SelfModifyingTitans

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "needle_state_swap.py"
_SPEC = importlib.util.spec_from_file_location("needle_state_swap", _PATH)
swap = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(swap)


def _proj_names(model):
    return next(m for m in model.modules() if isinstance(m, SelfModifyingTitans)).banks["proj"].names


def _model():
    torch.manual_seed(0)
    return build("hope", "tiny", vocab_size=17, d_model=16, n_layers=2, n_heads=2, chunk_size=4,
                 memory_chunk_size=4, cms_periods=(None, None)).double().eval()


def test_taking_every_memory_and_the_convolution_tail_reads_on_as_the_other_row():
    model = _model()
    long, short, suffix = torch.randint(0, 17, (1, 14)), torch.randint(0, 17, (1, 6)), torch.randint(0, 17, (1, 7))
    with torch.no_grad():
        _, long_state = swap.read(model, long, 4)
        _, short_state = swap.read(model, short, 4)
        names = _proj_names(model)
        moved = swap.swapped(long_state, short_state, {"proj", "mem"}, names)
        moved = dataclasses.replace(moved, layers=[m._replace(mixer=m.mixer._replace(conv=s.mixer.conv))
                                                   for m, s in zip(moved.layers, short_state.layers)])
        expected, _ = swap.read(model, suffix, 4, short_state)
        got, _ = swap.read(model, suffix, 4, moved)
        unchanged, _ = swap.read(model, suffix, 4, long_state)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(unchanged, expected)


def test_one_projection_memory_moves_only_its_heads():
    model = _model()
    with torch.no_grad():
        _, long_state = swap.read(model, torch.randint(0, 17, (1, 10)), 4)
        _, short_state = swap.read(model, torch.randint(0, 17, (1, 6)), 4)
    names = _proj_names(model)
    index, heads = names.index("v"), 2
    moved = swap.swapped(long_state, short_state, {"proj:v"}, names)
    for m, l, s in zip(moved.layers, long_state.layers, short_state.layers):
        assert m.mixer.memories["mem"] is l.mixer.memories["mem"]
        for key, weight in m.mixer.memories["proj"].weights.items():
            mine, theirs = l.mixer.memories["proj"].weights[key], s.mixer.memories["proj"].weights[key]
            inside = slice(index * heads, (index + 1) * heads)
            torch.testing.assert_close(weight[:, inside], theirs[:, inside])
            keep = torch.ones(weight.shape[1], dtype=torch.bool)
            keep[inside] = False
            torch.testing.assert_close(weight[:, keep], mine[:, keep])
            assert not torch.equal(mine[:, inside], theirs[:, inside])
        pending, before = m.mixer.memories["proj"].pending, s.mixer.memories["proj"].pending
        torch.testing.assert_close(pending.k[:, :, index * heads:(index + 1) * heads],
                                   before.k[:, :, index * heads:(index + 1) * heads])

"""The archs built on the recurrent mixers: equal parameters at every preset, config fields reach the layers."""

import pytest
import torch

from hope.errors import HopeError
from hope.models.gated_deltanet import GatedDeltaNet
from hope.models.hope.self_modifying_titans import SelfModifyingTitans
from hope.models.titans import Titans
from hope.models import LanguageModel, build, make_config

MIXER_ARCHS = ("gated-deltanet", "titans", "hope", "bdh")


@pytest.mark.parametrize("arch", MIXER_ARCHS)
def test_parameter_counts_match_the_transformer_at_every_preset(arch):
    for size in ("tiny", "small"):
        count, reference = (build(a, size, vocab_size=4096).num_parameters() for a in (arch, "transformer"))
        assert abs(count - reference) / reference < 0.02, (size, count, reference)
    with torch.device("meta"):
        for size in ("760m", "1.3b"):
            count, reference = (LanguageModel(make_config(a, size, vocab_size=32000)).num_parameters()
                                for a in (arch, "transformer"))
            assert abs(count - reference) / reference < 0.02, (size, count, reference)


def test_mixers_and_their_fields():
    assert isinstance(build("gated-deltanet", "tiny", chunk_size=32).blocks[0].mixer, GatedDeltaNet)
    titans = build("titans", "tiny", chunk_size=8, memory_expansion=3).blocks[0].mixer
    assert isinstance(titans, Titans) and titans.chunk_size == 8 and titans.w1.shape == (4, 32, 96)
    hope = build("hope", "tiny", memory="linear", chunk_size=32, memory_chunk_size=8, dgd=False, momentum=False,
                 retention=False, adaptive_q=True, adaptive_k=False, objective="l2", proximal=False,
                 test_time_learning=False).blocks[0].mixer
    assert isinstance(hope, SelfModifyingTitans)
    assert hope.chunk_sizes == {"proj": 32, "mem": 8} and hope.banks["proj"].names == ("v", "q", "eta")
    assert hope.static_names == ("k",) and hope.gate_names == ("eta",) and not hope.test_time_learning
    bank = hope.banks["mem"]
    assert (bank.kind, bank.dgd, bank.objective, bank.proximal) == ("linear", False, "l2", False)
    assert build("hope", "tiny").blocks[0].mixer.banks["mem"].curvature
    banks = build("hope", "tiny").blocks[0].mixer.banks
    assert (banks["mem"].read_mode, banks["proj"].read_mode) == ("previous", "start")
    assert build("hope", "tiny", memory_read="start").blocks[0].mixer.banks["mem"].read_mode == "start"
    assert not build("hope", "tiny", curvature=False).blocks[0].mixer.banks["proj"].curvature


@pytest.mark.parametrize("arch,field,value", [
    ("hope", "memory", "matrix"), ("hope", "objective", "l1"), ("hope", "chunk_size", 0),
    ("hope", "memory_chunk_size", -1), ("hope", "memory_read", "end"), ("hope", "step_init", 1.5), ("hope", "retention_init", (0.5, 1.0)),
    ("titans", "memory_expansion", 0), ("titans", "momentum_init", 0.0), ("titans", "memory_read", "end"),
    ("gated-deltanet", "conv_width", 0),
    ("gated-deltanet", "retention_init", (0.9, 0.8)),
])
def test_bad_fields_raise_one_clear_error(arch, field, value):
    with pytest.raises(HopeError, match=field):
        make_config(arch, "tiny", **{field: value})

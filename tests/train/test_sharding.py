"""Activation checkpointing recomputes the blocks in the backward and changes no loss or gradient (Hope
learning in context included: its CMS steps take inner gradients through checkpointed blocks); FSDP2 on a
one-rank group trains, with each mixed-precision policy."""

import pytest
import torch

from hope.models import build
from hope.runtime import Distributed
from hope.train.config import FSDP_MIXED_PRECISION
from hope.train.sharding import MIXED_PRECISION, checkpoint_blocks, shard_model

SMALL = {"vocab_size": 64, "d_model": 32, "n_layers": 2, "n_heads": 2}


def loss_and_grads(model, ids):
    model.zero_grad()
    loss = model(ids[:, :-1], targets=ids[:, 1:]).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch, extra", [("transformer", {}), ("hope", {"cms_periods": (8, 16)})])
def test_activation_checkpointing_recomputes_and_changes_nothing(arch, extra):
    torch.manual_seed(0)
    model = build(arch, "tiny", **SMALL, **extra).double()
    ids = torch.randint(0, 64, (2, 33))
    plain_loss, plain_grads = loss_and_grads(model, ids)
    calls = []
    model.blocks[0].mixer.register_forward_hook(lambda *_: calls.append(1))
    loss_and_grads(model, ids)
    forwards_without = len(calls)
    checkpoint_blocks(model)
    calls.clear()
    loss, grads = loss_and_grads(model, ids)
    assert len(calls) > forwards_without  # the backward ran the block again
    assert grads.keys() == plain_grads.keys()
    torch.testing.assert_close(loss, plain_loss, rtol=0, atol=0)
    for name in grads:
        torch.testing.assert_close(grads[name], plain_grads[name], rtol=1e-12, atol=1e-14, msg=name)


def test_every_mixed_precision_name_has_a_policy():
    assert tuple(MIXED_PRECISION) == FSDP_MIXED_PRECISION


@pytest.mark.parametrize("arch", ["transformer", "hope"])
@pytest.mark.parametrize("mixed_precision", FSDP_MIXED_PRECISION)
def test_fsdp_on_one_process_trains(mixed_precision, arch):
    """Every mixed-precision policy trains (Hope's memories are kept in float32 under bfloat16 compute)."""
    from torch.distributed.tensor import DTensor

    dist_ = Distributed(torch.device("cpu"), group=True)
    try:
        torch.manual_seed(0)
        model = shard_model(build(arch, "tiny", **SMALL), mixed_precision)
        assert all(isinstance(p, DTensor) and p.dtype == torch.float32 for p in model.parameters())
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        ids = torch.randint(0, 64, (4, 17))
        computed_in = torch.float32 if mixed_precision == "none" else torch.bfloat16
        assert model(ids).logits.dtype == computed_in
        losses = []
        for _ in range(3):
            loss = model(ids[:, :-1], targets=ids[:, 1:]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        assert losses[-1] < losses[0]
    finally:
        dist_.close()


@pytest.mark.parametrize("options, message", [
    ({"fsdp_mixed_precision": "fp8", "fsdp": True}, "fsdp_mixed_precision must be one of"),
    ({"fsdp_mixed_precision": "bf16"}, "applies to --fsdp runs only"),
    ({"fsdp": True, "cms_outer_periods": (1, 2)}, "does not work with --fsdp"),
])
def test_bad_fsdp_options_are_one_line_errors(options, message):
    from hope.errors import HopeError
    from hope.train.config import TrainConfig

    with pytest.raises(HopeError, match=message):
        TrainConfig(**options)

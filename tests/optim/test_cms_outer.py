"""CMS levels stepped by the outer optimizer every C^(l) steps (NL Eq. 71 read as docs/paper_notes.md A6 (ii))."""

import copy

import pytest
import torch

from hope.errors import HopeError
from hope.models import build
from hope.optim import CMSOuterPeriods

SMALL_HOPE = {"d_model": 16, "n_layers": 1, "n_heads": 2, "cms_periods": (4, 8), "cms_hidden": 8}


def small_hope(**overrides):
    torch.manual_seed(0)
    return build("hope", None, vocab_size=11, **{**SMALL_HOPE, **overrides}).double()


def batches(steps):
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(0, 11, (2, 13), generator=generator) for _ in range(steps)]


def loss_of(model, ids):
    return model(ids[:, :-1], targets=ids[:, 1:]).loss


def level_params(model, level):
    return [p for name, p in model.named_parameters() if f"channel.levels.{level}." in name]


def test_slow_level_steps_with_the_mean_gradient_of_its_period():
    """Per-step reference: plain SGD on every parameter except level 1, which takes one step of the mean
    of its last three gradients after steps 3 and 6 and stays frozen in between."""
    lr, data = 0.05, batches(6)
    model, reference = small_hope(), small_hope()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    levels = CMSOuterPeriods(model, (1, 3))
    slow = {id(p) for p in level_params(reference, 1)}
    assert slow and len(levels.held) == 1
    pending = {id(p): torch.zeros_like(p) for p in reference.parameters() if id(p) in slow}
    for step, ids in enumerate(data, start=1):
        optimizer.zero_grad(set_to_none=True)
        loss_of(model, ids).backward()
        levels.hold_back()
        optimizer.step()

        reference.zero_grad(set_to_none=True)
        loss_of(reference, ids).backward()
        with torch.no_grad():
            for p in reference.parameters():
                if id(p) not in slow:
                    p -= lr * p.grad
                    continue
                pending[id(p)] += p.grad
                if step % 3 == 0:
                    p -= lr * pending[id(p)] / 3
                    pending[id(p)].zero_()
        for (name, p), q in zip(model.named_parameters(), reference.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-12, msg=f"{name} after step {step}")


def test_held_back_levels_are_untouched_by_adamw_and_its_weight_decay():
    model = small_hope()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.5)
    levels = CMSOuterPeriods(model, (2, 4))
    start = [[p.detach().clone() for p in level_params(model, level)] for level in (0, 1)]
    changed = []
    for ids in batches(4):
        before = [[p.detach().clone() for p in level_params(model, level)] for level in (0, 1)]
        optimizer.zero_grad(set_to_none=True)
        loss_of(model, ids).backward()
        levels.hold_back()
        optimizer.step()
        changed.append([any(not torch.equal(a, p) for a, p in zip(before[level], level_params(model, level)))
                        for level in (0, 1)])
    assert changed == [[False, False], [True, False], [False, False], [True, True]]
    assert all(optimizer.state[p]["step"].item() == 1 for p in level_params(model, 1))
    assert all(optimizer.state[p]["step"].item() == 2 for p in level_params(model, 0))
    assert not any(torch.equal(a, p) for a, p in zip(start[1], level_params(model, 1)))


def test_state_dict_resumes_mid_period_exactly():
    data = batches(6)

    def run(model, optimizer, levels, chunk):
        for ids in chunk:
            optimizer.zero_grad(set_to_none=True)
            loss_of(model, ids).backward()
            levels.hold_back()
            optimizer.step()

    full = small_hope()
    full_optimizer = torch.optim.AdamW(full.parameters(), lr=1e-2)
    run(full, full_optimizer, CMSOuterPeriods(full, (1, 4)), data)

    first = small_hope()
    first_optimizer = torch.optim.AdamW(first.parameters(), lr=1e-2)
    first_levels = CMSOuterPeriods(first, (1, 4))
    run(first, first_optimizer, first_levels, data[:3])
    saved = copy.deepcopy((first.state_dict(), first_optimizer.state_dict(), first_levels.state_dict()))
    assert sum(s is not None for s in saved[2]["sums"]) == len(level_params(first, 1))

    resumed = small_hope()
    resumed.load_state_dict(saved[0])
    resumed_optimizer = torch.optim.AdamW(resumed.parameters(), lr=1e-2)
    resumed_optimizer.load_state_dict(saved[1])
    resumed_levels = CMSOuterPeriods(resumed, (1, 4))
    resumed_levels.load_state_dict(saved[2])
    run(resumed, resumed_optimizer, resumed_levels, data[3:])
    for p, q in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.parametrize("periods, message", [
    ((1,), "has 1 entries but the model's CMS has 2 levels"),
    ((1, 0), "positive integers"),
    ((), "positive integers"),
    ((1, 2.5), "positive integers"),
])
def test_bad_periods(periods, message):
    with pytest.raises(HopeError, match=message):
        CMSOuterPeriods(small_hope(), periods)


def test_needs_a_model_with_a_cms():
    with pytest.raises(HopeError, match="Continuum Memory System"):
        CMSOuterPeriods(build("transformer", None, vocab_size=11, d_model=16, n_layers=1, n_heads=2), (1, 2))


def test_resume_with_other_periods_is_refused():
    model = small_hope()
    levels = CMSOuterPeriods(model, (1, 2))
    with pytest.raises(HopeError, match="differ from the checkpoint"):
        CMSOuterPeriods(model, (1, 3)).load_state_dict(levels.state_dict())


def test_a_step_without_gradient_counts_as_zero():
    model = small_hope()
    levels = CMSOuterPeriods(model, (1, 2))
    loss_of(model, batches(1)[0]).backward()
    expected = [p.grad.clone() / 2 for p in level_params(model, 1)]
    levels.hold_back()
    assert all(p.grad is None for p in level_params(model, 1))
    model.zero_grad(set_to_none=True)
    levels.hold_back()
    for p, g in zip(level_params(model, 1), expected):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)
    assert levels.sums == {}

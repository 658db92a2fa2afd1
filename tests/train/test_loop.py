"""The one training loop (``hope.train.loop``): its schedule and its handling of non-finite steps."""

import math

import pytest
import torch

from hope.errors import HopeError
from hope.train.loop import Trainer, lr_schedule


def test_schedule_warms_up_then_decays_to_the_floor_or_stays_constant():
    cosine, constant = lr_schedule(4, 20, 0.1), lr_schedule(4, None, 0.1)
    assert [cosine(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0] == [constant(s) for s in range(4)]
    assert cosine(12) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert cosine(20) == cosine(100) == pytest.approx(0.1)
    assert constant(1000) == 1.0


def _trainer(max_bad_steps):
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(0, None, 0.1))
    return model, Trainer(model, optimizer, scheduler, grad_clip=1.0, max_bad_steps=max_bad_steps,
                          diverged_hint="lower --lr")


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step")
def test_non_finite_steps_are_skipped_then_abort():
    model, trainer = _trainer(max_bad_steps=2)
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.ones(1, 2)
    loss = lambda m, scale: m(x).sum() * scale
    with pytest.warns(UserWarning, match="non-finite"):
        trainer.fit(lambda step: [float("nan")], loss, until=1)
    assert trainer.step == 1 and all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    trainer.fit(lambda step: [1.0], loss, until=2)
    assert trainer.bad_steps == 0
    with pytest.raises(HopeError, match="diverged: 2 non-finite.*lower --lr"), pytest.warns(UserWarning):
        trainer.fit(lambda step: [float("inf")], loss, until=10)


def test_micro_batches_average_their_losses():
    model, trainer = _trainer(max_bad_steps=1)
    seen = []
    trainer.fit(lambda step: [1.0, 3.0], lambda m, scale: torch.tensor(scale, requires_grad=True), until=1,
                callbacks=[seen.append])
    assert seen[0].step == 1 and seen[0].loss.item() == 2.0

"""Numbers of the explore figures (hope.explore.figures) against closed forms and hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from hope.explore import figures as F


def test_backprop_surprise_is_the_output_error_and_loss_falls():
    run = F.backprop_memory(lr=0.2, steps=40)
    assert run["loss"].shape == (41,) and run["surprise"].shape == (41, 24)
    assert run["loss"][-1] < 0.5 * run["loss"][0]
    # at step 0 the surprise of input i is ||y_i - t_i|| and the loss is the mean of 0.5 ||y_i - t_i||^2
    assert torch.allclose(0.5 * run["surprise"][0].pow(2).mean(), run["loss"][0].double(), rtol=1e-6)
    assert F.backprop_memory(lr=0.0, steps=5)["loss"].unique().numel() == 1


def test_backprop_divergence_stops_early():
    assert len(F.backprop_memory(lr=200.0, steps=200)["loss"]) < 201


@pytest.mark.parametrize("period", [1, 4, 7])
def test_outer_parameter_changes_only_at_multiples_of_its_period(period):
    run = F.nested_optimisation(period, inner_lr=0.3, steps=40)
    changed = [t for t in range(1, 40) if run["theta"][t] != run["theta"][t - 1]]
    assert changed and all(t % period == 0 for t in changed)
    assert run["outer_steps"] == list(range(period, 40, period))


def test_inner_memory_restarts_from_the_outer_parameter():
    run = F.nested_optimisation(5, inner_lr=0.0, steps=20)
    assert torch.equal(run["inner"], run["theta"])  # no inner learning: the memory is the outer parameter
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, generator=gen, dtype=torch.float64)
    a = 1.0 + torch.sin(torch.arange(20, dtype=torch.float64) * (2 * math.pi / 60))
    run = F.nested_optimisation(5, inner_lr=0.3, steps=20)
    theta = run["theta"][5].item()  # restart at token 5, then one inner step
    expected = theta - 0.3 * (theta * x[5] - a[5] * x[5]) * x[5]
    assert run["inner"][5].item() == pytest.approx(expected.item(), rel=1e-12)
    # the outer step sums its period's gradients at theta = 0
    assert theta == pytest.approx(-0.05 * sum(-(a[t] * x[t]) * x[t] for t in range(5)).item(), rel=1e-12)


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 0.99])
def test_momentum_contributions_match_the_closed_form(beta):
    run = F.momentum_contributions(beta)
    ages = torch.arange(len(run["weights"]), dtype=torch.float64)
    assert torch.allclose(run["weights"], (1 - beta) * beta**ages, atol=1e-12)
    assert len(run["weights"]) > run["n99"]


@pytest.mark.parametrize("beta,n50,n99", [(0.9, 7, 44), (0.99, 69, 459), (0.5, 1, 7), (0.0, 1, 1)])
def test_momentum_thresholds(beta, n50, n99):
    run = F.momentum_contributions(beta)
    assert (run["n50"], run["n99"]) == (n50, n99)
    if beta:
        assert run["n50"] == math.ceil(math.log(0.5) / math.log(beta))
        share = run["weights"].cumsum(0)
        assert share[run["n99"] - 1] >= 0.99 - 1e-12 and (run["n99"] == 1 or share[run["n99"] - 2] < 0.99)


def test_optimiser_paths_start_together_and_sgd_is_gradient_descent():
    paths = F.optimiser_paths(0.9, steps=3)
    assert set(paths) == {"SGD", "momentum 0.9", "Adam (0.9, 0.999)"}
    start = torch.tensor(F.START, dtype=torch.float64)
    w = start.clone().requires_grad_()
    F.landscape(w).backward()
    for run in paths.values():
        assert torch.equal(run["points"][0], start)
    assert torch.allclose(paths["SGD"]["points"][1], start - 0.004 * w.grad)
    assert torch.allclose(paths["momentum 0.9"]["points"][1], start - 0.004 * w.grad)
    assert F.landscape(torch.zeros(2)) == 0


def test_continuum_levels_step_at_their_periods_and_slow_levels_retain():
    one = F.continuum_memory(1, forgetting=0.0, n_tasks=2, task_steps=10)
    # a single level without forgetting never touches task 0's subspace while learning task 1
    assert torch.allclose(one["loss"][10:, 0], one["loss"][9, 0].expand(10))
    three = F.continuum_memory(3, forgetting=0.05)
    assert three["periods"] == [1, 4, 16]
    norms = three["norms"]
    for level, period in enumerate(three["periods"]):
        changed = [t for t in range(1, len(norms)) if norms[t, level] != norms[t - 1, level]]
        assert all((t + 1) % period == 0 for t in changed)
    single = F.continuum_memory(1, forgetting=0.05)
    assert (three["loss"][-1, :-1] < single["loss"][-1, :-1]).all()  # old tasks: less forgotten with levels


def test_hebbian_and_delta_recall_by_hand():
    keys = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    values = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    hebb = F.linear_recall(keys, values, 0.5, "gd")
    delta = F.linear_recall(keys, values, 1.0, "dgd")
    assert hebb[0].item() == pytest.approx(0.25)  # S = 0.5 v1 k1^T reads 0.5 v1
    s = 0.5 * torch.outer(values[0], keys[0]) + 0.5 * torch.outer(values[1], keys[1])
    assert hebb[1].item() == pytest.approx(F.recall_error(keys @ s.T, values))
    assert delta[0].item() == pytest.approx(0.0, abs=1e-12)  # delta rule with eta = 1 writes exactly
    s = torch.outer(values[0], keys[0])
    s = s @ (torch.eye(2, dtype=torch.float64) - torch.outer(keys[1], keys[1])) + torch.outer(values[1], keys[1])
    assert delta[1].item() == pytest.approx(F.recall_error(keys @ s.T, values))


def test_update_rules_delta_beats_hebbian_under_capacity():
    runs = F.update_rules(dim=32, lr=1.0, n_pairs=16)
    names = list(runs)
    assert all(len(r) == 16 for r in runs.values())
    assert runs[names[1]][-1] < runs[names[0]][-1]
    assert runs[names[2]][-1] < runs[names[2]][0] + 1.0  # the deep memory learns (finite, bounded)


def test_needle_levels():
    one = F.needle_retrieval(1, 1, trials=32)
    assert one["periods"] == [1] and one["accuracy"][0] > 0.9 and one["accuracy"][-1] < 0.3
    many = F.needle_retrieval(3, 64, trials=32)
    assert many["periods"] == [1, 8, 64]
    assert many["level_accuracy"][64][-1] > one["accuracy"][-1]  # the slow level still holds the needle
    assert many["level_accuracy"][64][0] == 0  # before its first boundary the slow level has read nothing

"""build_optimizer on the real LM: param groups, scheduler scaling, errors; for every optimizer,
seeded runs are bitwise identical and a checkpoint (hope.checkpoint's safetensors + JSON path)
resumes exactly where the uninterrupted run goes."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from hope.checkpoint import flatten, unflatten
from hope.errors import HopeError
from hope.models import ARCHS, build
from hope.optim import OPTIMIZERS, build_optimizer

VOCAB = 64
EXTRA = {"m3": {"slow_period": 2}, "m3-ema": {"slow_period": 2}, "dgd": {}, "muon": {}}


def _model(seed=0, **overrides):
    torch.manual_seed(seed)
    return build("transformer", "tiny", vocab_size=VOCAB, d_model=32, n_heads=2, n_layers=2, **overrides)


def _batch(step):
    g = torch.Generator().manual_seed(step)
    return torch.randint(0, VOCAB, (2, 12), generator=g)


def _train(model, optimizer, scheduler, steps):
    for step in steps:
        x = _batch(step)
        model(x, targets=x).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()


def _setup(name, model):
    optimizer = build_optimizer(name, model, lr=2e-3, weight_decay=0.1, **EXTRA.get(name, {}))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
    return optimizer, scheduler


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_seeded_runs_are_bitwise_identical(name):
    runs = []
    for _ in range(2):
        model = _model()
        _train(model, *_setup(name, model), range(3))
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not torch.equal(runs[0]["blocks.0.mixer.qkv.weight"], _model().state_dict()["blocks.0.mixer.qkv.weight"])


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_checkpoint_resume_continues_identically(name, tmp_path):
    model = _model()
    optimizer, scheduler = _setup(name, model)
    _train(model, optimizer, scheduler, range(3))
    skeleton, tensors = flatten({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
    save_file(tensors, str(tmp_path / "trainer.safetensors"))
    (tmp_path / "trainer.json").write_text(json.dumps(skeleton))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, optimizer, scheduler, range(3, 6))

    resumed = _model(seed=123)
    resumed.load_state_dict(weights)
    optimizer2, scheduler2 = _setup(name, resumed)
    state = unflatten(json.loads((tmp_path / "trainer.json").read_text()), load_file(str(tmp_path / "trainer.safetensors")))
    optimizer2.load_state_dict(state["optimizer"])
    scheduler2.load_state_dict(state["scheduler"])
    _train(resumed, optimizer2, scheduler2, range(3, 6))
    for k, v in model.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def _names(model, params):
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_param_groups():
    model = _model(tie_embeddings=False)
    adamw = build_optimizer("adamw", model, lr=1e-3, weight_decay=0.1)
    groups = {g["name"]: g for g in adamw.param_groups}
    assert _names(model, groups["no_decay"]["params"]) == {
        n for n, p in model.named_parameters() if p.ndim == 1 or n == "embed.weight"}
    assert groups["no_decay"]["weight_decay"] == 0.0 and groups["matrices"]["weight_decay"] == 0.1
    assert "head.weight" in _names(model, groups["matrices"]["params"])
    for name in ("muon", "m3", "m3-ema"):
        opt = build_optimizer(name, model, lr=1e-3)
        groups = {g["name"]: g for g in opt.param_groups}
        assert _names(model, groups["hidden_matrices"]["params"]) == {
            n for n, p in model.named_parameters() if p.ndim == 2 and n not in ("embed.weight", "head.weight")}
        assert groups["hidden_matrices"]["orthogonal"]
        assert _names(model, groups["adamw_matrices"]["params"]) == {"head.weight"}
        assert not groups["adamw_matrices"]["orthogonal"] and not groups["adamw_no_decay"]["orthogonal"]
        assert "embed.weight" in _names(model, groups["adamw_no_decay"]["params"])
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_tied_head_is_an_embedding():
    model = _model()
    opt = build_optimizer("muon", model, lr=1e-3)
    assert [g["name"] for g in opt.param_groups] == ["hidden_matrices", "adamw_no_decay"]


@pytest.mark.parametrize("name", ["muon", "m3", "m3-ema"])
def test_scheduler_scales_every_group(name):
    model = _model()
    opt = build_optimizer(name, model, lr=1e-3, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 ** s)
    deltas = []
    x = _batch(0)
    for _ in range(2):
        before = model.blocks[0].mixer.qkv.weight.detach().clone()
        model(x, targets=x).loss.backward()
        opt.step()
        opt.zero_grad()
        deltas.append((model.blocks[0].mixer.qkv.weight.detach() - before).pow(2).mean().sqrt())
        scheduler.step()
    assert all(g["lr"] == pytest.approx(0.25e-3) for g in opt.param_groups)
    if name == "m3-ema":  # update_rms fixes each matrix update's RMS at 0.2 * lr
        torch.testing.assert_close(deltas[1] / deltas[0], torch.tensor(0.5), rtol=1e-5, atol=0)


def test_every_arch_takes_a_step_with_every_optimizer():
    """Each optimizer from the same initialisation (M3 as printed divides by sqrt(V) = |g| elementwise, so its
    first step can grow weights whose gradients are tiny by orders of magnitude: docs/optimizers.md)."""
    for arch in ARCHS:
        x = _batch(0)
        for name in OPTIMIZERS:
            torch.manual_seed(0)
            model = build(arch, "tiny", vocab_size=VOCAB, d_model=32, n_heads=2, n_layers=1)
            before = [p.detach().clone() for p in model.parameters()]
            opt = build_optimizer(name, model, lr=1e-3)
            model(x, targets=x).loss.backward()
            opt.step()
            opt.zero_grad()
            assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters())), (arch, name)
            assert all(torch.isfinite(p).all() for p in model.parameters()), (arch, name)
            if name == "dgd":
                opt.remove_hooks()


def test_errors():
    model = _model()
    with pytest.raises(HopeError, match="unknown optimizer 'sgd'; expected one of adamw, muon"):
        build_optimizer("sgd", model, lr=1e-3)
    with pytest.raises(HopeError, match="has no option"):
        build_optimizer("m3", model, lr=1e-3, slow_perod=5)
    with pytest.raises(HopeError, match="slow_period"):
        build_optimizer("m3", model, lr=1e-3, slow_period=0)

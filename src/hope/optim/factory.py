"""``build_optimizer``: the optimizer of ``hope train --optimizer NAME``, with sensible param groups.

Weight decay applies to matrices (hidden weights and an untied output head, and tensors of higher
rank), never to embeddings, norm gains, biases or other vectors. Muon and M3 orthogonalise only the
2-D hidden weights; embeddings, the output head and non-matrix tensors get AdamW inside the same
optimizer. Every group has its own ``lr``, so ``torch.optim.lr_scheduler`` scales each from its own base.

``m3`` is NL Algorithm 1 as printed (the :class:`M3` defaults: summed accumulators, no rescaling); ``m3-ema`` is
the tuned variant (EMA accumulators, each matrix update rescaled to RMS 0.2). Muon and ``m3-ema`` use update scales
matched to AdamW's (Muon's ``adjust_lr="match_rms_adamw"``, ``update_rms=0.2``), so AdamW's learning rate carries
over; ``m3``'s update is an orthogonal matrix divided by gradient magnitudes, whose scale no fixed lr matches.
DGD, delta momentum and deep momentum are SGD-like: their ``lr`` is not AdamW's (docs/optimizers.md).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from hope.errors import HopeError
from hope.optim.deep_momentum import DeepMomentum
from hope.optim.delta_momentum import DeltaMomentum
from hope.optim.dgd import DGD
from hope.optim.m3 import M3
from hope.optim.muon import Muon
from hope.optim.params import classify_parameters

OPTIMIZERS = ("adamw", "muon", "m3", "m3-ema", "dgd", "delta_momentum", "deep_momentum")

M3_VARIANTS: dict[str, dict[str, Any]] = {"m3": {}, "m3-ema": {"accumulate": "ema", "update_rms": 0.2}}
"""Options each M3 name gives :class:`M3` on top of its defaults: none for Algorithm 1 as printed."""


def _groups(specs: list[tuple[str, list[nn.Parameter], dict[str, Any]]]) -> list[dict[str, Any]]:
    return [{"params": params, "name": name, **options} for name, params, options in specs if params]


def build_optimizer(name: str, model: nn.Module, *, lr: float, weight_decay: float = 0.1,
                    betas: tuple[float, float] = (0.9, 0.95), **kwargs: Any) -> torch.optim.Optimizer:
    """The optimizer ``name`` (one of ``OPTIMIZERS``) over ``model``'s trainable parameters.

    ``betas`` are AdamW's (also those of Muon's and M3's AdamW groups); ``kwargs`` go to the
    optimizer's constructor (e.g. ``slow_period=50`` for M3). Raises ``HopeError`` for an unknown
    name or option.
    """
    if name not in OPTIMIZERS:
        raise HopeError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")
    kinds = classify_parameters(model)
    no_decay = kinds.embeddings + kinds.vectors
    decay = {"weight_decay": weight_decay}
    if name == "muon" or name in M3_VARIANTS:
        groups = _groups([
            ("hidden_matrices", kinds.hidden_matrices, {**decay, "orthogonal": True}),
            ("adamw_matrices", kinds.heads + kinds.other_tensors, {**decay, "orthogonal": False}),
            ("adamw_no_decay", no_decay, {"weight_decay": 0.0, "orthogonal": False}),
        ])
        options = dict({"adjust_lr": "match_rms_adamw"} if name == "muon" else M3_VARIANTS[name])
        options.update(adamw_betas=tuple(betas), **kwargs)
        cls = Muon if name == "muon" else M3
    else:
        groups = _groups([
            ("matrices", kinds.hidden_matrices + kinds.heads + kinds.other_tensors, decay),
            ("no_decay", no_decay, {"weight_decay": 0.0}),
        ])
        cls, options = {
            "adamw": (torch.optim.AdamW, {"betas": tuple(betas), **kwargs}),
            "dgd": (DGD, {"model": model, **kwargs}),
            "delta_momentum": (DeltaMomentum, kwargs),
            "deep_momentum": (DeepMomentum, kwargs),
        }[name]
    if not groups:
        raise HopeError(f"model has no trainable parameters for optimizer {name!r}")
    accepted = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise HopeError(f"optimizer {name!r} has no option(s) {', '.join(unknown)}")
    try:
        return cls(groups, lr=lr, **options)
    except ValueError as err:
        raise HopeError(f"optimizer {name!r}: {err}") from None

"""Optimizers as associative memories of gradients (NL Secs. 4 and 7.2).

- ``DGD``: delta gradient descent (NL Eq. 57), the update rule of Hope's inner memories.
- ``DeltaMomentum`` (NL Eq. 49) and ``DeepMomentum`` (DMGD, NL Eq. 50): richer momentum memories.
- ``Muon`` (NL Eq. 42) and ``M3`` (NL Algorithm 1): orthogonalised momenta, with AdamW for
  non-matrix parameters in the same optimizer.
- ``CMSOuterPeriods``: CMS levels stepped by the outer optimizer every ``C^(l)`` steps (NL Eq. 71,
  docs/paper_notes.md A6 (ii); ``--cms-outer-periods``).
- ``build_optimizer``: the optimizer of ``hope train --optimizer NAME`` with sensible param groups.
- ``hope.optim.memory``: the paper's equivalences (momentum, Adam, linear attention, delta rule,
  Newton-Schulz) as pairs of functions that compute one update two ways.
"""

from hope.optim.cms_outer import CMSOuterPeriods
from hope.optim.deep_momentum import DeepMomentum
from hope.optim.delta_momentum import DeltaMomentum
from hope.optim.dgd import DGD
from hope.optim.factory import OPTIMIZERS, build_optimizer
from hope.optim.m3 import M3
from hope.optim.muon import Muon

__all__ = ["CMSOuterPeriods", "DGD", "M3", "OPTIMIZERS", "DeepMomentum", "DeltaMomentum", "Muon", "build_optimizer"]

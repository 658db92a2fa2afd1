"""FSDP2 and activation checkpointing for ``hope train`` (``--fsdp``, ``--activation-checkpointing``;
docs/training.md, FSDP2).

- ``shard_model``: ``torch.distributed.fsdp.fully_shard`` on every block, then on the root, so that one
  block's parameters are gathered at a time (the root alone for Hope learning in context); an optional
  ``MixedPrecisionPolicy``.
- ``checkpoint_blocks``: each block's forward under ``torch.utils.checkpoint`` (non-reentrant), its
  activations recomputed in the backward; applied before ``shard_model`` so the recomputation sees the
  gathered parameters.
"""

from __future__ import annotations

import functools

import torch
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.utils.checkpoint import checkpoint

from hope.models import LanguageModel

MIXED_PRECISION: dict[str, MixedPrecisionPolicy] = {
    "none": MixedPrecisionPolicy(),
    "bf16": MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32),
    "bf16-reduce": MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.bfloat16),
}
"""``--fsdp-mixed-precision``: float32 throughout; bf16 parameters in the forward and backward with float32
gradient reductions; bf16 for both. The sharded parameters and the optimizer state stay float32."""


def shard_model(model: LanguageModel, mixed_precision: str = "none") -> LanguageModel:
    """Shard ``model`` in place over every process of the default group (FSDP2): each block, then the root
    (embedding, final norm, head). A model whose CMS learns in context is one unit (the root alone): its
    in-context steps (``hope.models.hope.in_context``) read the CMS weights between block calls, where a
    per-block unit would hold only its shard (docs/training.md, FSDP2)."""
    policy = MIXED_PRECISION[mixed_precision]
    if not model.cms_periods:
        for block in model.blocks:
            fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def checkpoint_blocks(model: LanguageModel) -> LanguageModel:
    """Recompute each block's activations in the backward instead of keeping them (in place; the state
    dict's keys are unchanged)."""
    for block in model.blocks:
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)
    return model

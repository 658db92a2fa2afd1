"""What each parameter of a model is (hidden matrix, embedding, output head, gain or bias), and the
checks that every optimizer of ``hope.optim`` shares."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from hope.errors import HopeError

HEAD_NAMES = ("head", "lm_head")
"""Module names (last component) of output layers: their weights are not 'hidden' matrices."""


@dataclass
class ParameterKinds:
    """A model's trainable parameters, each in exactly one list."""

    hidden_matrices: list[nn.Parameter] = field(default_factory=list)
    """2-D weights inside the network (attention and MLP projections, memory initial states)."""
    heads: list[nn.Parameter] = field(default_factory=list)
    """Weights of an untied output layer (``head``, ``lm_head``)."""
    embeddings: list[nn.Parameter] = field(default_factory=list)
    """``nn.Embedding`` weights (a tied output head counts as an embedding)."""
    other_tensors: list[nn.Parameter] = field(default_factory=list)
    """Tensors of 3 or more dims, e.g. convolution kernels."""
    vectors: list[nn.Parameter] = field(default_factory=list)
    """0-D and 1-D tensors: norm gains, biases, scalars."""


def classify_parameters(model: nn.Module) -> ParameterKinds:
    """Sort the trainable parameters of ``model`` by kind (each shared parameter once)."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    head_ids = {id(p) for name, m in model.named_modules() if name.split(".")[-1] in HEAD_NAMES
                for p in m.parameters(recurse=False) if p.ndim >= 2}
    kinds = ParameterKinds()
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in embedding_ids:
            kinds.embeddings.append(p)
        elif id(p) in head_ids:
            kinds.heads.append(p)
        elif p.ndim <= 1:
            kinds.vectors.append(p)
        elif p.ndim == 2:
            kinds.hidden_matrices.append(p)
        else:
            kinds.other_tensors.append(p)
    return kinds


def reject_dtensor(params: Iterable[torch.Tensor], optimizer: str) -> None:
    """Raise ``HopeError`` for FSDP2 (DTensor) parameters, whose shards this optimizer cannot update."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:
        return
    if any(isinstance(p, DTensor) for p in params):
        raise HopeError(f"{optimizer} cannot update FSDP2-sharded (DTensor) parameters; train with DDP (no --fsdp) "
                        f"or use --optimizer adamw, muon, m3 or m3-ema")


def _is_dtensor(tensor: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def gathered(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP2 (DTensor) shard (a collective: every rank calls it); other tensors as they are."""
    return tensor.full_tensor() if _is_dtensor(tensor) else tensor


def sharded_like(whole: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``whole`` (the same on every rank) sharded as the DTensor ``like`` is, each rank keeping its own rows
    (no communication); ``whole`` itself when ``like`` is a plain tensor."""
    if not _is_dtensor(like):
        return whole
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(whole, like.device_mesh, like.placements, src_data_rank=None)


def as_matrix(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` viewed as a matrix ``[shape[0], rest]`` (a vector becomes one row)."""
    if tensor.ndim <= 1:
        return tensor.reshape(1, -1)
    return tensor.reshape(tensor.shape[0], -1)

"""The base of every model config, size presets, the registry behind ``build`` and the reading of saved configs.

A block is **mixer + channel memory** (pre-norm residual, ``hope.models.lm``). Each architecture's module
(``hope.models.transformer``, ``gated_deltanet``, ``titans``, ``hope``) defines its config class next to its
mixer, registers it here and says which mixer and channel memory its blocks use; everything else (embedding,
norms, head) is shared.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from hope.errors import HopeError

ARCHS: dict[str, type["ModelConfig"]] = {}

SIZES: dict[str, dict[str, int]] = {
    "tiny": {"d_model": 128, "n_layers": 4, "n_heads": 4},
    "small": {"d_model": 384, "n_layers": 6, "n_heads": 6},
    "760m": {"d_model": 1536, "n_layers": 25, "n_heads": 12},
    "1.3b": {"d_model": 2048, "n_layers": 24, "n_heads": 16},
}
"""Presets of the Transformer++ shape. ``760m`` and ``1.3b`` are the paper's sizes (NL Sec. 9.3):
with its 32K vocabulary their parameter counts are within 5% of the name (``tests/models``)."""


def register(name: str):
    """Class decorator that makes a config class available as ``build(arch=name)``."""

    def wrap(cls: type["ModelConfig"]) -> type["ModelConfig"]:
        cls.arch = name
        ARCHS[name] = cls
        return cls

    return wrap


@dataclass
class ModelConfig:
    """Fields shared by every architecture. Subclasses add their mixer's fields."""

    arch: ClassVar[str] = ""
    vocab_size: int = 4096
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    mlp_hidden: int = 0
    """Hidden width of the SwiGLU channel memory; 0 means 8/3 * d_model rounded up to a multiple of 64."""
    norm_eps: float = 1e-6
    tie_embeddings: bool = True
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads"):
            if getattr(self, name) < 1:
                raise HopeError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise HopeError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.mlp_hidden < 0:
            raise HopeError(f"mlp_hidden must be >= 0, got {self.mlp_hidden}")
        if self.mlp_hidden == 0:
            self.mlp_hidden = -(-8 * self.d_model // 3 // 64) * 64

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def build_mixer(self, layer: int) -> nn.Module:
        """The mixer of block ``layer``."""
        raise NotImplementedError

    def build_channel(self, layer: int) -> nn.Module:
        """The channel memory of block ``layer``."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, **dataclasses.asdict(self)}


def check_memory_read(config: ModelConfig, reads: tuple[str, ...]) -> None:
    """``memory_read`` of the deep-memory mixers: one of ``reads`` (``hope.ops.mlp_memory.READS`` or
    ``TITANS_READS``, the modes of the op the mixer runs on)."""
    if config.memory_read not in reads:
        raise HopeError(f"memory_read must be {' or '.join(map(repr, reads))}, got {config.memory_read!r}")


def check_memory_fields(config: ModelConfig, positive: tuple[str, ...], gates: tuple[str, ...]) -> None:
    """Shared checks of the recurrent mixers' fields: positive integers, gate values in (0, 1), and
    ``retention_init`` as ``(low, high)`` with ``0 < low <= high < 1``."""
    for name in positive:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HopeError(f"{name} must be a positive integer, got {value!r}")
    for name in gates:
        if not 0 < getattr(config, name) < 1:
            raise HopeError(f"{name} must be in (0, 1), got {getattr(config, name)}")
    config.retention_init = tuple(config.retention_init)
    if len(config.retention_init) != 2 or not 0 < config.retention_init[0] <= config.retention_init[1] < 1:
        raise HopeError(f"retention_init must be (low, high) with 0 < low <= high < 1, got {config.retention_init}")


def make_config(arch: str, size: str | None = None, **overrides: Any) -> ModelConfig:
    """The config of ``arch`` at preset ``size`` (``None``: the class defaults), with ``overrides``."""
    if arch not in ARCHS:
        raise HopeError(f"unknown arch {arch!r}; expected one of {', '.join(sorted(ARCHS))}")
    cls = ARCHS[arch]
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise HopeError(f"unknown config field(s) for arch {arch!r}: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    if size is not None:
        if size not in SIZES:
            raise HopeError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
        values.update(size_preset(cls, size))
    hints = typing.get_type_hints(cls)
    for name, value in overrides.items():
        if not _matches(value, hints[name]):
            raise HopeError(f"{name} must be {_describe(hints[name])}, got {value!r}")
    values.update(overrides)
    try:
        return cls(**values)
    except TypeError as err:
        raise HopeError(f"bad config for arch {arch!r}: {err}") from None


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}


def _matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits the field type ``hint`` (a float field takes an integer; a tuple field a list)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_matches(value, part) for part in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return isinstance(value, (tuple, list))
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return not isinstance(hint, type) or isinstance(value, hint)


def _describe(hint: Any) -> str:
    """``int | None`` -> ``"an integer or null"``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(part) for part in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return "a list"
    return _KINDS.get(hint, getattr(hint, "__name__", str(hint)))


def size_preset(cls: type[ModelConfig], size: str) -> dict[str, Any]:
    """A size preset for ``cls``: the shared shape, refined by the class's own ``SIZE_OVERRIDES``."""
    return {**SIZES[size], **getattr(cls, "SIZE_OVERRIDES", {}).get(size, {})}


LEGACY_VALUES: dict[str, dict[str, Any]] = {
    "hope": {"curvature": False, "memory_read": "start", "memory_input": "head", "memory_max_norm": None,
             "cms_grad_window": None},
    "hope-attention": {"cms_grad_window": None},
    "titans": {"max_grad_norm": None, "memory_read": "start"},
}
"""Per arch, fields added after checkpoints were first saved whose default changes what the model computes, with
the value that computes what the model did before the field existed. A saved config without such a field gets
this value, not the new default, so an old checkpoint keeps the function it was trained with."""


def config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Rebuild a config saved with ``to_dict`` (as in a checkpoint's ``config.json``); fields it predates take
    their ``LEGACY_VALUES``."""
    data = dict(data)
    arch = data.pop("arch", None)
    if arch is None:
        raise HopeError("model config has no 'arch' field")
    return make_config(arch, None, **{**LEGACY_VALUES.get(arch, {}), **data})
